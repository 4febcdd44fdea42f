"""The ``edgeloop`` command line.

Exit codes: 0 success, 1 runtime failure, 2 a bad spec, config or argument
(the message on stderr names the file, line and field).
Heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(help="EdgeLoop: edge-cloud AIoT platform.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
pipeline_app = typer.Typer(help="Pipelines: validate and replay offline.", no_args_is_help=True)
node_app = typer.Typer(help="Run an edge node.", no_args_is_help=True)
hub_app = typer.Typer(help="Run the hub (API + MQTT ingest).", no_args_is_help=True)
token_app = typer.Typer(help="Node tokens: create, list, revoke.", no_args_is_help=True)
product_app = typer.Typer(help="Shared products on the hub.", no_args_is_help=True)
keys_app = typer.Typer(help="Model-signing keys: init, show.", no_args_is_help=True)
onvif_app = typer.Typer(help="ONVIF cameras: discover them on the network.", no_args_is_help=True)
app.add_typer(onvif_app, name="onvif")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(node_app, name="node")
app.add_typer(hub_app, name="hub")
app.add_typer(product_app, name="product")
app.add_typer(keys_app, name="keys")
node_app.add_typer(token_app, name="token")
try:  # cloud-side model commands; the module imports only typer, its commands import MLflow/BentoML
    from models.cli import model_app

    app.add_typer(model_app, name="model")
except ImportError:  # pragma: no cover - an install without the models package
    pass
try:  # cloud-side rollout commands; the module imports only typer
    from hub.rollout_cli import rollout_app

    app.add_typer(rollout_app, name="rollout")
except ImportError:  # pragma: no cover - an install without the hub package
    pass
try:  # the agile loop and the local stack; the module imports only typer, its commands import Prefect
    from flows.cli import down as _down
    from flows.cli import loop_app
    from flows.cli import up as _up

    app.add_typer(loop_app, name="loop")
    app.command("up")(_up)
    app.command("down")(_down)
except ImportError:  # pragma: no cover - an install without the flows package
    pass

HubUrl = typer.Option("http://127.0.0.1:8080", "--hub", envvar="EDGELOOP_HUB_URL", help="the hub's URL")
AdminToken = typer.Option(None, "--token", envvar="EDGELOOP_TOKEN", help="the admin token (or EDGELOOP_TOKEN)")


def _fail_spec(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


ParamOpt = typer.Option(None, "--param", "-p", help="NAME=VALUE for one of the pipeline's params (repeat it); "
                                                    "VALUE is read as YAML: 90, WARN, [a, b]")


def _params(items: Optional[list[str]]) -> Optional[dict[str, Any]]:
    """``--param NAME=VALUE`` options -> values (typed as YAML reads them); exit 2 on a malformed one."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            _fail_spec(ValueError(f"--param {item!r}: expected NAME=VALUE"))
        try:
            out[name.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            _fail_spec(ValueError(f"--param {item!r}: the value is not YAML: {exc}"))
    return out or None


@pipeline_app.command("validate")
def pipeline_validate(spec: Path = typer.Argument(..., help="pipeline YAML/JSON file"),
                      param: Optional[list[str]] = ParamOpt) -> None:
    """Check a pipeline file (with an instance's --param values); print its plan."""
    from .operators.base import SpecError
    from .pipeline import load_pipeline

    try:
        plan = load_pipeline(spec, _params(param))
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
    param: Optional[list[str]] = ParamOpt,
) -> None:
    """Replay a pipeline offline over Record lines, in event time."""
    from . import jsonio
    from .operators.base import SpecError
    from .pipeline import load_pipeline
    from .replay import replay

    try:
        plan = load_pipeline(spec, _params(param))
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
            _fail_spec(ValueError(f"--to: expected host:port, got {to!r}"))
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
        _fail_spec(exc)
    node = Node(cfg)
    node.run_forever()


@app.command("demo")
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
    from .demo import SCENARIOS, run_demo

    if scenario not in SCENARIOS:
        typer.echo(f"error: --scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_demo(duration=duration, broker=broker, scenario=scenario, cameras=cameras, frames=frames,
                              summary=summary, loop=loop, report=report))


