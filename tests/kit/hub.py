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


def all_uploads(client: HubClient, **query: Any) -> list[dict[str, Any]]:
    """Every upload the hub stored, in storage order."""
    return client.all_uploads(**query)


#: the databases a hub test module runs on: SQLite in `make check`, PostgreSQL too in `make test` (slow: a fresh
#: database per module, and the same tests again)
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]

__all__ = ["ADMIN", "DATABASES", "HubProcess", "NodeProcess", "PgDatabase", "pg_available", "all_uploads", "wait_for", "ROOT"]
