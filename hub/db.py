"""The hub's database: SQLAlchemy 2 tables, engine set-up and Alembic migrations.

SQLite by default (WAL, one file), PostgreSQL by URL (``postgresql+psycopg://...``).
The schema is owned by Alembic (``hub/migrations``); :func:`migrate` brings a
database to the newest revision and is run by ``edgeloop hub serve`` on start.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["bump_revision", "deleted", "deployed_version", "set_deployment", "set_assignment", "Base", "Node", "Token", "Product", "PipelineVersion", "Assignment", "Upload", "Media", "Revision", "ModelVersion",
           "ModelDeployment", "Rollout", "ModelDrift", "DriftSettings",
           "make_engine", "migrate", "head_revision", "insert_ignore"]


class Base(DeclarativeBase):
    pass


def _now() -> float:
    return time.time()


class Node(Base):
    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    group: Mapped[str] = mapped_column(sa.String(64), default="default", index=True)
    created_at: Mapped[float] = mapped_column(sa.Float, default=_now)
    registered_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    last_seen: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    info: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)       # from register
    heartbeat: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)  # the last one
    heartbeats: Mapped[int] = mapped_column(sa.Integer, default=0)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)  # sha256 hex; the token itself is never stored
    kind: Mapped[str] = mapped_column(sa.String(8))  # admin | node
    node: Mapped[str | None] = mapped_column(sa.String(64), sa.ForeignKey("nodes.name", ondelete="CASCADE"),
                                             nullable=True, index=True)
    note: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[float] = mapped_column(sa.Float, default=_now)
    revoked_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)


class Product(Base):
    __tablename__ = "products"
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    updated_at: Mapped[float] = mapped_column(sa.Float, default=_now)


class PipelineVersion(Base):
    __tablename__ = "pipelines"
    __table_args__ = (sa.UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(100), index=True)
    version: Mapped[int] = mapped_column(sa.Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    digest: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[float] = mapped_column(sa.Float, default=_now)


class Assignment(Base):
    """A pipeline instance a node (or every node of a group) should run, with its device bindings."""

    __tablename__ = "assignments"
    __table_args__ = (sa.UniqueConstraint("target", "instance"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(sa.String(80), index=True)  # "node:<name>" or "group:<name>"
    instance: Mapped[str] = mapped_column(sa.String(100))
    pipeline: Mapped[str] = mapped_column(sa.String(100))
    version: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)  # None: the newest
    devices: Mapped[list[str] | None] = mapped_column(sa.JSON, nullable=True)  # None: all of the product
    params: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)  # None: the pipeline's defaults
    created_at: Mapped[float] = mapped_column(sa.Float, default=_now)


class Upload(Base):
    """Everything nodes upload: records (inference inputs/outputs), alerts, notifications.

    ``id`` is the node's id for the item: stored once whatever the redeliveries.
    ``seq`` is the node's per-device sequence number: per-device order.
    """

    __tablename__ = "uploads"
    __table_args__ = (sa.Index("uploads_node_device_seq", "node", "device", "seq"),
                      sa.Index("uploads_kind_pk", "kind", "pk"))
    pk: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(140), unique=True)  # "<node>/<the node's id>"
    node: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(16))
    device: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    seq: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    instance: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    ts: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    received_at: Mapped[float] = mapped_column(sa.Float)
    body: Mapped[str] = mapped_column(sa.Text)  # JSON text as the node sent it (after desensitisation)


class ModelVersion(Base):
    """The model warehouse: one signed bundle (a BentoML ``.bento`` archive) per model version."""

    __tablename__ = "model_versions"
    __table_args__ = (sa.UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(64), index=True)
    version: Mapped[str] = mapped_column(sa.String(64))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    path: Mapped[str] = mapped_column(sa.String(500))
    manifest: Mapped[str] = mapped_column(sa.Text)  # the canonical manifest the signature covers, as signed
    signature: Mapped[str] = mapped_column(sa.String(200))
    key_id: Mapped[str] = mapped_column(sa.String(32))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(sa.Float, default=_now)


class ModelDeployment(Base):
    """Which version of a model a node (``node:<name>``) or group (``group:<name>``) should serve."""

    __tablename__ = "model_deployments"
    __table_args__ = (sa.UniqueConstraint("target", "name"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(sa.String(80), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    version: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[float] = mapped_column(sa.Float, default=_now)


class ModelDrift(Base):
    """A node's drift score for one model version at one time (from its heartbeat; :mod:`hub.drift`)."""

    __tablename__ = "model_drift"
    __table_args__ = (sa.Index("ix_model_drift_model_ts", "model", "ts"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(64))
    version: Mapped[str] = mapped_column(sa.String(64))
    node: Mapped[str] = mapped_column(sa.String(64))
    ts: Mapped[float] = mapped_column(sa.Float)
    score: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    detail: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)


class DriftSettings(Base):
    """A model's drift alarm: over ``threshold`` for ``sustain_s`` seconds on a node."""

    __tablename__ = "drift_settings"
    model: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(sa.Float)
    sustain_s: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[float] = mapped_column(sa.Float, default=_now)


def deployed_version(s: Any, target: str, model: str) -> str | None:
    """The version of ``model`` deployed to ``target`` (``node:<n>`` / ``group:<g>``), None when none."""
    d = s.scalars(sa.select(ModelDeployment).where(ModelDeployment.target == target,
                                                   ModelDeployment.name == model)).first()
    return d.version if d is not None else None