# -- the hub ----------------------------------------------------------------------------------
def _broker_option(broker: Optional[str], user: Optional[str], password: Optional[str]) -> Optional[dict]:
    if not broker:
        return None
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        typer.echo(f"error: --broker {broker!r}: expected host:port", err=True)
        raise typer.Exit(2)
    return {"host": host, "port": int(port), "username": user, "password": password}


@hub_app.command("serve")
def hub_serve(
    db: str = typer.Option("sqlite:///var/hub/hub.db", envvar="EDGELOOP_HUB_DB",
                           help="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db"),
    data: Path = typer.Option(Path("var/hub"), envvar="EDGELOOP_HUB_DATA", help="media files and the admin token"),
    host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8080),
    broker: Optional[str] = typer.Option(None, envvar="EDGELOOP_BROKER", help="host:port: run the MQTT ingest too"),
    broker_user: Optional[str] = typer.Option(None, envvar="EDGELOOP_BROKER_USER"),
    broker_password: Optional[str] = typer.Option(None, envvar="EDGELOOP_BROKER_PASSWORD"),
    admin_token: Optional[str] = typer.Option(None, envvar="EDGELOOP_ADMIN_TOKEN",
                                              help="register this admin token; default: make one in DATA/admin.token"),
    heartbeat: float = typer.Option(10.0, help="heartbeat interval the agents are told to use (s)"),
) -> None:
    """Serve the hub's API (migrating its database first) and ingest uploads from the broker."""
    import os
    import secrets

    from hub.server import serve
    from hub.service import HubSettings

    from .logs import setup_logging

    setup_logging()
    token_file = data / "admin.token"
    if not admin_token:
        if token_file.exists():
            admin_token = token_file.read_text().strip()
        else:
            data.mkdir(parents=True, exist_ok=True)
            admin_token = "ela_" + secrets.token_urlsafe(32)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(admin_token + "\n")
            typer.echo(f"admin token written to {token_file} (use it as EDGELOOP_TOKEN)", err=True)
    settings = HubSettings(db_url=db, data_dir=str(data), admin_token=admin_token,
                           broker=_broker_option(broker, broker_user, broker_password),
                           heartbeat_interval=heartbeat, offline_after=3 * heartbeat)
    serve(settings, host=host, port=port)


@hub_app.command("ingest")
def hub_ingest(
    db: str = typer.Option("sqlite:///var/hub/hub.db", envvar="EDGELOOP_HUB_DB"),
    broker: str = typer.Option("127.0.0.1:1883", envvar="EDGELOOP_BROKER"),
    broker_user: Optional[str] = typer.Option(None, envvar="EDGELOOP_BROKER_USER"),
    broker_password: Optional[str] = typer.Option(None, envvar="EDGELOOP_BROKER_PASSWORD"),
) -> None:
    """A standalone ingest process: several share the uplink load through an MQTT shared subscription."""
    from hub.server import run_ingest
    from hub.service import HubSettings

    from .logs import setup_logging

    setup_logging()
    run_ingest(HubSettings(db_url=db, broker=_broker_option(broker, broker_user, broker_password)))


def _client(hub: str, token: Optional[str]):  # noqa: ANN202
    from .hubclient import HubClient

    if not token:
        typer.echo("error: no admin token: pass --token or set EDGELOOP_TOKEN", err=True)
        raise typer.Exit(2)
    try:
        return HubClient(hub, token)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _call(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    """Run a hub call; 4xx/5xx and an unreachable hub become a message and an exit code."""
    from .hubclient import HubError, HubUnreachable

    try:
        return fn(*args, **kwargs)
    except HubError as exc:
        typer.echo(f"error: {exc.detail} ({exc.status})", err=True)
        raise typer.Exit(2 if exc.status in (400, 404, 409, 413, 422) else 1) from None
    except HubUnreachable as exc:
        typer.echo(f"error: hub unreachable: {exc}", err=True)
        raise typer.Exit(1) from None


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    Console().print(t)


def _ago(ts: Optional[float]) -> str:
    import time

    if not ts:
        return "never"
    d = time.time() - ts
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.0f}h ago"


