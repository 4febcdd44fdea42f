"""A rollout as the API and the dashboard show it."""

from __future__ import annotations

from typing import Any

from ..db import Rollout

__all__ = ["view"]


def view(r: Rollout) -> dict[str, Any]:
    """A rollout as the API shows it (``name`` is the model's or the pipeline's, as ``kind`` says)."""
    stats = r.stats or {}
    conf = {k: (None if not v or not v[1] else {"mean": round(v[0] / v[1], 6), "records": int(v[1])})
            for k, v in (("canary", stats.get("canary_conf")), ("previous", stats.get("previous_conf")))}
    nodes = [{"node": k, **v} for k, v in sorted((r.nodes or {}).items())]
    kind = r.kind or "model"
    return {"id": r.id, "kind": kind, "name": r.model, "model": r.model if kind == "model" else None,
            "pipeline": r.model if kind == "pipeline" else None, "version": r.version, "group": r.group, "previous": r.previous,
            "canary": r.canary, "watch_s": r.watch_s, "checks": r.checks, "state": r.state, "canaries": r.canaries,
            "nodes": nodes, "waiting": [n["node"] for n in nodes if n.get("status") == "offline"],
            "healthy_since": r.healthy_since, "reason": r.reason, "confidence": conf, "created_at": r.created_at,
            "updated_at": r.updated_at, "finished_at": r.finished_at}
