"""``edgeloop loop run|history``: one iteration of the agile loop now, and the iterations so far; ``edgeloop data
pull|show``: a model's field data.

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
        report = agile_loop(overrides, parallel_retrain=parallel_retrain, reason="edgeloop loop run")
    except LoopError as exc:
        die(str(exc), FAILED)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))
    ls_url = (report.get("config") or {}).get("label_studio_url")
    for model, r in report["models"].items():
        label = r.get("label") or {}
        if label.get("project") is not None and ls_url:
            typer.echo(f"{model}: label at {ls_url.rstrip('/')}/projects/{label['project']}/data "
                       f"({label.get('sent', 0)} new tasks; the next run harvests what is labelled)", err=True)


@loop_app.command("watch")
@needs_cloud
def loop_watch(workspace: Path = Workspace,
               once: bool = typer.Option(False, "--once", help="check once, print what was decided, and exit"),
               poll: Optional[float] = typer.Option(None, "--poll", min=1,
                                                    help="seconds between checks (default EDGELOOP_DRIFT_POLL_S, 60)")
               ) -> None:
    """The drift watcher: read every model's drift alarm at the hub and emit a Prefect event for each new one
    (the agile-loop/on-drift deployment's trigger then runs the loop for that model). `edgeloop up` and
    `python -m flows.serve` run it already; use this where the loop runs from a work pool."""
    import threading

    from flows.config import LoopConfig
    from flows.drift import check, watch
    from flows.steps import LoopError

    cfg = LoopConfig.from_env(workspace=str(workspace))
    try:
        if once:
            for d in check(cfg):
                typer.echo(json.dumps(d, default=str))
            return
        watch(cfg, threading.Event(), poll or cfg.drift_poll_s)
    except LoopError as exc:
        die(str(exc), FAILED)


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
    for c in ("#", "started", "why", "seconds", "model", "sent", "labels", "candidate", "gate", "rollout"):
        t.add_column(c)
    import time as _t

    for it in its:
        rep = it["report"] or {}
        for model, r in (rep.get("models") or {}).items():
            t.add_row(str(it["id"]), _t.strftime("%Y-%m-%d %H:%M", _t.localtime(it["started"])),
                      rep.get("reason") or "-", str(rep.get("seconds", "-")), model, str((r.get("label") or {}).get("sent", 0)),
                      str((r.get("harvest") or {}).get("new_labels", 0)),
                      str((r.get("retrain") or {}).get("candidate", "-")),
                      (r.get("gate") or {}).get("why", "-"), str((r.get("rollout") or {}).get("state", "-")))
    Console().print(t)


data_app = typer.Typer(help="Field data: what nodes upload and people label, per model, versioned with DVC.",
                       no_args_is_help=True)


@data_app.command("pull")
@needs_cloud
def data_pull(model: str = typer.Argument(..., help="the model whose labels to pull"),
              workspace: Path = Workspace) -> None:
    """Finished labels from the model's Label Studio project, with the uploads they label, into its data folder
    (data/field/<model>: a new DVC version). The loop does the same at each iteration; this is for now."""
    from flows.config import LoopConfig
    from flows.harvest import harvest
    from flows.steps import LoopError

    cfg = LoopConfig.from_env(workspace=str(workspace))
    try:
        with cfg.state() as state:
            r = harvest(cfg, state, model, 0)
    except LoopError as exc:
        die(str(exc), FAILED)
    typer.echo(f"{model}: {r['new_labels']} new labels" + (f" into {r['field']}" if r.get("field") else "")
               + (f", data version {r['data_version']}" if r.get("data_version") else ""))
    for p in r["problems"]:
        typer.echo(f"skipped: {p}", err=True)


@data_app.command("show")
@needs_cloud
def data_show(model: str = typer.Argument(..., help="a model plug-in's name"), workspace: Path = Workspace) -> None:
    """The model's field data: labelled rows (or images), class balance, devices, time range, and the splits
    its holdouts come from (the most recent period; devices kept out of training)."""
    import time as _t

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from models import kit, plugins
    from models.common import load_params
    from models.stages import raw_data

    try:
        p = plugins.get(model)
    except KeyError as exc:
        die(str(exc.args[0]))
    params = load_params(workspace / "params.yaml") if (workspace / "params.yaml").exists() else {}
    folder = raw_data(workspace, model, params)
    mp = p.params(params)
    try:
        if p.input == "table":
            if not p.features:
                die(f"{model}: its plug-in names no FEATURES: its field data cannot be read generically")
            data = kit.read_table(folder, p.features, p.labels)
        else:
            size = int(mp.get("size", 64))
            data = kit.read_images(folder, p.labels, [size, size, 3])
        masks = kit.split(data["ts"], data["device"], recent=float(mp.get("recent", 0.2)),
                          holdout_devices=float(mp.get("holdout_devices", 0.2)))
    except kit.FieldDataError as exc:
        die(str(exc))
    t = Table(title=f"{model}: field data in {folder}")
    for c in ("split", "rows", *p.labels, "devices", "from", "to"):
        t.add_column(c)
    for name, mask in (("all", np.ones(len(data["y"]), bool)), *masks.items()):
        y, ts = data["y"][mask], data["ts"][mask]
        span = [_t.strftime("%Y-%m-%d %H:%M", _t.gmtime(v)) for v in (ts.min(), ts.max())] if len(ts) else ["-", "-"]
        t.add_row(name, str(int(mask.sum())), *[str(int((y == k).sum())) for k in range(len(p.labels))],
                  str(len(set(data["device"][mask]))), *span)
    Console().print(t)
