"""Model and pipeline rollouts (admin): canaries, promotion, automatic rollback (:mod:`hub.rollouts`)."""

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import HTTPException, Path, Query
from pydantic import BaseModel, Field

from ..db import Rollout
from ..rollouts.views import view
from .deps import Admin, Db, Rollouts, hub_router
from .names import BIGINT, NAME, PIPELINE_NAME

__all__ = ["router"]

router = hub_router(tags=["rollouts"])

RolloutId = Annotated[int, Path(ge=1, le=BIGINT)]


class RolloutCreate(BaseModel):
    model: str | None = Field(None, pattern=NAME, description="a model in the warehouse (or name a pipeline)")
    pipeline: str | None = Field(None, pattern=PIPELINE_NAME, description="a pipeline at the hub (or name a model)")
    version: str = Field(pattern=NAME, description="the version to roll out (in the warehouse, or the pipeline's)")
    group: str = Field(pattern=NAME, description="the node group to roll out to")
    canary: int = Field(1, ge=1, le=10000, description="how many nodes of the group get the version first")
    watch_s: float = Field(60.0, ge=0, le=7 * 86400,
                           description="seconds the canaries must serve it with passing checks before promotion")
    checks: dict[str, Any] | None = Field(
        None, description="rollback thresholds: max_error_rate (dead letters per heartbeat), min_heartbeats, "
                          "max_confidence_drop, min_records")


@router.post("/api/v1/rollouts", status_code=201)
def start_rollout(body: RolloutCreate, s: Db, _: Admin, rollouts: Rollouts) -> dict[str, Any]:
    """Roll ``model:version`` (or ``pipeline`` and its ``version``: the group's instances of it must be
    pinned to a version) out to a group: ``canary`` nodes first (online ones first, by name), the whole
    group after ``watch_s`` seconds of passing checks; rolled back when a canary refuses it, its dead
    letters grow or (models) its confidence drops (see ``checks``)."""
    return rollouts.create(s, model=body.model, pipeline=body.pipeline, version=body.version, group=body.group,
                           canary=body.canary, watch_s=body.watch_s, checks=body.checks)


@router.get("/api/v1/rollouts")
def list_rollouts(s: Db, _: Admin, model: Annotated[str | None, Query(max_length=64)] = None,
                  pipeline: Annotated[str | None, Query(max_length=100)] = None,
                  limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> list[dict[str, Any]]:
    """Rollouts, newest first (``model`` or ``pipeline``: only that one's)."""
    q = sa.select(Rollout).order_by(Rollout.id.desc()).limit(limit)
    if model:
        q = q.where(Rollout.model == model, Rollout.kind == "model")
    if pipeline:
        q = q.where(Rollout.model == pipeline, Rollout.kind == "pipeline")
    return [view(r) for r in s.scalars(q)]


@router.get("/api/v1/rollouts/{rollout_id}")
def get_rollout(rollout_id: RolloutId, s: Db, _: Admin) -> dict[str, Any]:
    """A rollout's state and its nodes: pending, installing, serving, failed or offline, with reasons."""
    r = s.get(Rollout, rollout_id)
    if r is None:
        raise HTTPException(404, f"no rollout {rollout_id}")
    return view(r)


@router.post("/api/v1/rollouts/{rollout_id}/promote")
def promote_rollout(rollout_id: RolloutId, s: Db, _: Admin, rollouts: Rollouts) -> dict[str, Any]:
    """Give the whole group the version now (a canary rollout only)."""
    return rollouts.promote(s, rollout_id)


@router.post("/api/v1/rollouts/{rollout_id}/rollback")
def rollback_rollout(rollout_id: RolloutId, s: Db, _: Admin, rollouts: Rollouts) -> dict[str, Any]:
    """Put the canaries (and, once rolling, the group) back on the previous version now."""
    return rollouts.rollback(s, rollout_id)
