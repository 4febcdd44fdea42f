"""The hub's core object, shared by its API, dashboard, rollout controller and metrics (no HTTP here): its
settings, database and files, the caches requests read through (tokens, nodes, desired-state ETags) and the
heartbeats on their way to the database (:mod:`hub.heartbeats`). What a node should run is computed in
:mod:`hub.desired`, products and pipelines are checked in :mod:`hub.specs`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from .auth import Principal, hash_token, issue, lookup
from .db import Node, Revision, Token, make_engine, migrate
from .desired import desired_state
from .drift import DriftRecorder
from .heartbeats import HeartbeatBuffer

__all__ = ["Hub", "HubSettings"]


@dataclass
class HubSettings:
    db_url: str = "sqlite:///var/hub/hub.db"
    data_dir: str = "var/hub"
    admin_token: str | None = None         # registered (hashed) at start when given
    max_body: int = 1 << 20                # JSON request bodies
    max_media: int = 32 << 20              # uploaded media files
    max_bundle: int = 1 << 30              # model bundles
    heartbeat_interval: float = 10.0       # what agents are told to use
    offline_after: float = 30.0            # no heartbeat for this long: offline
    broker: dict[str, Any] | None = None   # {host, port, username, password}: run the MQTT ingest in-process
    ingest_group: str = "edgeloop-ingest"
    drift_every_s: float = 10.0            # a model's drift score is stored per node at most this often
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> HubSettings:
        env = os.environ
        s = cls(db_url=env.get("EDGELOOP_HUB_DB", cls.db_url), data_dir=env.get("EDGELOOP_HUB_DATA", cls.data_dir),
                admin_token=env.get("EDGELOOP_ADMIN_TOKEN"),
                drift_every_s=float(env.get("EDGELOOP_HUB_DRIFT_EVERY_S") or cls.drift_every_s))
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s


class Hub:
    """One hub process's state: the database (migrated on start), media and model files, caches, heartbeats."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.media_dir = Path(settings.data_dir) / "media"
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir = Path(settings.data_dir) / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        if settings.admin_token:
            self.ensure_admin_token(settings.admin_token)
        self.heartbeats = HeartbeatBuffer(self.engine, drift=DriftRecorder(settings.drift_every_s))
        self._etags: dict[tuple[str, str], tuple[int, str]] = {}  # (node, group) -> (revision, etag)
        self._tokens: dict[str, tuple[float, Principal]] = {}  # token -> (valid until, principal)
        self.token_cache_s = 15.0  # longer than a heartbeat interval, or every heartbeat misses
        self._nodes: dict[str, tuple[float, Node]] = {}

    def ensure_admin_token(self, token: str) -> None:
        """Register ``token`` as an admin token unless it is one already."""
        with self.sessions.begin() as s:
            if s.scalar(sa.select(Token.id).where(Token.hash == hash_token(token))) is None:
                issue(s, "admin", token=token, note="from EDGELOOP_ADMIN_TOKEN")

    # -- caches ----------------------------------------------------------------------------
    def principal_for(self, token: str) -> Principal | None:
        """The token's principal, or None; cached for a few seconds (revocations here clear the cache;
        another hub process sees a revocation within ``token_cache_s``)."""
        now = time.monotonic()
        hit = self._tokens.get(token)
        if hit is not None and hit[0] > now and (hit[1].expires_at is None or hit[1].expires_at > time.time()):
            return hit[1]
        with self.sessions() as s:
            p = lookup(s, token)
        if len(self._tokens) > 100_000:
            self._tokens.clear()
        if p is not None:
            self._tokens[token] = (now + self.token_cache_s, p)
        return p

    def tokens_changed(self) -> None:
        """Tokens were revoked or a node deleted: forget cached principals and nodes."""
        self._tokens.clear()
        self._nodes.clear()

    def node_for(self, name: str) -> Node | None:
        """The node's row (detached; for its name and group), cached like tokens."""
        now = time.monotonic()
        hit = self._nodes.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.sessions() as s:
            n = s.get(Node, name)
            if n is not None:
                s.expunge(n)
        if n is not None:
            if len(self._nodes) > 100_000:
                self._nodes.clear()
            self._nodes[name] = (now + self.token_cache_s, n)
        return n

    def desired_etag(self, s: Any, node: Node) -> str:
        """The ETag of ``node``'s desired state, recomputed only when the desired-state revision changed."""
        rev = s.scalar(sa.select(Revision.value).where(Revision.id == 1))
        key = (node.name, node.group)
        hit = self._etags.get(key)
        if rev is not None and hit is not None and hit[0] == rev:
            return hit[1]
        etag: str = desired_state(s, node)["etag"]
        if rev is not None:  # no counter row (a database emptied by hand): no caching
            self._etags[key] = (rev, etag)
        return etag

    # -- nodes ----------------------------------------------------------------------------
    def node_view(self, n: Node, now: float | None = None) -> dict[str, Any]:
        """A node as the API shows it: online state, counters and what it runs, from its newest heartbeat."""
        now = now or time.time()
        hb, last_seen, count = self.heartbeats.merged(n)
        return {"name": n.name, "group": n.group, "online": bool(last_seen and now - last_seen < self.settings.offline_after),
                "last_seen": last_seen, "registered_at": n.registered_at, "heartbeats": count,
                "instances": hb.get("instances", []), "models": hb.get("models", {}),
                "counters": hb.get("counters", {}), "queues": hb.get("queues", {}), "outbox": hb.get("outbox", {}),
                "video": hb.get("video", {}), "errors": hb.get("errors", []), "info": n.info or {}}

    def close(self) -> None:
        """Store the heartbeats held and stop their writer thread."""
        self.heartbeats.close()