def set_deployment(s: Any, target: str, model: str, version: str | None) -> None:
    """Deploy ``model`` at ``version`` to ``target``; ``None`` removes the deployment. The caller bumps the
    desired-state revision and commits."""
    d = s.scalars(sa.select(ModelDeployment).where(ModelDeployment.target == target,
                                                   ModelDeployment.name == model)).first()
    if version is None:
        if d is not None:
            s.delete(d)
    elif d is None:
        s.add(ModelDeployment(target=target, name=model, version=version))
    else:
        d.version = version


def set_assignment(s: Any, target: str, instance: str, pipeline: str | None, version: int | None = None,
                   devices: list[str] | None = None, params: dict[str, Any] | None = None) -> None:
    """Assign ``instance`` of ``pipeline`` (at ``version``, None: the newest; its ``devices`` and ``params``) to
    ``target``; ``pipeline=None`` removes the assignment. The caller bumps the desired-state revision and
    commits."""
    a = s.scalars(sa.select(Assignment).where(Assignment.target == target, Assignment.instance == instance)).first()
    if pipeline is None:
        if a is not None:
            s.delete(a)
        return
    if a is None:
        s.add(a := Assignment(target=target, instance=instance, pipeline=pipeline))
    a.pipeline, a.version, a.devices, a.params = pipeline, version, devices, params or None


class Rollout(Base):
    """A model or pipeline rollout to a group: canary nodes first, then the whole group; rolled back on bad
    signals. ``model`` holds the name of what is rolled out, ``kind`` says which (``model``, ``pipeline``).

    The controller (:mod:`hub.rollouts`) keeps everything it needs here, so a hub restart resumes it:
    ``state`` (canary, rolling, done_with_offline, done, rolled_back, superseded), the canary nodes, what
    the canaries' node-level deployments were before (``saved``), per-node counter baselines and the
    confidence tallies (``stats``), when the canaries became healthy (``healthy_since``) and the last
    per-node view (``nodes``).
    """

    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(100), index=True)  # the model's or the pipeline's name
    kind: Mapped[str] = mapped_column(sa.String(16), default="model", server_default="model")
    version: Mapped[str] = mapped_column(sa.String(64))
    group: Mapped[str] = mapped_column(sa.String(64))
    previous: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)  # the group's version before
    canary: Mapped[int] = mapped_column(sa.Integer)
    watch_s: Mapped[float] = mapped_column(sa.Float)
    checks: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    state: Mapped[str] = mapped_column(sa.String(20), index=True)
    canaries: Mapped[list[str]] = mapped_column(sa.JSON)
    saved: Mapped[dict[str, Any]] = mapped_column(sa.JSON)   # canary node -> its node-level version before
    stats: Mapped[dict[str, Any]] = mapped_column(sa.JSON)   # baselines and confidence tallies
    nodes: Mapped[dict[str, Any]] = mapped_column(sa.JSON)   # node -> {status, reason}: the last evaluation
    healthy_since: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[float] = mapped_column(sa.Float, default=_now)
    updated_at: Mapped[float] = mapped_column(sa.Float, default=_now)
    finished_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)


class Revision(Base):
    """One row counting changes to what desired states are made of (products, pipelines, assignments, nodes):
    a heartbeat compares it instead of recomputing the desired state."""

    __tablename__ = "revision"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger, default=0)


def deleted(s: Any, stmt: sa.Delete) -> int:
    """Execute a DELETE in session ``s``; how many rows it deleted."""
    result: sa.CursorResult[Any] = s.execute(stmt)
    return result.rowcount


def bump_revision(s: Any) -> None:
    """Something desired states depend on changed (call inside the changing transaction): heartbeats see a new
    revision and recompute the desired state."""
    s.execute(sa.update(Revision).where(Revision.id == 1).values(value=Revision.value + 1))


class Media(Base):
    __tablename__ = "media"
    id: Mapped[str] = mapped_column(sa.String(140), primary_key=True)  # "<node>/<the node's media id>"
    node: Mapped[str] = mapped_column(sa.String(64), index=True)
    upload_id: Mapped[str | None] = mapped_column(sa.String(140), nullable=True, index=True)
    content_type: Mapped[str] = mapped_column(sa.String(100))
    size: Mapped[int] = mapped_column(sa.Integer)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    path: Mapped[str] = mapped_column(sa.String(500))
    received_at: Mapped[float] = mapped_column(sa.Float, default=_now)


def make_engine(url: str) -> sa.Engine:
    """An engine for the hub's URL; SQLite gets WAL, a busy timeout and a thread-safe pool."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                  pool_size=20, max_overflow=-1)  # never wait for a connection

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest revision of the hub's migrations (read from their scripts once per process)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the hub's migrations have no head"
    return head


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` with Alembic (idempotent). A database already at the newest revision
    costs one query: Alembic's scripts are only run (and loaded) when there is something to upgrade."""
    from alembic import command
    from alembic.migration import MigrationContext

    if revision == "head":
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_heads() == (head_revision(),):
                return
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def insert_ignore(engine: sa.Engine, table: sa.Table, key: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING for SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=[key])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=[key])
