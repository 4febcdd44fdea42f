"""Prometheus metrics in the text exposition format (version 0.0.4), with the standard library only.

The edge node serves its own on ``/metrics`` (node.yaml ``metrics: {port: 9464}``); the hub renders its
families with the same :func:`render`. No client library: a node must stay small, and the format is plain
text: ``# HELP``, ``# TYPE`` and ``name{label="value"} number`` lines.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CONTENT_TYPE", "ConnectorFamilies", "Family", "MetricsServer", "node_families", "render"]

log = logging.getLogger("edgeloop.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Family:
    """One metric: ``samples`` are ``(labels, value)``; a counter's name ends in ``_total``."""

    name: str
    kind: str  # counter | gauge | untyped
    help: str
    samples: list[tuple[Mapping[str, Any], float]] = field(default_factory=list)

    def add(self, value: Any, **labels: Any) -> Family:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)):
            self.samples.append((labels, float(value)))
        return self


def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def render(families: Iterable[Family]) -> str:
    out: list[str] = []
    for f in families:
        out.append(f"# HELP {f.name} {f.help}")
        out.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            suffix = labels.get("__suffix__", "")  # a histogram's _bucket, _sum and _count
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items() if k != "__suffix__")
            name = f.name + suffix
            out.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")
    return "\n".join(out) + "\n"


@dataclass
class ConnectorFamilies:
    """The families every connector adds to (labelled by connector and source: a device, an endpoint, a queue)."""

    accepted: Family = field(default_factory=lambda: Family(
        "edgeloop_node_connector_accepted_total", "counter", "Readings a connector put on the bus, by source."))
    errors: Family = field(default_factory=lambda: Family(
        "edgeloop_node_connector_errors_total", "counter",
        "Connector errors (refusals, unreachable devices, failed polls), by source."))
    connected: Family = field(default_factory=lambda: Family(
        "edgeloop_node_connector_connected", "gauge", "1 while a source is connected (observed, subscribed)."))


def _connector_families(stats: Mapping[str, Any], node: str) -> list[Family]:
    """Each connector's families from its entry in the node's stats (its own ones first, then the shared)."""
    from .connectors.registry import connector_classes

    shared = ConnectorFamilies()
    own: list[Family] = []
    for cls in connector_classes(plugins=False):
        if cls.name in stats:
            own += cls.metric_families(stats[cls.name], node, shared)
    return [*own, shared.accepted, shared.errors, shared.connected]


def node_families(stats: Mapping[str, Any], heartbeat: Mapping[str, Any] | None = None) -> list[Family]:
    """A node's metrics from :meth:`edge_runtime.node.EdgeNode.stats` (and its heartbeat document, which
    adds the outbox, models and video sources when the node has a hub)."""
    node = stats.get("node", "")
    fams = [
        Family("edgeloop_node_uptime_seconds", "gauge", "Seconds since the node started.").add(stats.get("uptime"), node=node),
        Family("edgeloop_node_records_total", "counter", "Records into the Device Bus.").add(stats.get("records"), node=node),
        Family("edgeloop_node_alerts_total", "counter", "Alerts raised.").add(stats.get("alerts"), node=node),
        Family("edgeloop_node_notifications_total", "counter", "Notifications sent.").add(stats.get("notifications"), node=node),
        Family("edgeloop_node_actions_total", "counter", "Device actions done.").add(stats.get("actions"), node=node),
        Family("edgeloop_node_outputs_total", "counter", "Pipeline outputs published.").add(stats.get("outputs"), node=node),
        Family("edgeloop_node_outputs_dropped_total", "counter",
               "Pipeline outputs the MQTT client could not queue (the broker away too long).").add(
            stats.get("outputs_dropped"), node=node),
    ]
    dead = Family("edgeloop_node_dead_letters_total", "counter", "Dead letters, by kind.")
    for kind, n in (stats.get("dead_letters", {}).get("by_kind") or {}).items():
        dead.add(n, node=node, kind=kind)
    fams.append(dead)
    fams += _connector_families(stats, node)
    queue = Family("edgeloop_node_queue_depth", "gauge", "Records waiting per pipeline instance.")
    for inst, depth in (stats.get("queues") or {}).items():
        queue.add(depth, node=node, instance=inst)
    fams.append(queue)
    proc = Family("edgeloop_pipeline_processed_total", "counter", "Records a pipeline instance took in.")
    steps = Family("edgeloop_pipeline_step_records_total", "counter",
                   "Records per pipeline step: in, out, dead (dead letters) and errors.")
    for p in stats.get("pipelines") or []:
        inst = p.get("instance", "")
        proc.add(p.get("processed"), node=node, instance=inst)
        for st in p.get("steps") or []:
            for direction in ("in", "out", "dead", "errors"):
                steps.add(st.get(direction), node=node, instance=inst, step=st.get("step", ""), op=st.get("op", ""),
                          direction=direction)
    fams += [proc, steps]
    if heartbeat:
        ob = heartbeat.get("outbox") or {}
        fams += [
            Family("edgeloop_node_outbox_rows", "gauge", "Items waiting in the outbox for the hub.").add(ob.get("rows"), node=node),
            Family("edgeloop_node_outbox_bytes", "gauge", "Bytes waiting in the outbox.").add(ob.get("bytes"), node=node),
            Family("edgeloop_node_uplink_delivered_total", "counter", "Items the hub acknowledged.").add(ob.get("delivered"), node=node),
            Family("edgeloop_node_uplink_dropped_total", "counter", "Items the outbox dropped (full or expired).").add(ob.get("dropped_total"), node=node),
            Family("edgeloop_node_uplink_connected", "gauge", "1 while the uplink is connected.").add(ob.get("connected"), node=node),
        ]
        frames = Family("edgeloop_node_video_frames_total", "counter", "Frames read per video source.")
        for src, v in (heartbeat.get("video") or {}).items():
            frames.add(v.get("frames"), node=node, source=src)
        fams.append(frames)
        model = Family("edgeloop_node_model_info", "gauge", "1 per model version the node serves.")
        for name, m in ((heartbeat.get("models") or {}).get("models") or {}).items():
            if m.get("active"):
                model.add(1, node=node, model=name, version=m["active"])
        fams.append(model)
    return fams


class MetricsServer:
    """``GET /metrics`` (Prometheus text) and ``GET /health`` on a small threaded HTTP server.

    ``token``: when set, ``/metrics`` needs ``Authorization: Bearer <token>`` (Prometheus'
    ``authorization`` scrape setting); ``/health`` never does.
    """

    def __init__(self, collect: Callable[[], str], host: str = "127.0.0.1", port: int = 9464,
                 token: str | None = None) -> None:
        self.collect, self.token = collect, token
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # a response's headers and body must not wait on the client's delayed ACK
            timeout = 10  # an idle keep-alive connection does not hold a thread for ever

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/health":
                    return self._send(200, b'{"status": "ok"}\n', "application/json")
                if path != "/metrics":
                    return self._send(404, b"not found: GET /metrics or /health\n", "text/plain")
                if outer.token:
                    got = self.headers.get("Authorization", "")
                    if not hmac.compare_digest(got.encode(), f"Bearer {outer.token}".encode()):
                        return self._send(401, b"missing or wrong token: send Authorization: Bearer <token>\n",
                                          "text/plain")
                try:
                    body = outer.collect().encode()
                except Exception:  # a broken collector is a 500 (the reason is in the node's log), not a dead server
                    log.exception("collecting metrics failed")
                    return self._send(500, b"collecting metrics failed: see the node's log\n", "text/plain")
                self._send(200, body, CONTENT_TYPE)

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
