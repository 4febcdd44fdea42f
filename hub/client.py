"""The hub's API seen from a client: HTTP only (no ORM, no server code), for the CLI, the Prefect loop and
anyone scripting the hub. The transport is :class:`edge_runtime.hubclient.HubClient` (the nodes' client
too); this module adds what admin-side callers share: the rollout vocabulary, starting and waiting on a
rollout, and reading an uploaded record's values."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from edge_runtime.hubclient import HubClient, HubError, HubUnreachable

__all__ = ["ACTIVE", "KINDS", "NODE_STATES", "SETTLED", "STATES", "HubClient", "HubError", "HubUnreachable",
           "record_values", "start_rollout", "wait_rollout"]

KINDS = ("model", "pipeline")
STATES = ("canary", "rolling", "done_with_offline", "done", "rolled_back", "superseded")
ACTIVE = ("canary", "rolling", "done_with_offline")  # the controller evaluates these
SETTLED = ("done", "done_with_offline", "rolled_back", "superseded")  # what waiting stops at
NODE_STATES = ("pending", "installing", "serving", "failed", "offline")


def record_values(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """The values of an uploaded record item: a node's uplink nests them as ``record.values`` (the upload
    operator's item); an item posted with ``values`` at the top is read too."""
    rec = item.get("record")
    if isinstance(rec, Mapping) and isinstance(rec.get("values"), Mapping):
        return cast(Mapping[str, Any], rec["values"])
    values = item.get("values")
    return cast(Mapping[str, Any], values) if isinstance(values, Mapping) else item


def start_rollout(client: HubClient, name: str, version: str, group: str, canary: int = 1, watch_s: float = 60,
                  checks: Mapping[str, Any] | None = None, kind: str = "model") -> dict[str, Any]:
    """Start a rollout through the hub's API (``client``: an admin :class:`HubClient`) of the model ``name``'s
    version, or with ``kind="pipeline"`` of the pipeline ``name``'s version; returns the rollout (its ``id``,
    ``state``, ``canaries``...). HubError carries the hub's refusal."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    body: dict[str, Any] = {kind: name, "version": version, "group": group, "canary": canary, "watch_s": watch_s}
    if checks:
        body["checks"] = dict(checks)
    rollout: dict[str, Any] = client.post("/api/v1/rollouts", body)
    return rollout


def wait_rollout(client: HubClient, rollout_id: int, timeout: float, poll: float = 0.5,
                 on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Poll a rollout until it settles (``done``, ``done_with_offline``, ``rolled_back``, ``superseded``);
    returns it. TimeoutError after ``timeout`` seconds. ``on_update(rollout)`` is called after every poll."""
    deadline = time.monotonic() + timeout
    while True:
        r: dict[str, Any] = client.get(f"/api/v1/rollouts/{int(rollout_id)}")
        if on_update is not None:
            on_update(r)
        if r["state"] in SETTLED:
            return r
        if time.monotonic() >= deadline:
            raise TimeoutError(f"rollout {rollout_id} is still {r['state']} after {timeout:g} s")
        time.sleep(poll)
