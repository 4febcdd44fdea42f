"""`edgeloop up` / `edgeloop down` as a person runs them: the commands in a subprocess start a hub, a Prefect
server with a worker serving the loop's deployments, an MLflow server and Label Studio (the broker on
127.0.0.1:1883 is used when one runs there, as on these machines); every URL answers; `down` stops
every process it started and frees the ports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_runtime.testing import wait_for
from tests.kit.cli import edgeloop

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow, pytest.mark.timeout(900)]

HEALTH = {"hub": "/health", "prefect": "/api/health", "mlflow": "/health", "label_studio": "/health"}


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def deployments(prefect: str) -> list[str]:
    r = httpx.post(f"{prefect}/api/deployments/filter", json={}, timeout=10)
    r.raise_for_status()
    return sorted(d["name"] for d in r.json())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_starts_the_stack_and_down_stops_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    try:
        started = edgeloop("up", "--workspace", str(ws), timeout=600)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        state: dict[str, Any] = json.loads((ws / "var" / "up" / "stack.json").read_text())
        services = state["services"]
        assert set(services) >= {"broker", "hub", "prefect", "mlflow", "label_studio", "loop-worker"}
        assert oct((ws / "var" / "up" / "stack.json").stat().st_mode & 0o777) == "0o600"  # it holds tokens
        for name, path in HEALTH.items():
            assert services[name]["url"] in started.stdout, started.stdout
            assert answers(services[name]["url"] + path), f"{name} does not answer at {services[name]['url']}"
        assert state["env"]["EDGELOOP_HUB_TOKEN"] in started.stdout  # the person needs it for the CLI
        # one signing key for the CLI and the worker, and what nodes must trust
        keys = state["keys"]
        assert state["env"]["EDGELOOP_KEYS_DIR"] == keys["dir"] and Path(keys["public"]).is_file()
        assert f"models are signed with key {keys['key_id']}" in " ".join(started.stdout.split()), started.stdout
        got = wait_for(lambda: (lambda d: d if len(d) >= 3 else None)(deployments(services["prefect"]["url"])), 120,
                       "the worker's deployments on the Prefect server")
        assert got == ["hourly", "nightly", "on-drift"]
        again = edgeloop("up", "--workspace", str(ws), timeout=120)  # idempotent: nothing starts twice
        assert again.returncode == 0, again.stderr
        assert json.loads((ws / "var" / "up" / "stack.json").read_text())["services"]["hub"]["pid"] == \
            services["hub"]["pid"]
    finally:
        stopped = edgeloop("down", "--workspace", str(ws), timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    pids = {n: s["pid"] for n, s in services.items() if s.get("pid")}
    for name in ("hub", "prefect", "mlflow", "label_studio", "loop-worker"):
        assert name in stopped.stdout and name in pids
    wait_for(lambda: not any(alive(p) for p in pids.values()), 30, "every process of the stack to exit")
    for name, path in HEALTH.items():
        assert not answers(services[name]["url"] + path), f"{name} still answers"
