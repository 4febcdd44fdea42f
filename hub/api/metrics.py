"""Health and metrics: ``/health`` (no token) for liveness probes, ``/metrics`` for Prometheus (the admin
token or a metrics token, which can read nothing else)."""

import time
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException
from fastapi.responses import PlainTextResponse

from edge_runtime.metrics import CONTENT_TYPE as METRICS_TYPE

from ..metrics import hub_metrics
from .deps import AnyPrincipal, HubDep, Stats, hub_router

__all__ = ["router"]

router = hub_router(tags=["health"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(p: AnyPrincipal, hub: HubDep, stats: Stats) -> PlainTextResponse:
    """Prometheus metrics: the admin token or a metrics token (``POST /api/v1/tokens/metrics``), which can
    read nothing else."""
    if p.kind not in ("admin", "metrics"):
        raise HTTPException(403, "metrics need the admin token or a metrics token")
    return PlainTextResponse(hub_metrics(hub, stats), media_type=METRICS_TYPE)


@router.get("/health")
def health(hub: HubDep) -> dict[str, Any]:
    """Liveness and database reachability (no token needed)."""
    with hub.engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    return {"status": "ok", "time": time.time()}
