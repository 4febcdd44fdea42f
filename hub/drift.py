"""Drift at the hub: the scores nodes report in heartbeats (:mod:`edge_runtime.drift`) kept as a time series per
model, version and node, each model's alarm settings, and the alarm itself.

A node's heartbeat carries, per model and loaded version, a drift summary (``score``: the largest PSI over the
model's inputs and its confidence, ``worst``: which, ``rows`` in its window, PSI per input...). The heartbeat
writer stores one point per (model, version, node) at most every ``every_s`` seconds (a node heartbeating
every half second does not write a row each time) and drops points older than ``keep_s``.

A model's **alarm** is raised on a node when its drift score stayed over the model's ``threshold`` for at
least ``sustain_s`` seconds (every point of that stretch over it, at least two points): one spike is not
drift. ``GET /api/v1/models/{name}/drift`` says, per node, whether it is raised and since when; the agile
loop's drift watcher reads it and starts the loop for that model (:mod:`flows.drift`).

Everything a node sends is checked here as hostile input: names that are not names, numbers that are not
finite, oversized maps are dropped, never stored.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .api.names import is_name
from .db import DriftSettings, ModelDrift

__all__ = ["DEFAULT_SUSTAIN_S", "DEFAULT_THRESHOLD", "DriftRecorder", "drift_settings", "drift_view", "points",
           "latest_scores"]

DEFAULT_THRESHOLD = 0.25  # PSI: 0.1-0.25 reads as a moderate shift, above 0.25 as significant
DEFAULT_SUSTAIN_S = 120.0
MAX_INPUTS = 64


def _num(v: Any, hi: float = 1e6) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) and -hi <= v <= hi else None


def _label(v: Any) -> str | None:
    return v if isinstance(v, str) and 0 < len(v) <= 64 and v.isprintable() else None


def points(node: str, hb: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
    """The drift points in a heartbeat: one per model and version that reports a summary."""
    models = (hb.get("models") or {}).get("models") if isinstance(hb.get("models"), Mapping) else None
    out: list[dict[str, Any]] = []
    if not isinstance(models, Mapping):
        return out
    for model, st in list(models.items())[:MAX_INPUTS]:
        drift = st.get("drift") if isinstance(st, Mapping) else None
        if not isinstance(model, str) or not is_name(model) or not isinstance(drift, Mapping):
            continue
        for version, d in list(drift.items())[:8]:
            if not isinstance(version, str) or not is_name(version) or not isinstance(d, Mapping):
                continue
            psi_in = d.get("psi")
            psi: Mapping[str, Any] = psi_in if isinstance(psi_in, Mapping) else {}
            detail = {"worst": _label(d.get("worst")), "psi_confidence": _num(d.get("psi_confidence")),
                      "positive_rate": _num(d.get("positive_rate"), 1.0),
                      "ref_positive_rate": _num(d.get("ref_positive_rate"), 1.0),
                      "psi": {k: _num(v) for k, v in list(psi.items())[:MAX_INPUTS] if _label(k)}}
            rows = _num(d.get("rows"), 2**31 - 1)
            out.append({"model": model, "version": version, "node": node, "ts": now, "score": _num(d.get("score")),
                        "rows": int(rows) if rows is not None and rows >= 0 else 0, "detail": detail})
    return out


class DriftRecorder:
    """Drift points on their way to the database, thinned to one per (model, version, node) every ``every_s``."""

    def __init__(self, every_s: float = 10.0, keep_s: float = 30 * 86400) -> None:
        self.every_s, self.keep_s = every_s, keep_s
        self._last: dict[tuple[str, str, str], float] = {}
        self._pruned = 0.0
        self._lock = threading.Lock()

    def rows(self, beats: Iterable[tuple[str, float, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """The points of ``(node, time, heartbeat)`` due to be stored now."""
        out = []
        with self._lock:
            for node, t, hb in beats:
                for p in points(node, hb, t):
                    key = (p["model"], p["version"], node)
                    if t - self._last.get(key, -math.inf) >= self.every_s:
                        self._last[key] = t
                        out.append(p)
        return out

    def store(self, conn: sa.Connection, rows: list[dict[str, Any]], now: float) -> None:
        if rows:
            conn.execute(sa.insert(ModelDrift), rows)
        if now - self._pruned > 3600:
            self._pruned = now
            conn.execute(sa.delete(ModelDrift).where(ModelDrift.ts < now - self.keep_s))


def drift_settings(s: Session, model: str) -> dict[str, Any]:
    row = s.get(DriftSettings, model)
    if row is None:
        return {"threshold": DEFAULT_THRESHOLD, "sustain_s": DEFAULT_SUSTAIN_S, "default": True}
    return {"threshold": row.threshold, "sustain_s": row.sustain_s, "default": False}


def _alarm(series: list[tuple[float, float | None]], threshold: float, sustain_s: float) -> tuple[bool, float | None]:
    """Whether the newest stretch of points over ``threshold`` lasted ``sustain_s`` (and since when it is over)."""
    since = None
    n = 0
    for ts, score in reversed(series):
        if score is None or score <= threshold:
            break
        since, n = ts, n + 1
    if since is None:
        return False, None
    return n >= 2 and series[-1][0] - since >= sustain_s, since


def drift_view(s: Session, model: str, *, since: float | None = None, node: str | None = None,
               now: float | None = None, limit: int = 5000) -> dict[str, Any]:
    """A model's drift as the API, the dashboard and the loop's watcher read it: its settings, per node the
    newest point (of the newest version the node reported) and the alarm, and the series since ``since``
    (default: the last 24 h), oldest first, at most ``limit`` points."""
    now = now or time.time()
    cfg = drift_settings(s, model)
    q = sa.select(ModelDrift).where(ModelDrift.model == model, ModelDrift.ts >= (since if since is not None
                                                                                 else now - 86400))
    if node:
        q = q.where(ModelDrift.node == node)
    rows = list(s.scalars(q.order_by(ModelDrift.ts.desc(), ModelDrift.id.desc()).limit(limit)))[::-1]
    series: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    latest: dict[str, ModelDrift] = {}
    for r in rows:
        series.setdefault((r.node, r.version), []).append((r.ts, r.score))
        latest[r.node] = r
    nodes: dict[str, dict[str, Any]] = {}
    for n, r in sorted(latest.items()):
        alarm, over = _alarm(series[(n, r.version)], cfg["threshold"], cfg["sustain_s"])
        nodes[n] = {"version": r.version, "ts": r.ts, "score": r.score, "rows": r.rows, "worst": (r.detail or {}).get("worst"),
                    "detail": r.detail or {}, "alarm": alarm, "over_since": over}
    raised = [n for n, v in nodes.items() if v["alarm"]]
    started: list[float] = [nodes[n]["over_since"] for n in raised]
    return {"model": model, **cfg, "nodes": nodes, "alarm": bool(raised), "alarm_nodes": raised,
            "over_since": min(started, default=None),
            "series": [{"node": n, "version": v, "points": [[round(t, 3), sc] for t, sc in pts]}
                       for (n, v), pts in sorted(series.items())]}


def latest_scores(s: Session, since: float) -> list[tuple[str, str, str, float | None]]:
    """(model, version, node, score) of each newest point since ``since``: the /metrics gauge."""
    newest = (sa.select(ModelDrift.model, ModelDrift.version, ModelDrift.node, sa.func.max(ModelDrift.id).label("id"))
              .where(ModelDrift.ts >= since).group_by(ModelDrift.model, ModelDrift.version, ModelDrift.node).subquery())
    q = sa.select(ModelDrift.model, ModelDrift.version, ModelDrift.node, ModelDrift.score).join(
        newest, ModelDrift.id == newest.c.id).order_by(ModelDrift.model, ModelDrift.node, ModelDrift.version)
    return [tuple(r) for r in s.execute(q).all()]  # type: ignore[misc]
