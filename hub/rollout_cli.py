"""``edgeloop rollout``: canary model and pipeline rollouts with automatic rollback (start, status, promote,
rollback, history).

The hub's rollout controller does the work (:mod:`hub.rollouts`); these commands talk to its API with the
admin token, over HTTP only (:mod:`hub.client`). Only typer is imported at start-up; the commands import the
rest. Exit codes and messages follow :mod:`edge_runtime.clikit` (a rollout that rolled back, or a wait that
timed out, is a failed operation: 1).
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from edge_runtime.clikit import FAILED, HubUrl, Token, die, duration, hub_call, hub_client

rollout_app = typer.Typer(help="Model and pipeline rollouts: canary nodes first, then the group; automatic rollback.",
                          no_args_is_help=True)

Timeout = typer.Option(3600.0, "--timeout", help="with --wait: give up after this many seconds (exit 1)")
_COLOURS = {"serving": "green", "installing": "yellow", "pending": "dim", "failed": "red", "offline": "magenta",
            "done": "green", "done_with_offline": "yellow", "canary": "cyan", "rolling": "blue",
            "rolled_back": "red", "superseded": "dim"}  # a node's "rolled_back": back on the previous version










def _what(r: dict[str, Any]) -> str:
    """``model`` or ``pipeline name``: what a rollout moves."""
    name = r.get("name") or r.get("model") or r.get("pipeline")
    return f"pipeline {name}" if r.get("kind") == "pipeline" else str(name)


def _state(state: str) -> str:
    c = _COLOURS.get(state)
    return f"[{c}]{state}[/{c}]" if c else state


def _print_rollout(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"rollout {r['id']}: {_what(r)}:{r['version']} to group {r['group']} "
                    f"(previous {r['previous'] or 'none'}) - {_state(r['state'])}")
    for c in ("node", "canary", "status", "reason"):
        t.add_column(c)
    for n in r["nodes"]:
        t.add_row(n["node"], "yes" if n.get("canary") else "", _state(n.get("status", "?")), n.get("reason") or "")
    console.print(t)
    if r.get("reason"):
        console.print(f"{r['state']}: {r['reason']}", markup=False)
    if r.get("waiting"):
        console.print(f"waiting for offline node(s): {', '.join(r['waiting'])}", markup=False)


def _wait(client: Any, r: dict[str, Any], timeout: float) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from hub.client import wait_rollout

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} serving"), TimeElapsedColumn()) as prog:
        task = prog.add_task(f"rollout {r['id']}: {r['state']}", total=max(1, len(r["nodes"])))

        def update(now: dict[str, Any]) -> None:
            serving = sum(1 for n in now["nodes"] if n.get("status") == "serving")
            prog.update(task, total=max(1, len(now["nodes"])), completed=serving,
                        description=f"rollout {now['id']} {_what(now)}:{now['version']}: {now['state']}")

        try:
            done: dict[str, Any] = hub_call(wait_rollout, client, r["id"], timeout, on_update=update)
            return done
        except TimeoutError as exc:
            die(str(exc), FAILED)


def _finish(r: dict[str, Any]) -> None:
    _print_rollout(r)
    if r["state"] == "rolled_back":
        raise typer.Exit(1)


@rollout_app.command("start")
def start(ref: str = typer.Argument(..., help="MODEL:VERSION (in the warehouse), or with --pipeline PIPELINE:VERSION"),
          to: str = typer.Option(..., "--to", help="the node group (GROUP or group:GROUP)"),
          pipeline: bool = typer.Option(False, "--pipeline", help="REF is a pipeline at the hub (its instances in the "
                                                                  "group must be pinned to a version)"),
          canary: int = typer.Option(1, "--canary", min=1, help="nodes that get the version first"),
          watch: str = typer.Option("60s", "--watch", help="how long the canaries must pass their checks (60s, 2m)"),
          wait: bool = typer.Option(False, "--wait", help="follow it until done or rolled back"),
          timeout: float = Timeout, hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Roll a warehouse version (or a pipeline version) out to a group: canaries first, the group after --watch
    of passing checks."""
    from hub.client import start_rollout

    name, sep, version = ref.partition(":")
    if not sep or not name or not version:
        die(f"expected {'PIPELINE' if pipeline else 'MODEL'}:VERSION, got {ref!r}")
    if pipeline and not version.isdigit():
        die(f"{ref!r}: pipeline versions are whole numbers")
    group = to.removeprefix("group:")
    if not group or ":" in group:
        die(f"--to {to!r}: expected a group name (or group:<name>)")
    watch_s = duration(watch, "--watch", zero=True)
    client = hub_client(hub, token)
    r = hub_call(start_rollout, client, name, version, group, canary=canary, watch_s=watch_s,
              kind="pipeline" if pipeline else "model")
    typer.echo(f"rollout {r['id']}: {_what(r)}:{r['version']} to group {group}, canaries {', '.join(r['canaries'])} "
               f"(previous {r['previous'] or 'none'})")
    if wait:
        _finish(_wait(client, r, timeout))


