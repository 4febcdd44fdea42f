"""``edgeloop rollout``: canary model and pipeline rollouts with automatic rollback (start, status, promote,
rollback, history).

The hub's rollout controller does the work (:mod:`hub.rollouts`); these commands talk to its API with the
admin token. Only typer is imported at start-up; the commands import the rest.
Exit codes: 0 success, 1 runtime failure (hub unreachable, the rollout rolled back, a wait that timed out),
2 bad argument, unknown model, version, group or rollout, or a refused request.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn, Optional

import typer

rollout_app = typer.Typer(help="Model and pipeline rollouts: canary nodes first, then the group; automatic rollback.",
                          no_args_is_help=True)

HubUrl = typer.Option("http://127.0.0.1:8080", "--hub", envvar="EDGELOOP_HUB_URL", help="the hub's URL")
Token = typer.Option(None, "--token", envvar="EDGELOOP_TOKEN", help="the admin token (or EDGELOOP_TOKEN)")
Timeout = typer.Option(3600.0, "--timeout", help="with --wait: give up after this many seconds (exit 1)")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_COLOURS = {"serving": "green", "installing": "yellow", "pending": "dim", "failed": "red", "offline": "magenta",
            "done": "green", "done_with_offline": "yellow", "canary": "cyan", "rolling": "blue",
            "rolled_back": "red", "superseded": "dim"}


def _die(msg: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def parse_duration(text: str) -> float:
    """``60s``, ``2m``, ``1.5h``, ``500ms`` or plain seconds; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"duration {text!r}: expected a number with an optional unit ms, s, m or h (e.g. 60s)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _client(hub: str, token: Optional[str]) -> Any:
    from edge_runtime.hubclient import HubClient

    if not token:
        _die("no admin token: pass --token or set EDGELOOP_TOKEN")
    try:
        return HubClient(hub, token, timeout=30)
    except ValueError as exc:
        _die(str(exc))


def _call(fn: Any, *args: Any, **kw: Any) -> Any:
    """Run a hub call; a refusal exits 2 (1 for a 5xx), an unreachable hub 1."""
    from edge_runtime.hubclient import HubError, HubUnreachable

    try:
        return fn(*args, **kw)
    except HubError as exc:
        _die(f"{exc.detail} ({exc.status})", 1 if exc.status >= 500 else 2)
    except HubUnreachable as exc:
        _die(f"hub unreachable: {exc}", 1)


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

    from hub.rollouts import wait_rollout

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} serving"), TimeElapsedColumn()) as prog:
        task = prog.add_task(f"rollout {r['id']}: {r['state']}", total=max(1, len(r["nodes"])))

        def update(now: dict[str, Any]) -> None:
            serving = sum(1 for n in now["nodes"] if n.get("status") == "serving")
            prog.update(task, total=max(1, len(now["nodes"])), completed=serving,
                        description=f"rollout {now['id']} {_what(now)}:{now['version']}: {now['state']}")

        try:
            return _call(wait_rollout, client, r["id"], timeout, on_update=update)
        except TimeoutError as exc:
            _die(str(exc), 1)


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
    from hub.rollouts import start_rollout

    model, sep, version = ref.partition(":")
    if not sep or not model or not version:
        _die(f"expected {'PIPELINE' if pipeline else 'MODEL'}:VERSION, got {ref!r}")
    if pipeline and not version.isdigit():
        _die(f"{ref!r}: pipeline versions are whole numbers")
    group = to.removeprefix("group:")
    if not group or ":" in group:
        _die(f"--to {to!r}: expected a group name (or group:<name>)")
    try:
        watch_s = parse_duration(watch)
    except ValueError as exc:
        _die(str(exc))
    client = _client(hub, token)
    r = _call(start_rollout, client, model, version, group, canary=canary, watch_s=watch_s,
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
    client = _client(hub, token)
    if rollout_id is None:
        rows = _call(client.get, "/api/v1/rollouts?limit=1")
        if not rows:
            _die("no rollouts yet")
        r = rows[0]
    else:
        r = _call(client.get, f"/api/v1/rollouts/{rollout_id}")
    if wait:
        _finish(_wait(client, r, timeout))
    else:
        _print_rollout(r)


@rollout_app.command("promote")
def promote(rollout_id: int = typer.Argument(...), hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Give the whole group the version now, without waiting for the canaries' watch window."""
    r = _call(_client(hub, token).post, f"/api/v1/rollouts/{rollout_id}/promote")
    typer.echo(f"rollout {r['id']}: {r['state']} ({_what(r)}:{r['version']} to group {r['group']})")


@rollout_app.command("rollback")
def rollback(rollout_id: int = typer.Argument(...), hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Put the canaries (and, once rolling, the group) back on the previous version."""
    r = _call(_client(hub, token).post, f"/api/v1/rollouts/{rollout_id}/rollback")
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
    rows = _call(_client(hub, token).get, f"/api/v1/rollouts?{query}")
    t = Table(title="rollouts" + (f" of {model}" if model else "") + (f" of pipeline {pipeline}" if pipeline else ""))
    for c in ("id", "model", "version", "group", "previous", "canaries", "state", "started", "reason"):
        t.add_column(c)
    for r in rows:
        started = dt.datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        t.add_row(str(r["id"]), _what(r), r["version"], r["group"], r["previous"] or "-", ", ".join(r["canaries"]),
                  _state(r["state"]), started, r.get("reason") or "")
    Console().print(t)
