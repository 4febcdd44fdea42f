"""The hub's database: SQLAlchemy 2 tables, engine set-up and Alembic migrations.

SQLite by default (WAL, one file), PostgreSQL by URL (``postgresql+psycopg://...``).
The schema is owned by Alembic (``hub/migrations``); :func:`migrate` brings a
database to the newest revision and is run by ``edgeloop hub serve`` on start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Node", "Token", "Product", "PipelineVersion", "Assignment", "Upload", "Media", "Revision", "ModelVersion",
           "make_engine", "migrate", "insert_ignore"]


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


class Revision(Base):
    """One row counting changes to what desired states are made of (products, pipelines, assignments, nodes):
    a heartbeat compares it instead of recomputing the desired state."""

    __tablename__ = "revision"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger, default=0)


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


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` with Alembic (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def insert_ignore(engine: sa.Engine, table: sa.Table, key: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING for SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=[key])
