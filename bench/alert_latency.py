"""Alert latency, camera to cloud: from a frame's decode time on the node to the alert stored at the hub.

    .venv/bin/python -m bench.alert_latency [--cameras 2] [--frames 300] [--artifacts DIR]

SYNTHETIC street-camera videos (apps.sewage_dumping.generate) played as live cameras (paced at 10 fps,
timestamps are wall-clock decode times) into an in-process node running the app's pipeline with
no ``until_quiet`` (an alert for every dumping frame, to get enough samples; the app itself raises one
per act), the node's durable uplink (SQLite outbox -> MQTT QoS 1 -> ``edgeloop hub serve`` ingest ->
SQLite) and a real Mosquitto, all on loopback. Latency = the hub's ``received_at`` (when its ingest
stored the alert) minus the frame's timestamp: decode -> pipeline -> JPEG -> outbox -> broker -> hub
commit. The JPEG itself follows over HTTP (not in this figure). Target: p99 <= 100 ms.
``legs`` splits it further (outbox put, uplink publish, broker delivery and the hub's ack as seen by a
passive subscriber): how the 40 ms Nagle/delayed-ACK stalls were found.
Writes bench/results/alert_latency.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from bench.common import write_results
from bench.model_apply import artifacts_root, build_artifacts
from bench.pipeline_inproc import loadavg
from bench.sewage import PARAMS, make_store
from edge_runtime.testing import wait_for
from edgeloop.devkit.broker import Mosquitto
from tests.kit.hub import HubProcess, all_uploads

TARGET_P99_MS = 100.0


class UplinkTrace:
    """Stamps each alert on its way: outbox put done, uplink publish, broker delivery to a passive
    subscriber, the hub's ack seen by that subscriber (all wall clock on this machine)."""

    def __init__(self, node: Any, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.put: dict[tuple[str, float], float] = {}
        self.published: dict[tuple[str, float], float] = {}
        self.delivered: dict[tuple[str, float], float] = {}
        self.batch_of: dict[tuple[str, float], tuple[int, int]] = {}
        self.acked: dict[tuple[int, int], float] = {}
        outbox_put, link_publish = node.outbox.put, node.uplink_link.publish

        def put(items: Any, **kw: Any) -> Any:
            out = outbox_put(items, **kw)
            now = time.time()
            for it in items:
                if it.get("kind") == "alert":
                    self.put[(it["device"], it["ts"])] = now
            return out

        def publish(topic: str, payload: bytes, *a: Any, **kw: Any) -> Any:
            now = time.time()
            if topic.endswith("/uplink"):
                for key in self._alerts(payload):
                    self.published.setdefault(key, now)
            return link_publish(topic, payload, *a, **kw)

        node.outbox.put, node.uplink_link.publish = put, publish
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"latency-trace-{port}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("edgeloop/+/uplink", 1), ("edgeloop/+/uplink/ack", 1)])
        self.client.loop_start()

    @staticmethod
    def _alerts(payload: bytes) -> list[tuple[str, float]]:
        import orjson

        return [(it["device"], it["ts"]) for it in orjson.loads(payload)["items"] if it.get("kind") == "alert"]

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        import orjson

        now = time.time()
        if msg.topic.endswith("/ack"):
            ack = orjson.loads(msg.payload)
            self.acked.setdefault((ack["first"], ack["last"]), now)
            return
        doc = orjson.loads(msg.payload)
        for key in self._alerts(msg.payload):
            self.delivered.setdefault(key, now)
            self.batch_of[key] = (doc["first"], doc["last"])

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def legs(self, alerts: list[dict[str, Any]], raised: dict[tuple[str, float], float],
             pct: Callable[[np.ndarray], dict[str, float]]) -> dict[str, Any]:
        rows = []
        for a in alerts:
            k = (a["device"], a["ts"])
            if k in self.put and k in self.published and k in self.delivered and self.batch_of.get(k) in self.acked:
                rows.append((raised[k], self.put[k], self.published[k], self.delivered[k], a["received_at"],
                             self.acked[self.batch_of[k]]))
        if not rows:
            return {}
        t = np.array(rows) * 1000
        names = ("raised_to_outbox_put", "put_to_publish", "publish_to_broker_delivery",
                 "delivery_to_hub_received_at", "received_at_to_ack_seen")
        return {"traced": len(rows), **{n: pct(t[:, i + 1] - t[:, i]) for i, n in enumerate(names)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 camera, 150 frames")
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--artifacts", default=None)
    ap.add_argument("--no-image", action="store_true", help="alerts without their JPEG (isolates the media path)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.cameras, args.frames = 1, 150
    from apps.sewage_dumping.generate import generate, write_node
    from edge_runtime.node import Node, load_node_config

    load_before = loadavg()
    with artifacts_root(args.artifacts) as root, Mosquitto() as broker, \
            tempfile.TemporaryDirectory(prefix="edgeloop-bench-latency-") as tmpd:
        tmp = Path(tmpd)
        build_artifacts(root, ("intrusion", "activity"), PARAMS)
        cams = tmp / "cams"
        generate(cams, cameras=args.cameras, frames=args.frames, seed=11, realtime=True)
        spec = yaml.safe_load((cams / "pipeline.yaml").read_text())
        for step in spec["steps"]:
            if "alert" in step:
                step["alert"].pop("until_quiet", None)
                if args.no_image:
                    step["alert"].pop("image", None)
        (cams / "pipeline.yaml").write_text(yaml.safe_dump(spec))
        hub = HubProcess(tmp / "hub", broker_port=broker.port, heartbeat=5.0).start()
        node = None
        try:
            admin = hub.admin()
            token = admin.post("/api/v1/nodes", {"name": "edge-lat"})["token"]
            cfg = write_node(cams, "edge-lat", broker_port=broker.port, hub_url=hub.url, token=token)
            node = Node(load_node_config(cfg), models=make_store(tmp / "store", root / "artifacts"))
            raised_at: dict[tuple[str, float], float] = {}
            sink_alert = node.sinks.alert

            def stamped(item: dict[str, Any]) -> None:  # when the pipeline raised it, to split the latency
                raised_at[(item["device"], item["ts"])] = time.time()
                sink_alert(item)

            node.sinks.alert = stamped
            trace = UplinkTrace(node, broker.port)
            t0 = time.time()
            node.start()
            wait_for(lambda: all(c.finished.is_set() for c in node.connectors["video"].cameras.values()), args.frames / 10 + 60,
                     "the cameras to play")
            node.engine.drain(30)
            wait_for(lambda: node.outbox.stats()["rows"] == 0, 60, "the outbox to drain")
            raised = node.sinks.alerts
            def stored() -> Any:
                got = all_uploads(admin, kind="alert")
                return got if len(got) >= raised else None

            alerts = wait_for(stored, 30, "every alert at the hub")
            wall = time.time() - t0
        finally:
            if node is not None:
                node.stop()
            hub.stop()
            if node is not None:
                trace.stop()
    lat = np.array([(a["received_at"] - a["ts"]) * 1000 for a in alerts])
    node_ms = np.array([(raised_at[(a["device"], a["ts"])] - a["ts"]) * 1000 for a in alerts])

    def pct(x: np.ndarray) -> dict[str, float]:
        return {"p50_ms": round(float(np.percentile(x, 50)), 2), "p90_ms": round(float(np.percentile(x, 90)), 2),
                "p99_ms": round(float(np.percentile(x, 99)), 2), "max_ms": round(float(x.max()), 2)}

    res = {"alerts": len(alerts), **pct(lat), "min_ms": round(float(lat.min()), 2),
           "frame_to_alert_raised": pct(node_ms), "raised_to_stored_at_hub": pct(lat - node_ms),
           "legs": trace.legs(alerts, raised_at, pct)}
    met = res["p99_ms"] <= TARGET_P99_MS
    print(f"alert latency frame -> hub (SYNTHETIC, loopback): {res}; target p99 <= {TARGET_P99_MS} ms: "
          f"{'met' if met else 'NOT met'}")
    if not args.no_write:
        write_results("alert_latency", {
            "data_note": "SYNTHETIC street-camera videos and small models trained on synthetic clips",
            "setup": {"cameras": args.cameras, "frames": args.frames, "fps": 10, "pipeline": "apps/sewage_dumping "
                      "without until_quiet (an alert per dumping frame)", "wall_s": round(wall, 1),
                      "path": "decode -> pipeline -> JPEG -> outbox (SQLite) -> Mosquitto -> hub ingest -> SQLite"},
            "targets": {"p99_ms": TARGET_P99_MS},
            "summary": {**res, "meets_target": met},
            "loadavg_before_after": [load_before, loadavg()]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
