"""The ``edgeloop`` command line.

Exit codes: 0 success, 1 runtime failure, 2 a bad spec, config or argument
(the message on stderr names the file, line and field).
Heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="EdgeLoop: edge-cloud AIoT platform.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
pipeline_app = typer.Typer(help="Pipelines: validate and replay offline.", no_args_is_help=True)
node_app = typer.Typer(help="Run an edge node.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(node_app, name="node")


def _fail_spec(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@pipeline_app.command("validate")
def pipeline_validate(spec: Path = typer.Argument(..., help="pipeline YAML/JSON file")) -> None:
    """Check a pipeline file; print its plan."""
    from .operators.base import SpecError
    from .pipeline import load_pipeline

    try:
        plan = load_pipeline(spec)
    except SpecError as exc:
        _fail_spec(exc)
    typer.echo(f"ok: {plan.name} ({len(plan.steps)} steps: {' -> '.join(s.op for s in plan.steps)})")


@pipeline_app.command("run")
def pipeline_run(
    spec: Path = typer.Argument(..., help="pipeline YAML/JSON file"),
    input: Path = typer.Option(..., "--input", "-i", help="Record lines (JSONL); - for stdin"),  # noqa: A002
    output: Path = typer.Option(..., "--output", "-o", help="where to write output records; - for stdout"),
    dead_letters: Optional[Path] = typer.Option(None, help="write dead letters here (JSONL)"),
    alerts: Optional[Path] = typer.Option(None, help="write alerts and notifications here (JSONL)"),
    max_line_bytes: int = typer.Option(1 << 20, help="longer input lines are dead letters"),
) -> None:
    """Replay a pipeline offline over Record lines, in event time."""
    from . import jsonio
    from .operators.base import SpecError
    from .pipeline import load_pipeline
    from .replay import replay

    try:
        plan = load_pipeline(spec)
    except SpecError as exc:
        _fail_spec(exc)
    try:
        src = sys.stdin.buffer if str(input) == "-" else open(input, "rb")  # noqa: SIM115
    except OSError as exc:
        typer.echo(f"error: cannot read {input}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    dst = sys.stdout.buffer if str(output) == "-" else open(output, "wb")  # noqa: SIM115
    with src, dst:
        result = replay(plan, src, dst, max_bytes=max_line_bytes)
    if dead_letters:
        with open(dead_letters, "wb") as f:
            for item in result.dead_letters.items:
                f.write(jsonio.dumps(item) + b"\n")
    if alerts:
        with open(alerts, "wb") as f:
            for kind, items in (("alert", result.sinks.alerts), ("notification", result.sinks.notifications),
                                ("device_output", result.sinks.actions)):
                for item in items:
                    f.write(jsonio.dumps({"kind": kind, **item}) + b"\n")
    dead = len(result.dead_letters.items) - result.bad_lines
    typer.echo(f"{result.records} records in, {result.outputs} out, {result.bad_lines} bad input lines, "
               f"{dead} dead letters in steps", err=True)
    if result.bad_lines:
        first = result.dead_letters.items[0]
        typer.echo(f"first bad line: {first['source']}: {first['reason']}", err=True)


@node_app.command("run")
def node_run(config: Path = typer.Option(..., "--config", "-c", help="node YAML")) -> None:
    """Run an edge node: connect, bind devices, run pipelines; stops cleanly on SIGTERM."""
    from .node import Node, load_node_config
    from .operators.base import SpecError

    try:
        cfg = load_node_config(config)
    except SpecError as exc:
        _fail_spec(exc)
    node = Node(cfg)
    node.run_forever()


@app.command("demo")
def demo(duration: float = typer.Option(20.0, help="seconds to run"),
         broker: Optional[str] = typer.Option(None, help="host:port of an MQTT broker; default: start one")) -> None:
    """Pump monitoring on simulated devices: prints the alerts the node raises."""
    from .demo import run_demo

    raise typer.Exit(run_demo(duration=duration, broker=broker))


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
