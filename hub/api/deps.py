"""What the hub's routers share as FastAPI dependencies: the :class:`~hub.core.Hub` and the rollout controller
of the app serving the request, a database session, and who is asking (the token's principal) with the
admin-only and node-only guards.

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>``. The admin token may do everything; a
node token may only act for its own node (:data:`OwnNode`, or :data:`NodeOrAdmin` for what the admin may read
too); a metrics token may only read ``/metrics`` (:data:`AnyPrincipal`).

Dependencies that read the database use short sessions of their own, closed before they return: a request
never holds a pooled connection while it waits for its next worker thread (that deadlocks a busy hub).
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session

from ..auth import Principal
from ..core import Hub
from ..db import Node
from ..metrics import RequestStats
from ..rollouts.controller import RolloutController

__all__ = ["Admin", "AnyPrincipal", "Caller", "Db", "HubDep", "NodeOrAdmin", "OwnNode", "Rollouts", "Stats",
           "admin", "any_principal", "hub_router", "no_nul", "principal"]


# Async on purpose, here and below where nothing blocks: sync dependencies run in a worker thread each.
async def get_hub(request: Request) -> Hub:
    """The hub of the app serving this request (``app.state.hub``)."""
    return cast(Hub, request.app.state.hub)


async def get_rollouts(request: Request) -> RolloutController:
    return cast(RolloutController, request.app.state.rollouts)


async def get_stats(request: Request) -> RequestStats:
    return cast(RequestStats, request.app.state.request_stats)


HubDep = Annotated[Hub, Depends(get_hub)]
Rollouts = Annotated[RolloutController, Depends(get_rollouts)]
Stats = Annotated[RequestStats, Depends(get_stats)]


async def db(hub: HubDep) -> AsyncIterator[Session]:
    # An async generator on purpose: its clean-up (returning the connection to the pool) runs on the
    # event loop. A sync one would need a worker thread for it, and with every thread waiting for a
    # pooled connection held by sessions waiting to be closed, the hub deadlocks under load.
    s = hub.sessions()
    try:
        yield s
    finally:
        s.close()


Db = Annotated[Session, Depends(db)]


async def no_nul(request: Request) -> None:
    """NUL cannot be stored in PostgreSQL text, not even compared: refuse it in paths and queries."""
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise HTTPException(422, "NUL characters are not allowed in the URL")


def hub_router(**kw: Any) -> APIRouter:
    """A router of the hub's app: each of its routes refuses NUL in its URL first (:func:`no_nul`)."""
    return APIRouter(dependencies=[Depends(no_nul)], **kw)


def any_principal(hub: HubDep,
                  authorization: Annotated[str | None, Header(description="Bearer <token>")] = None) -> Principal:
    """Whoever the bearer token belongs to: the admin, a node or a metrics scraper (401 without a valid one)."""
    if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 200:
        raise HTTPException(401, "missing token: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    p = hub.principal_for(authorization[7:].strip())
    if p is None:
        raise HTTPException(401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return p


AnyPrincipal = Annotated[Principal, Depends(any_principal)]


def principal(p: AnyPrincipal) -> Principal:
    """The admin or a node: a metrics token may read /metrics and nothing else."""
    if p.kind == "metrics":
        raise HTTPException(403, "a metrics token may only read /metrics")
    return p


Caller = Annotated[Principal, Depends(principal)]


def admin(p: Caller) -> Principal:
    """The admin only."""
    if not p.admin:
        raise HTTPException(403, "this needs the admin token")
    return p


Admin = Annotated[Principal, Depends(admin)]


def node_or_admin(node: str, p: Caller, hub: HubDep) -> Node:
    """The path's node, for the admin or the node itself (its row, detached)."""
    if not p.admin and p.node != node:
        raise HTTPException(403, f"a token of node {p.node!r} cannot act for node {node!r}")
    with hub.sessions() as s:
        n = s.get(Node, node)
    if n is None:
        raise HTTPException(404, f"unknown node {node!r}")
    return n  # detached, attributes loaded


NodeOrAdmin = Annotated[Node, Depends(node_or_admin)]


def own_node(node: str, p: Caller, hub: HubDep) -> Node:
    """The path's node, for its own token only (the agent's endpoints); cached (:meth:`Hub.node_for`)."""
    if p.node != node:
        raise HTTPException(403, f"only node {node!r}'s own token may do this")
    n = hub.node_for(node)
    if n is None:
        raise HTTPException(404, f"unknown node {node!r}")
    return n


OwnNode = Annotated[Node, Depends(own_node)]
