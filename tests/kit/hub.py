"""Test helpers for the hub: a real hub process, a PostgreSQL database per test session, node configs."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from edge_runtime.hubclient import HubClient
from edge_runtime.testing import wait_for
from hub.process import HubProcess as _HubProcess
from hub.process import child_env
from tests.kit import ROOT

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


env = child_env


class HubProcess(_HubProcess):
    """``edgeloop hub serve`` as a subprocess with the tests' admin token."""

    def __init__(self, workdir: Path, **kw: Any) -> None:
        super().__init__(workdir, admin_token=ADMIN, **kw)


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
    return client.all_uploads(**query)


__all__ = ["ADMIN", "HubProcess", "NodeProcess", "PgDatabase", "pg_available", "all_uploads", "wait_for", "ROOT"]
