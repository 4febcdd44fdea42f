"""Shared pipelines and their assignments (admin): a pipeline spec validated exactly as a node would, a changed
spec a new version; an assignment runs an instance of it on a node (``node:<name>``) or on every node of a
group (``group:<name>``)."""

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Body, HTTPException, Query, Response
from pydantic import BaseModel, Field

from .. import specs
from ..db import Assignment, Node, PipelineVersion, bump_revision, deleted, set_assignment
from ..specs import check_instance, pipeline_version
from .deps import Admin, Db, hub_router
from .names import BIGINT, PIPELINE_NAME, checked_target, is_name

__all__ = ["router"]

router = hub_router()


class AssignmentPut(BaseModel):
    pipeline: str = Field(pattern=PIPELINE_NAME)
    version: int | None = Field(None, ge=1, le=BIGINT, description="a pipeline version; none: always the newest")
    devices: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None, max_length=10000, description="bound devices; none: every device of the pipeline's product")
    params: dict[str, Any] | None = Field(
        None, max_length=200, description="values of the pipeline's declared params (none: its defaults)")


def _no_pipeline(name: str, version: int | None) -> HTTPException:
    return HTTPException(404, f"no pipeline {name!r}" + (f" version {version}" if version else ""))


# -- pipelines ---------------------------------------------------------------------------------------
@router.post("/api/v1/pipelines", tags=["pipelines"])
def put_pipeline(s: Db, _: Admin, response: Response, spec: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Validate a pipeline spec exactly as a node would; a changed spec becomes a new version."""
    row, created = specs.put_pipeline(s, spec)
    s.commit()
    response.status_code = 201 if created else 200
    return {"name": row.name, "version": row.version, "created": created}


@router.get("/api/v1/pipelines", tags=["pipelines"])
def list_pipelines(s: Db, _: Admin) -> list[dict[str, Any]]:
    rows = s.execute(sa.select(PipelineVersion.name, sa.func.max(PipelineVersion.version),
                               sa.func.count()).group_by(PipelineVersion.name).order_by(PipelineVersion.name))
    return [{"name": r[0], "latest": r[1], "versions": r[2]} for r in rows]


@router.get("/api/v1/pipelines/{name}", tags=["pipelines"])
def get_pipeline(name: str, s: Db, _: Admin,
                 version: Annotated[int | None, Query(ge=1, le=BIGINT)] = None) -> dict[str, Any]:
    pv = pipeline_version(s, name, version)
    if pv is None:
        raise _no_pipeline(name, version)
    return {"name": pv.name, "version": pv.version, "spec": pv.spec, "created_at": pv.created_at}


# -- assignments -------------------------------------------------------------------------------------
@router.put("/api/v1/assignments/{target}/{instance}", tags=["assignments"])
def put_assignment(target: str, instance: str, body: AssignmentPut, s: Db, _: Admin) -> dict[str, Any]:
    """Run a pipeline instance on a node (``node:<name>``) or every node of a group (``group:<name>``)."""
    kind, name = checked_target(target)
    if not is_name(instance):
        raise HTTPException(422, f"instance {instance!r}: letters, digits and _ . - only (at most 64)")
    if kind == "node" and s.get(Node, name) is None:
        raise HTTPException(404, f"unknown node {name!r}")
    pv = pipeline_version(s, body.pipeline, body.version)
    if pv is None:
        raise _no_pipeline(body.pipeline, body.version)
    check_instance(s, pv.spec, body.params, f"pipeline {pv.name} v{pv.version}")
    set_assignment(s, target, instance, pv.name, body.version, body.devices, body.params)
    bump_revision(s)
    s.commit()
    return {"target": target, "instance": instance, "pipeline": pv.name, "version": body.version or pv.version,
            "devices": body.devices, "params": body.params or None}


@router.get("/api/v1/assignments", tags=["assignments"])
def list_assignments(s: Db, _: Admin) -> list[dict[str, Any]]:
    return [{"target": a.target, "instance": a.instance, "pipeline": a.pipeline, "version": a.version,
             "devices": a.devices, "params": a.params} for a in s.scalars(sa.select(Assignment).order_by(Assignment.id))]


@router.delete("/api/v1/assignments/{target}/{instance}", tags=["assignments"])
def delete_assignment(target: str, instance: str, s: Db, _: Admin) -> dict[str, Any]:
    n = deleted(s, sa.delete(Assignment).where(Assignment.target == target, Assignment.instance == instance))
    if not n:
        raise HTTPException(404, f"no assignment {instance!r} for {target!r}")
    bump_revision(s)
    s.commit()
    return {"deleted": f"{target}/{instance}"}
