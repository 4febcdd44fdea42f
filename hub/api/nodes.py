"""Nodes: the admin creates, lists and deletes them; a node's agent registers, heartbeats and reads its desired
state (its own node only)."""

import time
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Header, HTTPException, Response
from pydantic import BaseModel, Field

from .. import auth
from ..db import Assignment, Node, Token, bump_revision
from ..desired import desired_state
from ..uploads import json_problem
from .deps import Admin, Db, HubDep, NodeOrAdmin, OwnNode, hub_router
from .names import NAME

__all__ = ["router"]

router = hub_router()


class NodeCreate(BaseModel):
    name: str = Field(pattern=NAME, description="node id: the MQTT username and topic prefix too")
    group: str = Field("default", pattern=NAME)


class Register(BaseModel):
    version: str = Field("", max_length=40)
    hostname: str = Field("", max_length=200)
    capabilities: list[str] = Field(default_factory=list, max_length=100)


class Heartbeat(BaseModel):
    instances: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    models: dict[str, Any] = Field(default_factory=dict)
    counters: dict[str, Any] = Field(default_factory=dict)
    queues: dict[str, Any] = Field(default_factory=dict)
    outbox: dict[str, Any] = Field(default_factory=dict)
    video: dict[str, Any] = Field(default_factory=dict, description="per camera: frames, reconnects, stalls, corrupt frames, drops")
    errors: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    desired_etag: str | None = Field(None, max_length=64)


# -- the admin's ---------------------------------------------------------------------------------
@router.post("/api/v1/nodes", status_code=201, tags=["nodes"])
def create_node(body: NodeCreate, s: Db, _: Admin) -> dict[str, Any]:
    """Create a node and its first token (shown once)."""
    if s.get(Node, body.name) is not None:
        raise HTTPException(409, f"node {body.name!r} exists; create another token with POST .../tokens")
    s.add(Node(name=body.name, group=body.group))
    s.flush()
    tid, token = auth.issue(s, "node", node=body.name, note="first token")
    s.commit()
    return {"name": body.name, "group": body.group, "token_id": tid, "token": token}


@router.get("/api/v1/nodes", tags=["nodes"])
def list_nodes(s: Db, _: Admin, hub: HubDep) -> list[dict[str, Any]]:
    now = time.time()
    return [hub.node_view(n, now) for n in s.scalars(sa.select(Node).order_by(Node.name))]


@router.get("/api/v1/nodes/{node}", tags=["nodes"])
def get_node(n: NodeOrAdmin, hub: HubDep) -> dict[str, Any]:
    return hub.node_view(n)


@router.delete("/api/v1/nodes/{node}", tags=["nodes"])
def delete_node(node: str, s: Db, _: Admin, hub: HubDep) -> dict[str, Any]:
    n = s.get(Node, node)
    if n is None:
        raise HTTPException(404, f"unknown node {node!r}")
    s.execute(sa.update(Token).where(Token.node == node).values(revoked_at=time.time()))
    s.execute(sa.delete(Assignment).where(Assignment.target == f"node:{node}"))
    s.delete(n)
    bump_revision(s)
    s.commit()
    hub.tokens_changed()
    return {"deleted": node}


# -- the agent's (node token, own node only) ---------------------------------------------------------
@router.post("/api/v1/nodes/{node}/register", tags=["agent"])
def register(body: Register, n: OwnNode, s: Db, hub: HubDep) -> dict[str, Any]:
    n = s.merge(n)
    n.registered_at = n.last_seen = time.time()
    n.info = body.model_dump()
    s.commit()
    return {"node": n.name, "group": n.group, "heartbeat_interval": hub.settings.heartbeat_interval,
            "uplink_topic": f"edgeloop/{n.name}/uplink", "ack_topic": f"edgeloop/{n.name}/uplink/ack"}


@router.post("/api/v1/nodes/{node}/heartbeat", tags=["agent"])
def heartbeat(body: Heartbeat, n: OwnNode, s: Db, hub: HubDep) -> dict[str, Any]:
    hb = body.model_dump()
    problem = json_problem(hb, "heartbeat")
    if problem:
        raise HTTPException(422, problem)
    hub.heartbeats.record(n.name, hb)
    etag = hub.desired_etag(s, n)
    s.rollback()  # read only: the connection goes back at once
    return {"desired_etag": etag, "changed": etag != body.desired_etag}


@router.get("/api/v1/nodes/{node}/desired", tags=["agent"])
def desired(n: NodeOrAdmin, s: Db, response: Response,
            if_none_match: Annotated[str | None, Header()] = None) -> Any:
    """The node's desired state; 304 when the ETag in If-None-Match is current."""
    doc = desired_state(s, n)
    if if_none_match and if_none_match.strip('"') == doc["etag"]:
        return Response(status_code=304, headers={"ETag": f'"{doc["etag"]}"'})
    response.headers["ETag"] = f'"{doc["etag"]}"'
    return doc
