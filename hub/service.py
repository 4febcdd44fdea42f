"""The hub's state and the logic its API and ingest share (no HTTP here)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from .db import (
    Assignment,
    ModelDeployment,
    ModelVersion,
    Node,
    PipelineVersion,
    Product,
    Revision,
    Token,
    make_engine,
    migrate,
)
from .uploads import spec_problem

__all__ = ["HubSettings", "Hub", "SpecRejected", "canonical"]

log = logging.getLogger("edgeloop.hub")


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


def _natural(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


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
        self.models_dir = Path(settings.data_dir) / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        if settings.admin_token:
            self.ensure_admin_token(settings.admin_token)
        self._pending: dict[str, tuple[float, dict[str, Any], int]] = {}  # node -> (time, heartbeat, count)
        self._flushing: dict[str, tuple[float, dict[str, Any], int]] = {}
        self._hb_lock = threading.Lock()
        self._hb_thread: threading.Thread | None = None
        self._closed = threading.Event()
        self.flush_s = 0.25
        self._etags: dict[tuple[str, str], tuple[int, str]] = {}  # (node, group) -> (revision, etag)
        self._tokens: dict[str, tuple[float, Any]] = {}  # token -> (valid until, principal)
        self.token_cache_s = 15.0  # longer than a heartbeat interval, or every heartbeat misses
        self._nodes: dict[str, tuple[float, Node]] = {}

    # -- caches ----------------------------------------------------------------------------
    def principal_for(self, token: str) -> Any:
        """The token's principal, or None; cached for a few seconds (revocations here clear the cache;
        another hub process sees a revocation within ``token_cache_s``)."""
        from .auth import lookup

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

    @staticmethod
    def bump(s: Session) -> None:
        """Something desired states depend on changed (call inside the changing transaction)."""
        s.execute(sa.update(Revision).where(Revision.id == 1).values(value=Revision.value + 1))

    def desired_etag(self, s: Session, node: Node) -> str:
        rev = s.scalar(sa.select(Revision.value).where(Revision.id == 1))
        key = (node.name, node.group)
        hit = self._etags.get(key)
        if rev is not None and hit is not None and hit[0] == rev:
            return hit[1]
        etag = self.desired(s, node)["etag"]
        if rev is not None:  # no counter row (a database emptied by hand): no caching
            self._etags[key] = (rev, etag)
        return etag

    def ensure_admin_token(self, token: str) -> None:
        from .auth import hash_token, issue

        with self.sessions.begin() as s:
            if s.scalar(sa.select(Token.id).where(Token.hash == hash_token(token))) is None:
                issue(s, "admin", token=token, note="from EDGELOOP_ADMIN_TOKEN")

    # -- nodes ----------------------------------------------------------------------------
    # -- heartbeats: written behind, in batches -------------------------------------------------
    def record_heartbeat(self, node: str, hb: dict[str, Any]) -> None:
        """Keep the newest heartbeat per node; a writer thread stores them every ``flush_s`` in one transaction.

        A thousand nodes heartbeating cost a few transactions a second instead of one each (SQLite has one
        writer at a time); what this process has not stored yet is shown by :meth:`node_view` already.
        """
        with self._hb_lock:
            prev = self._pending.get(node)
            self._pending[node] = (time.time(), hb, (prev[2] if prev else 0) + 1)
            if self._hb_thread is None:
                self._hb_thread = threading.Thread(target=self._flush_loop, name="heartbeat-writer", daemon=True)
                self._hb_thread.start()

    def flush_heartbeats(self) -> None:
        with self._hb_lock:
            pending, self._pending = self._pending, {}
            self._flushing = pending
        try:
            if pending:
                rows = [{"n": name, "t": t, "hb": hb, "k": k} for name, (t, hb, k) in pending.items()]
                stmt = (sa.update(Node).where(Node.name == sa.bindparam("n"))
                        .values(last_seen=sa.bindparam("t"), heartbeat=sa.bindparam("hb", type_=sa.JSON),
                                heartbeats=Node.heartbeats + sa.bindparam("k")))
                with self.engine.begin() as c:
                    c.execute(stmt, rows)
        finally:
            with self._hb_lock:
                self._flushing = {}

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_s):
            try:
                self.flush_heartbeats()
            except Exception:  # the database is away: these heartbeats are lost, the next ones are not
                log.exception("storing heartbeats failed")

    def close(self) -> None:
        self._closed.set()
        self.flush_heartbeats()

    def node_view(self, n: Node, now: float | None = None) -> dict[str, Any]:
        now = now or time.time()
        hb, last_seen, count = n.heartbeat or {}, n.last_seen, n.heartbeats or 0
        with self._hb_lock:
            for buf in (self._flushing, self._pending):
                if n.name in buf:
                    last_seen, hb, k = buf[n.name]
                    count += k
        return {"name": n.name, "group": n.group, "online": bool(last_seen and now - last_seen < self.settings.offline_after),
                "last_seen": last_seen, "registered_at": n.registered_at, "heartbeats": count,
                "instances": hb.get("instances", []), "models": hb.get("models", {}),
                "counters": hb.get("counters", {}), "queues": hb.get("queues", {}), "outbox": hb.get("outbox", {}),
                "video": hb.get("video", {}), "errors": hb.get("errors", []), "info": n.info or {}}

    # -- catalogue --------------------------------------------------------------------------
    @staticmethod
    def check_product(spec: Any) -> str:
        from edge_runtime.devices.catalog import load_catalog
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
        self._check_followers(s, plan.name, spec)
        row = PipelineVersion(name=plan.name, version=(latest.version + 1) if latest else 1, spec=spec, digest=digest)
        s.add(row)
        self.bump(s)
        s.flush()
        return row, True

    @classmethod
    def _check_followers(cls, s: Session, name: str, spec: dict[str, Any]) -> None:
        """A new version of ``name`` must take the params of every assignment that follows the newest version,
        and the model versions it pins with them must be in the warehouse: those nodes would start it at once
        (SpecRejected naming the assignment otherwise)."""
        for a in s.scalars(sa.select(Assignment).where(Assignment.pipeline == name).order_by(Assignment.id)):
            if a.version is not None:
                continue
            try:
                cls.check_instance(s, spec, a.params, "<pipeline>")
            except SpecRejected as exc:
                raise SpecRejected(f"{exc} - for assignment {a.target}/{a.instance}, which follows the newest "
                                   f"version with params {a.params or {}}: pin it (with a version) or change "
                                   "it first") from None

    @staticmethod
    def check_instance(s: Session, spec: dict[str, Any], params: dict[str, Any] | None, file: str) -> None:
        """An instance of a pipeline ``spec`` with ``params`` (SpecRejected with the pipeline's own message
        otherwise): values declared, of their defaults' kind, valid in its steps, nothing a desired state could
        not carry; and each model version it pins (``apply_model: {model: name:version}``) in the warehouse
        when the model is. A model the warehouse does not know may be one the nodes register themselves, and
        is left to them."""
        from edge_runtime.operators.base import SpecError
        from edge_runtime.pipeline import parse_pipeline, pinned_models

        problem = spec_problem({"params": params}, "<assignment>") if params else None
        if problem:  # NaN, infinity, integers beyond 64 bits
            raise SpecRejected(problem)
        try:
            plan = parse_pipeline(spec, file=file, params=params)
        except SpecError as exc:
            raise SpecRejected(str(exc)) from None
        for name, version in pinned_models(plan):
            there = s.scalars(sa.select(ModelVersion.version).where(ModelVersion.name == name)).all()
            if there and version not in there:
                raise SpecRejected(f"{file}: apply_model pins model {name!r} version {version!r}, which the "
                                   f"warehouse does not have (it has {', '.join(sorted(there, key=_natural))})")

    def pinned_models(self, s: Session, node: Node) -> set[tuple[str, str]]:
        """The model versions ``node``'s instances pin: what it may download beside the version it serves."""
        from edge_runtime.operators.base import SpecError
        from edge_runtime.pipeline import parse_pipeline, pinned_models

        out: set[tuple[str, str]] = set()
        for inst in self.desired(s, node)["instances"]:
            try:
                out.update(pinned_models(parse_pipeline(inst["spec"], file="<pipeline>", params=inst.get("params"))))
            except SpecError:  # refused by the node too; it pins nothing
                continue
        return out

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
                              "devices": a.devices, **({"params": a.params} if a.params else {})})
        prods = [{"name": p.name, "version": p.version, "spec": p.spec}
                 for p in s.scalars(sa.select(Product).where(Product.name.in_(sorted(products)))).all()]
        deployed: dict[str, ModelDeployment] = {}
        for d in sorted(s.scalars(sa.select(ModelDeployment).where(
                ModelDeployment.target.in_([f"node:{node.name}", f"group:{node.group}"]))).all(),
                key=lambda d: d.target.startswith("node:")):  # node-specific wins
            deployed[d.name] = d
        doc = {"node": node.name, "instances": instances, "products": prods}
        if deployed:  # absent when none, so desired states (and their etags) without models stay as they were
            doc["models"] = {n: {"version": d.version} for n, d in sorted(deployed.items())}
        doc["etag"] = hashlib.sha256(canonical(doc)).hexdigest()[:32]
        return doc
