"""Test helpers for the hub: a real hub process with the tests' admin token, node processes, PostgreSQL
databases (the processes and databases themselves come from edgeloop.devkit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_runtime.hubclient import HubClient
from edge_runtime.testing import wait_for
from edgeloop.devkit.hub import HubProcess as _HubProcess
from edgeloop.devkit.hub import NodeProcess, child_env
from edgeloop.devkit.postgres import PgDatabase, pg_available
from tests.kit import ROOT

ADMIN = "ela_test-admin-token-0123456789"


env = child_env


class HubProcess(_HubProcess):
    """``edgeloop hub serve`` as a subprocess with the tests' admin token."""

    def __init__(self, workdir: Path, **kw: Any) -> None:
        super().__init__(workdir, admin_token=ADMIN, **kw)


def drift_point(admin: HubClient, node: HubClient, name: str, model: str, version: str,
                summary: dict[str, Any], timeout: float = 20) -> None:
    """Heartbeat ``name`` with a drift ``summary`` of ``model:version`` until the hub stored one more point of it
    (the hub keeps at most one per ``--drift-every`` seconds)."""
    def points() -> int:
        series = admin.get(f"/api/v1/models/{model}/drift?node={name}")["series"]
        return sum(len(s["points"]) for s in series if s["version"] == version)

    before = points()
    hb = {"models": {"models": {model: {"active": version, "drift": {version: summary}}}}}
    wait_for(lambda: node.post(f"/api/v1/nodes/{name}/heartbeat", hb) is not None and points() > before, timeout,
             f"a drift point of {model}:{version} from {name} at the hub")


def all_uploads(client: HubClient, **query: Any) -> list[dict[str, Any]]:
    """Every upload the hub stored, in storage order."""
    return client.all_uploads(**query)


#: the databases a hub test module runs on: SQLite in `make check`, PostgreSQL too in `make test` (slow: a fresh
#: database per module, and the same tests again)
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]

__all__ = ["ADMIN", "DATABASES", "HubProcess", "drift_point", "NodeProcess", "PgDatabase", "pg_available", "all_uploads", "wait_for", "ROOT"]
