"""The edge half of the ``edgeloop`` command line: run a node, validate and replay pipelines offline, find
ONVIF cameras, make model-signing keys. ``edgeloop.cli`` composes these with the hub's, the models' and the
loop's commands; exit codes and messages follow :mod:`edge_runtime.clikit`.

Heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .clikit import ParamOpt, die, fail_spec, params

__all__ = ["pipeline_app", "node_app", "onvif_app", "keys_app"]

pipeline_app = typer.Typer(help="Pipelines: validate and replay offline.", no_args_is_help=True)
node_app = typer.Typer(help="Run an edge node.", no_args_is_help=True)
onvif_app = typer.Typer(help="ONVIF cameras: discover them on the network.", no_args_is_help=True)
keys_app = typer.Typer(help="Model-signing keys: init, show.", no_args_is_help=True)


@pipeline_app.command("validate")
def pipeline_validate(spec: Path = typer.Argument(..., help="pipeline YAML/JSON file"),
                      param: Optional[list[str]] = ParamOpt) -> None:
    """Check a pipeline file (with an instance's --param values); print its plan."""
    from .operators.base import SpecError
    from .pipeline import load_pipeline

    try:
        plan = load_pipeline(spec, params(param))
    except SpecError as exc:
        fail_spec(exc)
    typer.echo(f"ok: {plan.name} ({len(plan.steps)} steps: {' -> '.join(s.op for s in plan.steps)})")


@pipeline_app.command("run")
def pipeline_run(
    spec: Path = typer.Argument(..., help="pipeline YAML/JSON file"),
    input: Path = typer.Option(..., "--input", "-i", help="Record lines (JSONL); - for stdin"),  # noqa: A002
    output: Path = typer.Option(..., "--output", "-o", help="where to write output records; - for stdout"),
    dead_letters: Optional[Path] = typer.Option(None, help="write dead letters here (JSONL)"),
    alerts: Optional[Path] = typer.Option(None, help="write alerts and notifications here (JSONL)"),
    max_line_bytes: int = typer.Option(1 << 20, help="longer input lines are dead letters"),
    param: Optional[list[str]] = ParamOpt,
) -> None:
    """Replay a pipeline offline over Record lines, in event time."""
    from . import jsonio
    from .operators.base import SpecError
    from .pipeline import load_pipeline
    from .replay import replay

    try:
        plan = load_pipeline(spec, params(param))
    except SpecError as exc:
        fail_spec(exc)
    try:
        src = sys.stdin.buffer if str(input) == "-" else open(input, "rb")  # noqa: SIM115
    except OSError as exc:
        die(f"cannot read {input}: {exc.strerror}")
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


@onvif_app.command("discover")
def onvif_discover(timeout: float = typer.Option(3.0, help="seconds to collect answers"),
                   to: Optional[str] = typer.Option(None, help="probe one host:port (default: multicast on the LAN)"),
                   json_out: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Find ONVIF cameras (WS-Discovery Probe for NetworkVideoTransmitter devices)."""
    import json

    from edge_runtime.connectors.onvif import discover

    target = None
    if to:
        host, _, port = to.rpartition(":")
        if not host or not port.isdigit():
            die(f"--to: expected host:port, got {to!r}")
        target = (host, int(port))
    found = discover(timeout, target)
    if json_out:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo(f"no ONVIF camera answered within {timeout:g} s")
    for cam in found:
        names = [s.rsplit("/", 1)[-1] for s in cam["scopes"] if "/name/" in s]
        typer.echo(f"{cam['from']:15s} {' '.join(cam['xaddrs'])}  {' '.join(names)}")


@node_app.command("run")
def node_run(config: Path = typer.Option(..., "--config", "-c", help="node YAML")) -> None:
    """Run an edge node: connect, bind devices, run pipelines; stops cleanly on SIGTERM.

    Models run one OpenMP/BLAS thread each unless OMP_NUM_THREADS says otherwise: a node's pipelines
    already run in parallel threads, and spinning model thread pools starve them on small machines."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before scikit-learn or torch is loaded (lazily, by a model)
    from .node import Node, load_node_config
    from .operators.base import SpecError

    try:
        cfg = load_node_config(config)
    except SpecError as exc:
        fail_spec(exc)
    node = Node(cfg)
    node.run_forever()


# -- model-signing keys -----------------------------------------------------------------------
KeysDir = typer.Option(None, "--dir", envvar="EDGELOOP_KEYS_DIR",
                       help="key directory (default: ~/.config/edgeloop/keys, or EDGELOOP_KEYS_DIR)")


def _keys_dir(directory: Optional[Path]) -> Path:
    from .signing import default_keys_dir

    return directory.expanduser() if directory else default_keys_dir()


@keys_app.command("init")
def keys_init(directory: Optional[Path] = KeysDir,
              force: bool = typer.Option(False, "--force", help="replace an existing key")) -> None:
    """Make an Ed25519 key pair for signing model bundles: DIR/signing.key (0600) and DIR/signing.pub."""
    from .signing import PRIVATE_KEY_FILE, init_keys, key_id, load_private_key

    d = _keys_dir(directory)
    try:
        priv, pub = init_keys(d, force=force)
    except FileExistsError:
        die(f"{d / PRIVATE_KEY_FILE} exists: refusing to replace a signing key; --force replaces it "
            "(nodes that trust only the new key then refuse bundles signed with the old one)")
    except OSError as exc:
        die(f"cannot write keys to {d}: {exc.strerror or exc}")
    typer.echo(f"key id {key_id(load_private_key(priv).public_key())}")
    typer.echo(f"private key {priv} (keep it secret)")
    typer.echo(f"public key {pub} (give it to the nodes)")


@keys_app.command("show")
def keys_show(directory: Optional[Path] = KeysDir) -> None:
    """The key id and paths of the signing key pair in DIR."""
    from .signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, key_id, load_private_key, load_public_keys

    d = _keys_dir(directory)
    priv, pub = d / PRIVATE_KEY_FILE, d / PUBLIC_KEY_FILE
    if not pub.is_file():
        die(f"no {PUBLIC_KEY_FILE} in {d}: run `edgeloop keys init --dir {d}`")
    try:
        kid = next(iter(load_public_keys(pub)))
    except (OSError, ValueError) as exc:
        die(f"{pub}: {exc}")
    typer.echo(f"key id {kid}")
    typer.echo(f"public key {pub}")
    if priv.is_file():
        try:
            matches = key_id(load_private_key(priv).public_key()) == kid
        except (OSError, ValueError) as exc:
            die(f"{priv}: {exc}")
        if not matches:
            die(f"{priv} does not belong to {pub}")
        mode = priv.stat().st_mode & 0o777
        typer.echo(f"private key {priv}" + ("" if mode == 0o600 else f" (warning: mode {mode:o}, expected 600)"))
    else:
        typer.echo("private key: none here (this machine can verify, not sign)")
