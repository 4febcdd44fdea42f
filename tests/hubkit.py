"""Test helpers for the hub: a real hub process, a PostgreSQL database per test session, node configs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from edge_runtime.broker import free_port, wait_port
from edge_runtime.hubclient import HubClient
from edge_runtime.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "ela_test-admin-token-0123456789"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"


def pg_available() -> str | None:
    """None when PostgreSQL answers at 127.0.0.1:5432, else the reason."""
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means: not here
        return f"PostgreSQL at 127.0.0.1:5432 did not answer: {exc}"


class PgDatabase:
    """A fresh database on the local PostgreSQL, dropped afterwards."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"edgeloop_{uuid.uuid4().hex[:10]}"
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        self.url = PG.format(db=self.name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class HubProcess:
    """``edgeloop hub serve`` as a subprocess on a fixed port (stop/start keep the port and database)."""

    def __init__(self, workdir: Path, *, db_url: str | None = None, broker_port: int | None = None,
                 heartbeat: float = 1.0) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url or f"sqlite:///{workdir}/hub.db"
        self.broker_port = broker_port
        self.heartbeat = heartbeat
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "hub.log"

    def serve_args(self) -> list[str]:
        args = ["hub", "serve", "--db", self.db_url, "--data", str(self.dir), "--port", str(self.port),
                "--admin-token", ADMIN, "--heartbeat", str(self.heartbeat)]
        return args + (["--broker", f"127.0.0.1:{self.broker_port}"] if self.broker_port else [])

    def command(self) -> list[str]:
        return [sys.executable, "-m", "edge_runtime.cli", *self.serve_args()]

    def start(self, timeout: float = 60) -> HubProcess:
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))  # noqa: SIM115
        if not wait_port(self.port, timeout=timeout):
            self.stop()
            raise RuntimeError(f"hub did not start: {self.log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            wait_port(self.port, up=False, timeout=10)

    def admin(self) -> HubClient:
        return HubClient(self.url, ADMIN)


class NodeProcess:
    """``edgeloop node run`` as a subprocess (SIGTERM or SIGKILL)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".log")

    def start(self) -> NodeProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "node", "run", "--config",
                                      str(self.config)], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))  # noqa: SIM115
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def all_uploads(client: HubClient, **query: Any) -> list[dict[str, Any]]:
    """Every upload the hub stored, in storage order."""
    from urllib.parse import urlencode

    out, after = [], 0
    while True:
        page = client.get("/api/v1/uploads?" + urlencode({**query, "after": after, "limit": 10000}))
        out.extend(page["items"])
        if not page["items"]:
            return out
        after = page["next"]


__all__ = ["ADMIN", "HubProcess", "NodeProcess", "PgDatabase", "pg_available", "all_uploads", "wait_for", "ROOT"]
