"""Tokens: an admin token for people and the CLI, one or more tokens per node for its agent.

Tokens are random (256 bits) and shown once; the hub keeps only their SHA-256
(a slow hash buys nothing for random secrets of that size). A node token
authorises only that node's own endpoints; revoked or expired tokens are refused.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .db import Token

__all__ = ["Principal", "hash_token", "new_token", "issue", "lookup"]


@dataclass(frozen=True)
class Principal:
    kind: str  # admin | node
    node: str | None
    token_id: int
    expires_at: float | None = None

    @property
    def admin(self) -> bool:
        return self.kind == "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(kind: str) -> str:
    return f"el{kind[0]}_{secrets.token_urlsafe(32)}"


def issue(session: Session, kind: str, *, node: str | None = None, note: str = "",
          token: str | None = None, ttl: float | None = None) -> tuple[int, str]:
    """Create a token (or register a given one); returns (id, the token in clear, shown once)."""
    token = token or new_token(kind)
    row = Token(hash=hash_token(token), kind=kind, node=node, note=note,
                expires_at=None if ttl is None else time.time() + ttl)
    session.add(row)
    session.flush()
    return row.id, token


def lookup(session: Session, token: str) -> Principal | None:
    row = session.execute(sa.select(Token.id, Token.kind, Token.node, Token.revoked_at, Token.expires_at)
                          .where(Token.hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at < time.time():
        return None
    return Principal(row.kind, row.node, row.id, row.expires_at)
