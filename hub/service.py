"""The hub's state and the logic its API and ingest share (no HTTP here)."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from .db import Assignment, Node, PipelineVersion, Product, Token, make_engine, migrate
from .uploads import spec_problem

__all__ = ["HubSettings", "Hub", "SpecRejected", "canonical"]


@dataclass
class HubSettings:
    db_url: str = "sqlite:///var/hub/hub.db"
    data_dir: str = "var/hub"
    admin_token: str | None = None         # registered (hashed) at start when given
    max_body: int = 1 << 20                # JSON request bodies
    max_media: int = 32 << 20              # uploaded media files
    heartbeat_interval: float = 10.0       # what agents are told to use
    offline_after: float = 30.0            # no heartbeat for this long: offline
    broker: dict[str, Any] | None = None   # {host, port, username, password}: run the MQTT ingest in-process
    ingest_group: str = "edgeloop-ingest"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> HubSettings:
        env = os.environ
        s = cls(db_url=env.get("EDGELOOP_HUB_DB", cls.db_url), data_dir=env.get("EDGELOOP_HUB_DATA", cls.data_dir),
                admin_token=env.get("EDGELOOP_ADMIN_TOKEN"))
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s


class SpecRejected(ValueError):
    """A product or pipeline spec that does not validate (the node's own message)."""


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


class Hub:
    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.media_dir = Path(settings.data_dir) / "media"
        self.media_dir.mkdir(parents=True, exist_ok=True)
        if settings.admin_token:
            self.ensure_admin_token(settings.admin_token)

    def ensure_admin_token(self, token: str) -> None:
        from .auth import hash_token, issue

        with self.sessions.begin() as s:
            if s.scalar(sa.select(Token.id).where(Token.hash == hash_token(token))) is None:
                issue(s, "admin", token=token, note="from EDGELOOP_ADMIN_TOKEN")

    # -- nodes ----------------------------------------------------------------------------
    def node_view(self, n: Node, now: float | None = None) -> dict[str, Any]:
        now = now or time.time()
        hb = n.heartbeat or {}
        return {"name": n.name, "group": n.group, "online": bool(n.last_seen and now - n.last_seen < self.settings.offline_after),
                "last_seen": n.last_seen, "registered_at": n.registered_at, "heartbeats": n.heartbeats,
                "instances": hb.get("instances", []), "models": hb.get("models", {}),
                "counters": hb.get("counters", {}), "queues": hb.get("queues", {}), "outbox": hb.get("outbox", {}),
                "errors": hb.get("errors", []), "info": n.info or {}}

    # -- catalogue --------------------------------------------------------------------------
    @staticmethod
    def check_product(spec: Any) -> str:
        from edge_runtime.devices.model import load_catalog
        from edge_runtime.operators.base import SpecError

        if not isinstance(spec, dict):
            raise SpecRejected("a product is a mapping with name and properties")
        try:
            cat = load_catalog([], products_data=[("<product>", spec)])
        except SpecError as exc:
            raise SpecRejected(str(exc)) from None
        if len(cat.products) != 1:  # a {products: [...]} document: the hub stores one product per name
            raise SpecRejected(f"<product>: expected one product, got {len(cat.products)}")
        problem = spec_problem(spec, "<product>")
        if problem:
            raise SpecRejected(problem)
        (name,) = cat.products
        if len(name) > 64:
            raise SpecRejected(f"<product>, field 'name': the hub keeps product names of at most 64 characters, got {len(name)}")
        return name

    @staticmethod
    def check_pipeline(spec: Any) -> Any:
        from edge_runtime.operators.base import SpecError
        from edge_runtime.pipeline import parse_pipeline

        try:
            return parse_pipeline(spec, file="<pipeline>")
        except SpecError as exc:
            raise SpecRejected(str(exc)) from None

    def put_pipeline(self, s: Session, spec: dict[str, Any]) -> tuple[PipelineVersion, bool]:
        plan = self.check_pipeline(spec)
        problem = spec_problem(spec, "<pipeline>")
        if problem:
            raise SpecRejected(problem)
        if len(plan.name) > 100:
            raise SpecRejected(f"<pipeline>, field 'name': the hub keeps pipeline names of at most 100 characters, got {len(plan.name)}")
        digest = hashlib.sha256(canonical(plan.to_dict() | {"uplink": spec.get("uplink")})).hexdigest()
        latest = s.scalars(sa.select(PipelineVersion).where(PipelineVersion.name == plan.name)
                           .order_by(PipelineVersion.version.desc()).limit(1)).first()
        if latest is not None and latest.digest == digest:
            return latest, False
        row = PipelineVersion(name=plan.name, version=(latest.version + 1) if latest else 1, spec=spec, digest=digest)
        s.add(row)
        s.flush()
        return row, True

    def pipeline_version(self, s: Session, name: str, version: int | None) -> PipelineVersion | None:
        q = sa.select(PipelineVersion).where(PipelineVersion.name == name)
        q = q.where(PipelineVersion.version == version) if version else q.order_by(PipelineVersion.version.desc())
        return s.scalars(q.limit(1)).first()

    # -- desired state ------------------------------------------------------------------------
    def desired(self, s: Session, node: Node) -> dict[str, Any]:
        """What ``node`` should run: its own assignments over its group's, with resolved pipeline specs."""
        rows = s.scalars(sa.select(Assignment).where(
            Assignment.target.in_([f"node:{node.name}", f"group:{node.group}"]))).all()
        chosen: dict[str, Assignment] = {}
        for a in sorted(rows, key=lambda a: a.target.startswith("node:")):  # node-specific wins
            chosen[a.instance] = a
        instances = []
        products: set[str] = set()
        for name in sorted(chosen):
            a = chosen[name]
            pv = self.pipeline_version(s, a.pipeline, a.version)
            if pv is None:
                continue
            if pv.spec.get("product"):
                products.add(pv.spec["product"])
            instances.append({"instance": name, "pipeline": pv.name, "version": pv.version, "spec": pv.spec,
                              "devices": a.devices})
        prods = [{"name": p.name, "version": p.version, "spec": p.spec}
                 for p in s.scalars(sa.select(Product).where(Product.name.in_(sorted(products)))).all()]
        doc = {"node": node.name, "instances": instances, "products": prods}
        doc["etag"] = hashlib.sha256(canonical(doc)).hexdigest()[:32]
        return doc