@node_app.command("ls")
def node_ls(hub: str = HubUrl, token: Optional[str] = AdminToken) -> None:
    """Nodes with their state, what they run and their outbox."""
    c = _client(hub, token)
    nodes = _call(c.get, "/api/v1/nodes")
    _table("nodes", ["node", "group", "state", "last seen", "instances", "records", "outbox", "dropped", "errors"],
           [[n["name"], n["group"], "online" if n["online"] else "offline", _ago(n["last_seen"]),
             ", ".join(i["instance"] for i in n["instances"]), n["counters"].get("records", ""),
             n["outbox"].get("rows", ""), n["outbox"].get("dropped_total", ""), len(n["errors"]) or ""]
            for n in nodes])


@node_app.command("create")
def node_create(name: str, group: str = typer.Option("default"), hub: str = HubUrl,
                token: Optional[str] = AdminToken) -> None:
    """Create a node on the hub; prints its token (shown once)."""
    r = _call(_client(hub, token).post, "/api/v1/nodes", {"name": name, "group": group})
    typer.echo(r["token"])


@token_app.command("create")
def token_create(node: str, note: str = typer.Option(""), ttl: Optional[float] = typer.Option(None, help="seconds"),
                 hub: str = HubUrl, token: Optional[str] = AdminToken) -> None:
    """Another token for a node (e.g. to rotate); prints it (shown once)."""
    from urllib.parse import quote

    r = _call(_client(hub, token).post, f"/api/v1/nodes/{quote(node)}/tokens", {"note": note, "ttl": ttl})
    typer.echo(r["token"])
    typer.echo(f"token id {r['token_id']}", err=True)


@token_app.command("ls")
def token_ls(hub: str = HubUrl, token: Optional[str] = AdminToken) -> None:
    """Tokens (never their secrets)."""
    rows = _call(_client(hub, token).get, "/api/v1/tokens")
    _table("tokens", ["id", "kind", "node", "note", "created", "state"],
           [[t["id"], t["kind"], t["node"], t["note"], _ago(t["created_at"]),
             "revoked" if t["revoked_at"] else "active"] for t in rows])


@token_app.command("revoke")
def token_revoke(token_id: int, hub: str = HubUrl, token: Optional[str] = AdminToken) -> None:
    """Revoke a token by id: refused from the next request on."""
    _call(_client(hub, token).delete, f"/api/v1/tokens/{token_id}")
    typer.echo(f"token {token_id} revoked")


@product_app.command("apply")
def product_apply(file: Path = typer.Option(..., "--file", "-f", help="products YAML"), hub: str = HubUrl,
                  token: Optional[str] = AdminToken) -> None:
    """Share the products of a file through the hub (validated here first, then by the hub)."""
    from urllib.parse import quote

    from .devices.catalog import load_catalog
    from .operators.base import SpecError
    from .yamlspec import load_yaml

    try:
        load_catalog([file])
    except SpecError as exc:
        _fail_spec(exc)
    data = _plain(load_yaml(file))
    items = data["products"] if isinstance(data, dict) and "products" in data else data
    c = _client(hub, token)
    for spec in items if isinstance(items, list) else [items]:
        r = _call(c.put, f"/api/v1/products/{quote(spec['name'])}", spec)
        typer.echo(f"product {r['name']} v{r['version']}")


