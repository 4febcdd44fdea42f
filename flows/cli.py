"""``edgeloop up`` / ``down`` (the local stack) and ``edgeloop loop run`` (one iteration of the agile loop now).

Prefect, MLflow and Label Studio are imported inside the commands, never at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

loop_app = typer.Typer(help="The agile loop: run one iteration now, list past iterations.", no_args_is_help=True)
Workspace = typer.Option(Path("."), "--workspace", "-w", envvar="EDGELOOP_WORKSPACE",
                         help="params.yaml, dvc.yaml, data/, artifacts/, var/")


@loop_app.command("run")
def loop_run(workspace: Path = Workspace,
             models: Optional[str] = typer.Option(None, help="comma-separated model names (default: pump_anomaly)"),
             group: Optional[str] = typer.Option(None, help="roll a promoted version out to this node group"),
             parallel_retrain: Optional[bool] = typer.Option(
                 None, "--parallel-retrain/--sequential-retrain",
                 help="retrain the models due at the same time on Prefect's Dask task runner (default: "
                      "EDGELOOP_PARALLEL_RETRAIN, off)")) -> None:
    """One iteration now: collect, label, harvest, retrain, gate, package, roll out (a Prefect flow run)."""
    from flows.loop import agile_loop
    from flows.steps import LoopError

    overrides: dict = {"workspace": str(workspace)}
    if models:
        overrides["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if group:
        overrides["group"] = group
    try:
        report = agile_loop(overrides, parallel_retrain=parallel_retrain)
    except LoopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))


@loop_app.command("history")
def loop_history(workspace: Path = Workspace) -> None:
    """Past iterations: when, how long, labels, what was promoted."""
    from rich.console import Console
    from rich.table import Table

    from flows.state import LoopState

    with LoopState(workspace / "var" / "loop" / "state.db") as st:
        its = st.iterations()
    t = Table(title="agile loop iterations")
    for c in ("#", "started", "seconds", "model", "sent", "labels", "candidate", "gate", "rollout"):
        t.add_column(c)
    import time as _t

    for it in its:
        rep = it["report"] or {}
        for model, r in (rep.get("models") or {}).items():
            t.add_row(str(it["id"]), _t.strftime("%Y-%m-%d %H:%M", _t.localtime(it["started"])),
                      str(rep.get("seconds", "-")), model, str((r.get("label") or {}).get("sent", 0)),
                      str((r.get("harvest") or {}).get("new_labels", 0)),
                      str((r.get("retrain") or {}).get("candidate", "-")),
                      (r.get("gate") or {}).get("why", "-"), str((r.get("rollout") or {}).get("state", "-")))
    Console().print(t)


def up(workspace: Path = Workspace) -> None:
    """Start the local stack: broker (unless one runs), hub, Prefect server + the loop's deployments, MLflow UI,
    Label Studio. Prints the URLs and tokens; `edgeloop down` stops it."""
    from rich.console import Console
    from rich.table import Table

    from flows.up import up as start

    console = Console()
    try:
        state = start(workspace, say=lambda m: console.print(f"[bold]{m}[/]"))
    except (RuntimeError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    t = Table(title="EdgeLoop stack (edgeloop down stops it)")
    t.add_column("service")
    t.add_column("url")
    t.add_column("log")
    for name, s in state["services"].items():
        t.add_row(name, s.get("url") or "-", s.get("log") or ("external" if s.get("external") else "-"))
    console.print(t)
    env = state.get("env", {})
    console.print("export " + " ".join(f"{k}={env[k]}" for k in ("EDGELOOP_HUB_URL", "EDGELOOP_HUB_TOKEN",
                                                                 "EDGELOOP_LABEL_STUDIO_URL",
                                                                 "EDGELOOP_LABEL_STUDIO_TOKEN", "PREFECT_API_URL")))
    console.print(f"EDGELOOP_TOKEN={env['EDGELOOP_HUB_TOKEN']} for the hub's CLI commands; Label Studio login: "
                  f"edgeloop@example.com / {state['tokens']['label_studio_password']} (kept in var/up/stack.json)")


def down(workspace: Path = Workspace) -> None:
    """Stop what `edgeloop up` started."""
    from flows.up import down as stop

    stopped = stop(workspace)
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")