@rollout_app.command("status")
def status(rollout_id: Optional[int] = typer.Argument(None, help="rollout id (default: the newest)"),
           wait: bool = typer.Option(False, "--wait", help="follow it until done or rolled back"),
           timeout: float = Timeout, hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """A rollout's state and every node's: pending, installing, serving, failed or offline."""
    client = hub_client(hub, token)
    if rollout_id is None:
        rows = hub_call(client.get, "/api/v1/rollouts?limit=1")
        if not rows:
            die("no rollouts yet")
        r = rows[0]
    else:
        r = hub_call(client.get, f"/api/v1/rollouts/{rollout_id}")
    if wait:
        _finish(_wait(client, r, timeout))
    else:
        _print_rollout(r)


@rollout_app.command("promote")
def promote(rollout_id: int = typer.Argument(...), hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Give the whole group the version now, without waiting for the canaries' watch window."""
    r = hub_call(hub_client(hub, token).post, f"/api/v1/rollouts/{rollout_id}/promote")
    typer.echo(f"rollout {r['id']}: {r['state']} ({_what(r)}:{r['version']} to group {r['group']})")


@rollout_app.command("rollback")
def rollback(rollout_id: int = typer.Argument(...), hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Put the canaries (and, once rolling, the group) back on the previous version."""
    r = hub_call(hub_client(hub, token).post, f"/api/v1/rollouts/{rollout_id}/rollback")
    typer.echo(f"rollout {r['id']}: {r['state']} (group {r['group']} back to {_what(r)}:{r['previous'] or 'none'})")


@rollout_app.command("history")
def history(model: Optional[str] = typer.Option(None, "--model", help="only this model's rollouts"),
            pipeline: Optional[str] = typer.Option(None, "--pipeline", help="only this pipeline's rollouts"),
            limit: int = typer.Option(50, "--limit", min=1, max=10000), hub: str = HubUrl,
            token: Optional[str] = Token) -> None:
    """Rollouts, newest first."""
    import datetime as dt
    from urllib.parse import urlencode

    from rich.console import Console
    from rich.table import Table

    query = urlencode({"limit": limit, **({"model": model} if model else {}),
                       **({"pipeline": pipeline} if pipeline else {})})
    rows = hub_call(hub_client(hub, token).get, f"/api/v1/rollouts?{query}")
    t = Table(title="rollouts" + (f" of {model}" if model else "") + (f" of pipeline {pipeline}" if pipeline else ""))
    for c in ("id", "model", "version", "group", "previous", "canaries", "state", "started", "reason"):
        t.add_column(c)
    for r in rows:
        started = dt.datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        t.add_row(str(r["id"]), _what(r), r["version"], r["group"], r["previous"] or "-", ", ".join(r["canaries"]),
                  _state(r["state"]), started, r.get("reason") or "")
    Console().print(t)