def _plain(value):  # noqa: ANN001, ANN202
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pipeline_app.command("apply")
def pipeline_apply(
    file: Path = typer.Option(..., "--file", "-f", help="pipeline YAML/JSON"),
    to: Optional[str] = typer.Option(None, "--to", help="NODE or group:GROUP to run it on"),
    instance: Optional[str] = typer.Option(None, help="instance name (default: the pipeline's name)"),
    devices: Optional[str] = typer.Option(None, help="comma-separated device ids (default: all of the product)"),
    pin: bool = typer.Option(False, help="pin this version (default: follow the newest)"),
    param: Optional[list[str]] = ParamOpt,
    hub: str = HubUrl, token: Optional[str] = AdminToken,
) -> None:
    """Publish a pipeline version to the hub and (with --to) assign an instance of it (with --param values)."""
    import re
    from urllib.parse import quote

    from .operators.base import SpecError
    from .pipeline import load_pipeline
    from .yamlspec import load_yaml

    values = _params(param)
    if values and not to:
        _fail_spec(ValueError("--param sets an instance's values: give --to (NODE or group:GROUP) as well"))
    try:
        plan = load_pipeline(file, values)
    except SpecError as exc:
        _fail_spec(exc)
    c = _client(hub, token)
    r = _call(c.post, "/api/v1/pipelines", _plain(load_yaml(file)))
    typer.echo(f"pipeline {r['name']} v{r['version']}" + (" (new version)" if r["created"] else " (unchanged)"))
    if to:
        target = to if to.startswith(("node:", "group:")) else f"node:{to}"
        name = instance or re.sub(r"[^A-Za-z0-9_.\-]", "-", plan.name)
        body = {"pipeline": r["name"], "version": r["version"] if pin else None,
                "devices": devices.split(",") if devices else None, "params": values}
        a = _call(c.put, f"/api/v1/assignments/{quote(target)}/{quote(name)}", body)
        typer.echo(f"instance {a['instance']} -> {a['target']} (v{a['version']}"
                   f"{', pinned' if pin else ''}; devices: {', '.join(a['devices']) if a['devices'] else 'all'})")


@pipeline_app.command("ls")
def pipeline_ls(hub: str = HubUrl, token: Optional[str] = AdminToken) -> None:
    """Shared pipelines and where their instances run."""
    c = _client(hub, token)
    pipes = _call(c.get, "/api/v1/pipelines")
    assigns = _call(c.get, "/api/v1/assignments")
    _table("pipelines", ["pipeline", "latest", "versions", "instances"],
           [[p["name"], p["latest"], p["versions"],
             ", ".join(f"{a['instance']}@{a['target']}" + (f" v{a['version']}" if a["version"] else "")
                       + (" " + " ".join(f"{k}={v}" for k, v in a["params"].items()) if a.get("params") else "")
                       for a in assigns if a["pipeline"] == p["name"])] for p in pipes])


# -- model-signing keys -----------------------------------------------------------------------
KeysDir = typer.Option(None, "--dir", envvar="EDGELOOP_KEYS_DIR",
                       help="key directory (default: ~/.config/edgeloop/keys, or EDGELOOP_KEYS_DIR)")


def _keys_dir(directory: Optional[Path]) -> Path:
    return (directory or Path("~/.config/edgeloop/keys")).expanduser()


@keys_app.command("init")
def keys_init(directory: Optional[Path] = KeysDir,
              force: bool = typer.Option(False, "--force", help="replace an existing key")) -> None:
    """Make an Ed25519 key pair for signing model bundles: DIR/signing.key (0600) and DIR/signing.pub."""
    from .signing import PRIVATE_KEY_FILE, init_keys, key_id, load_private_key

    d = _keys_dir(directory)
    try:
        priv, pub = init_keys(d, force=force)
    except FileExistsError:
        typer.echo(f"error: {d / PRIVATE_KEY_FILE} exists: refusing to replace a signing key; --force replaces it "
                   "(nodes that trust only the new key then refuse bundles signed with the old one)", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot write keys to {d}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
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
        typer.echo(f"error: no {PUBLIC_KEY_FILE} in {d}: run `edgeloop keys init --dir {d}`", err=True)
        raise typer.Exit(2)
    try:
        kid = next(iter(load_public_keys(pub)))
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"key id {kid}")
    typer.echo(f"public key {pub}")
    if priv.is_file():
        try:
            matches = key_id(load_private_key(priv).public_key()) == kid
        except (OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if not matches:
            typer.echo(f"error: {priv} does not belong to {pub}", err=True)
            raise typer.Exit(2)
        mode = priv.stat().st_mode & 0o777
        typer.echo(f"private key {priv}" + ("" if mode == 0o600 else f" (warning: mode {mode:o}, expected 600)"))
    else:
        typer.echo("private key: none here (this machine can verify, not sign)")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
