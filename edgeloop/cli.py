"""``edgeloop``: the one command line of EdgeLoop, the front door.

It composes the commands of each part from where they live: the edge node's (``edge_runtime.cli``), the
hub's (``hub.cli``, ``hub.rollout_cli``), the models' (``models.cli``) and the loop's (``flows.cli``), and
adds its own: ``up``/``down`` (the local stack) and ``demo``. Exit codes and messages follow
:mod:`edge_runtime.clikit`: 0 ok; 1 a service unreachable, a refusal or a failed operation; 2 bad input.
Only typer is imported at start-up: each command imports what it needs, and the cloud half's commands
say which extra to install when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edge_runtime import cli as edge
from edge_runtime.clikit import die, needs_cloud, require
from flows.cli import Workspace, data_app, loop_app
from hub import cli as hub
from hub.rollout_cli import rollout_app
from models.cli import model_app

__all__ = ["app", "main"]

app = typer.Typer(help="EdgeLoop: edge-cloud AIoT platform.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _group(help_text: str, *parts: typer.Typer) -> typer.Typer:
    """One command group made of the commands (and subgroups) several parts register under the same name."""
    group = typer.Typer(help=help_text, no_args_is_help=True)
    for part in parts:
        group.registered_commands.extend(part.registered_commands)
        group.registered_groups.extend(part.registered_groups)
    return group


app.add_typer(_group("Nodes: run one here; create them, list them and give them tokens at the hub.",
                     edge.node_app, hub.node_app), name="node")
app.add_typer(_group("Pipelines: validate and replay offline; publish, assign and list them at the hub.",
                     edge.pipeline_app, hub.pipeline_app), name="pipeline")
app.add_typer(hub.hub_app, name="hub")
app.add_typer(hub.product_app, name="product")
app.add_typer(edge.keys_app, name="keys")
app.add_typer(edge.onvif_app, name="onvif")
app.add_typer(model_app, name="model")
app.add_typer(rollout_app, name="rollout")
app.add_typer(loop_app, name="loop")
app.add_typer(data_app, name="data")


@app.command("demo")
@needs_cloud
def demo(duration: float = typer.Option(20.0, help="seconds the simulated pumps run"),
         broker: Optional[str] = typer.Option(None, help="host:port of an MQTT broker; default: start one"),
         scenario: str = typer.Option("all", help="all | pumps | cameras | loop"),
         cameras: int = typer.Option(2, min=1, max=8, help="simulated street cameras"),
         frames: int = typer.Option(300, min=40, help="frames per camera video (10 fps)"),
         summary: Optional[Path] = typer.Option(None, help="also write the figures to this JSON file"),
         loop: bool = typer.Option(True, "--loop/--no-loop", help="run one agile-loop iteration and a rollout"),
         report: Optional[Path] = typer.Option(Path("var/demo-report"), help="folder for the closing report "
                                               "(markdown, PNG plots, HTML)")) -> None:
    """A hub and edge nodes on SYNTHETIC devices: pump monitoring, sewage-dumping detection on street cameras
    (alerts with JPEGs at the hub), drift and one agile-loop iteration with a rollout, and a closing report.
    Exit 1 when something the demo shows did not happen."""
    import sqlalchemy  # noqa: F401 - the cloud extra, checked before a broker or hub is started

    from .demo import SCENARIOS, run_demo

    if scenario not in SCENARIOS:
        die(f"--scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    raise typer.Exit(run_demo(duration=duration, broker=broker, scenario=scenario, cameras=cameras, frames=frames,
                              summary=summary, loop=loop, report=report))


@app.command("up")
@needs_cloud
def up(workspace: Path = Workspace) -> None:
    """Start the local stack: broker (unless one runs), hub, Prefect server + the loop's deployments, MLflow UI,
    Label Studio. Prints the URLs and tokens; `edgeloop down` stops it."""
    from rich.console import Console
    from rich.table import Table

    from .stack import up as start

    require("prefect", "mlflow", "sqlalchemy", "fastapi", "uvicorn")  # its services run in child processes
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
                                                                 "EDGELOOP_LABEL_STUDIO_TOKEN", "PREFECT_API_URL",
                                                                 "EDGELOOP_KEYS_DIR")))
    console.print(f"EDGELOOP_HUB_TOKEN is the hub's admin token: the CLI's commands and the dashboard's sign-in take "
                  f"it; Label Studio login: edgeloop@example.com / {state['tokens']['label_studio_password']} "
                  "(kept in var/up/stack.json)")
    keys = state.get("keys") or {}
    if keys:
        console.print(f"models are signed with key {keys['key_id']} ({keys['dir']}); nodes trust it with "
                      f"`models: {{trusted_keys: [{keys['public']}]}}` in node.yaml", markup=False)


@app.command("down")
def down(workspace: Path = Workspace) -> None:
    """Stop what `edgeloop up` started."""
    from .stack import down as stop

    stopped = stop(workspace)
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
