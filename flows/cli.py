"""``edgeloop loop run|history``: one iteration of the agile loop now, and the iterations so far.

Prefect, MLflow and Label Studio are imported inside the commands, never at start-up; on an install without
the cloud extra the commands say which extra to install. Exit codes follow :mod:`edge_runtime.clikit`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edge_runtime.clikit import FAILED, die, needs_cloud

loop_app = typer.Typer(help="The agile loop: run one iteration now, list past iterations.", no_args_is_help=True)
Workspace = typer.Option(Path("."), "--workspace", "-w", envvar="EDGELOOP_WORKSPACE",
                         help="params.yaml, dvc.yaml, data/, artifacts/, var/")


@loop_app.command("run")
@needs_cloud
def loop_run(workspace: Path = Workspace,
             models: Optional[str] = typer.Option(None, help="comma-separated model names (default: every model of the workspace)"),
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
        die(str(exc), FAILED)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))


@loop_app.command("history")
@needs_cloud
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
