"""Tokens (admin): more tokens for a node, a token for a Prometheus scraper, listing and revoking them.
Tokens are shown once; the hub keeps their SHA-256 only (:mod:`hub.auth`)."""

import time
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import HTTPException, Path
from pydantic import BaseModel, Field

from .. import auth
from ..db import Node, Token
from .deps import Admin, Db, HubDep, hub_router
from .names import BIGINT

__all__ = ["router"]

router = hub_router(tags=["tokens"])


class TokenCreate(BaseModel):
    note: str = Field("", max_length=200, pattern=r"^[^\x00]*$")
    ttl: float | None = Field(None, gt=0, description="seconds until the token expires")


# before /api/v1/tokens/{token_id}: a GET of .../metrics answers 405 naming POST, as it always did
@router.post("/api/v1/tokens/metrics", status_code=201)
def create_metrics_token(body: TokenCreate, s: Db, _: Admin) -> dict[str, Any]:
    """A token for a Prometheus scraper: it may read /metrics and nothing else."""
    tid, token = auth.issue(s, "metrics", note=body.note, ttl=body.ttl)
    s.commit()
    return {"kind": "metrics", "token_id": tid, "token": token}


@router.post("/api/v1/nodes/{node}/tokens", status_code=201)
def create_token(node: str, body: TokenCreate, s: Db, _: Admin) -> dict[str, Any]:
    if s.get(Node, node) is None:
        raise HTTPException(404, f"unknown node {node!r}")
    tid, token = auth.issue(s, "node", node=node, note=body.note, ttl=body.ttl)
    s.commit()
    return {"node": node, "token_id": tid, "token": token}


@router.get("/api/v1/tokens")
def list_tokens(s: Db, _: Admin) -> list[dict[str, Any]]:
    return [{"id": t.id, "kind": t.kind, "node": t.node, "note": t.note, "created_at": t.created_at,
             "expires_at": t.expires_at, "revoked_at": t.revoked_at}
            for t in s.scalars(sa.select(Token).order_by(Token.id))]


@router.delete("/api/v1/tokens/{token_id}")
def revoke_token(token_id: Annotated[int, Path(ge=1, le=BIGINT)], s: Db, p: Admin, hub: HubDep) -> dict[str, Any]:
    t = s.get(Token, token_id)
    if t is None:
        raise HTTPException(404, f"unknown token id {token_id}")
    if t.id == p.token_id:
        raise HTTPException(409, "refusing to revoke the token this request uses")
    t.revoked_at = t.revoked_at or time.time()
    s.commit()
    hub.tokens_changed()
    return {"revoked": token_id}
