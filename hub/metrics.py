"""The hub's ``/metrics``: its HTTP requests, what it stored, rollouts, and the fleet's counters from heartbeats.

Rendered in Prometheus' text format by :func:`edge_runtime.metrics.render`. Request counts and latencies are
this process's (each hub process is its own scrape target); nodes, uploads and rollouts are read from the
database, so every hub process reports the same fleet.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from edge_runtime.metrics import Family, render

from .db import Media, Node, Rollout, Upload
from .drift import latest_scores

__all__ = ["RequestMetrics", "RequestStats", "hub_metrics"]

METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """ASGI middleware: counts each request into ``stats`` under its method, route template and status."""

    def __init__(self, app: Any, stats: RequestStats) -> None:
        self.app, self.stats = app, stats

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [500]

        async def send_(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"  # the template: no ids in label values
            if path.startswith("/ui/") and path != "/ui/events":
                path = "/ui/*"
            method = scope.get("method", "")
            if method not in METHODS:
                method = "other"  # label values stay a bounded set whatever clients send
            if path != "/ui/events":  # a stream lasts minutes: not a request latency
                self.stats.observe(method, path, status[0], time.perf_counter() - t0)


class RequestStats:
    """Requests and a latency histogram per method, route template and status (this process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.count[(method, route, status)] += 1
            b = self.buckets.setdefault((method, route), [0] * (len(BUCKETS) + 1))
            for i, le in enumerate(BUCKETS):
                if seconds <= le:
                    b[i] += 1
            b[-1] += 1
            self.sums[(method, route)] += seconds

    def families(self) -> list[Family]:
        req = Family("edgeloop_hub_http_requests_total", "counter", "HTTP requests, by method, route and status.")
        hist = Family("edgeloop_hub_http_request_duration_seconds", "histogram", "HTTP request latency.")
        with self.lock:
            for (m, r, st), n in sorted(self.count.items()):
                req.add(n, method=m, route=r, status=st)
            for (m, r), b in sorted(self.buckets.items()):
                for le, n in zip((*map(str, BUCKETS), "+Inf"), b):
                    hist.add(n, __suffix__="_bucket", method=m, route=r, le=le)
                hist.add(self.sums[(m, r)], __suffix__="_sum", method=m, route=r)
                hist.add(b[-1], __suffix__="_count", method=m, route=r)
        return [req, hist]


def hub_metrics(hub: Any, requests: RequestStats) -> str:
    now = time.time()
    fams: list[Family] = []
    with hub.sessions() as s:
        nodes = [hub.node_view(n, now) for n in s.scalars(sa.select(Node))]
        uploads = s.execute(sa.select(Upload.kind, sa.func.count()).group_by(Upload.kind)).all()
        media = s.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Media.size), 0))).one()
        states = s.execute(sa.select(Rollout.kind, Rollout.state, sa.func.count())
                           .group_by(Rollout.kind, Rollout.state)).all()
        drift = latest_scores(s, now - 3600)
    online = sum(1 for n in nodes if n["online"])
    fams.append(Family("edgeloop_hub_nodes", "gauge", "Nodes, by state.").add(online, state="online")
                .add(len(nodes) - online, state="offline"))
    up = Family("edgeloop_hub_uploads_stored", "gauge", "Items nodes uploaded that the hub stores, by kind.")
    for kind, n in uploads:
        up.add(n, kind=kind)
    fams.append(up)
    fams.append(Family("edgeloop_hub_media_files", "gauge", "Media files stored (alert JPEGs...).").add(media[0]))
    fams.append(Family("edgeloop_hub_media_bytes", "gauge", "Bytes of media stored.").add(media[1]))
    ro = Family("edgeloop_hub_rollouts", "gauge", "Model and pipeline rollouts, by kind and state.")
    for kind, state, n in states:
        ro.add(n, kind=kind, state=state)
    fams.append(ro)
    per: dict[str, Family] = {}
    for key, help_ in (("records", "Records into the node's Device Bus"), ("dead_letters", "Dead letters"),
                       ("alerts", "Alerts raised"), ("uploads", "Records uploaded"),
                       ("mqtt_received", "MQTT messages received")):
        per[key] = Family(f"edgeloop_fleet_{key}_total", "counter", f"{help_}, per node (from its last heartbeat).")
    seen = Family("edgeloop_fleet_last_heartbeat_seconds", "gauge", "Seconds since a node's last heartbeat.")
    outbox = Family("edgeloop_fleet_outbox_rows", "gauge", "Items in a node's outbox (from its last heartbeat).")
    for n in nodes:
        for key, fam in per.items():
            fam.add(n["counters"].get(key), node=n["name"])
        if n["last_seen"]:
            seen.add(round(now - n["last_seen"], 3), node=n["name"])
        outbox.add((n.get("outbox") or {}).get("rows"), node=n["name"])
    fams += [*per.values(), seen, outbox]
    score = Family("edgeloop_model_drift", "gauge", "A model version's drift score on a node (the largest PSI over "
                                                    "its inputs and confidence; newest in the last hour).")
    for model, version, node, value in drift:
        score.add(value, model=model, version=version, node=node)
    fams.append(score)
    return render([*fams, *requests.families()])

