"""The hub half of the ``edgeloop`` command line: serve the hub and its MQTT ingest, and the admin's commands
(nodes and their tokens, shared products and pipelines). ``edgeloop.cli`` composes these with the others;
exit codes and messages follow :mod:`edge_runtime.clikit`.

The admin commands speak HTTP only (:class:`edge_runtime.hubclient.HubClient`) and work on any install; the
serving commands need the cloud extra. Only typer is imported at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edge_runtime.clikit import (
    HubUrl,
    ParamOpt,
    Token,
    ago,
    die,
    fail_spec,
    hub_call,
    hub_client,
    needs_cloud,
    params,
    plain,
    table,
)

__all__ = ["hub_app", "node_app", "token_app", "product_app", "pipeline_app"]

hub_app = typer.Typer(help="Run the hub (API + MQTT ingest).", no_args_is_help=True)
node_app = typer.Typer(help="Nodes at the hub: create, list.", no_args_is_help=True)
token_app = typer.Typer(help="Node tokens: create, list, revoke.", no_args_is_help=True)
product_app = typer.Typer(help="Shared products on the hub.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Shared pipelines on the hub: publish, assign, list.", no_args_is_help=True)
node_app.add_typer(token_app, name="token")

def _broker_option(broker: Optional[str], user: Optional[str], password: Optional[str]) -> Optional[dict[str, Any]]:
    if not broker:
        return None
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        die(f"--broker {broker!r}: expected host:port")
    return {"host": host, "port": int(port), "username": user, "password": password}


@hub_app.command("serve")
@needs_cloud
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
    drift_every: float = typer.Option(10.0, "--drift-every", envvar="EDGELOOP_HUB_DRIFT_EVERY_S", min=0,
                                      help="store a model's drift score per node at most every this many seconds"),
) -> None:
    """Serve the hub's API (migrating its database first) and ingest uploads from the broker."""
    import os
    import secrets

    from edge_runtime.logs import setup_logging

    from .core import HubSettings
    from .runner import serve

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
            typer.echo(f"admin token written to {token_file} (use it as EDGELOOP_HUB_TOKEN)", err=True)
    settings = HubSettings(db_url=db, data_dir=str(data), admin_token=admin_token,
                           broker=_broker_option(broker, broker_user, broker_password),
                           heartbeat_interval=heartbeat, offline_after=3 * heartbeat, drift_every_s=drift_every)
    serve(settings, host=host, port=port)


@hub_app.command("ingest")
@needs_cloud
def hub_ingest(
    db: str = typer.Option("sqlite:///var/hub/hub.db", envvar="EDGELOOP_HUB_DB"),
    broker: str = typer.Option("127.0.0.1:1883", envvar="EDGELOOP_BROKER"),
    broker_user: Optional[str] = typer.Option(None, envvar="EDGELOOP_BROKER_USER"),
    broker_password: Optional[str] = typer.Option(None, envvar="EDGELOOP_BROKER_PASSWORD"),
) -> None:
    """A standalone ingest process: several share the uplink load through an MQTT shared subscription."""
    from edge_runtime.logs import setup_logging

    from .core import HubSettings
    from .runner import run_ingest

    setup_logging()
    run_ingest(HubSettings(db_url=db, broker=_broker_option(broker, broker_user, broker_password)))










@node_app.command("ls")
def node_ls(hub: str = HubUrl, token: Optional[str] = Token,
            as_json: bool = typer.Option(False, "--json", help="the hub's node views as JSON (for scripts)")) -> None:
    """Nodes with their state, what they run and their outbox."""
    c = hub_client(hub, token)
    nodes = hub_call(c.get, "/api/v1/nodes")
    if as_json:
        import json

        typer.echo(json.dumps(nodes, indent=1, sort_keys=True, default=str))
        return
    def serving(n: dict) -> str:
        per = ((n.get("models") or {}).get("models") or {}) if isinstance(n.get("models"), dict) else {}
        return ", ".join(f"{m}:{v['active']}" for m, v in sorted(per.items())
                         if isinstance(v, dict) and v.get("active") is not None)

    table("nodes", ["node", "group", "state", "last seen", "instances", "models", "records", "outbox", "dropped",
                    "errors"],
           [[n["name"], n["group"], "online" if n["online"] else "offline", ago(n["last_seen"]),
             ", ".join(i["instance"] for i in n["instances"]), serving(n), n["counters"].get("records", ""),
             n["outbox"].get("rows", ""), n["outbox"].get("dropped_total", ""), len(n["errors"]) or ""]
            for n in nodes])


@node_app.command("create")
def node_create(name: str, group: str = typer.Option("default"), hub: str = HubUrl,
                token: Optional[str] = Token) -> None:
    """Create a node on the hub; prints its token (shown once)."""
    r = hub_call(hub_client(hub, token).post, "/api/v1/nodes", {"name": name, "group": group})
    typer.echo(r["token"])


@token_app.command("create")
def token_create(node: str, note: str = typer.Option(""), ttl: Optional[float] = typer.Option(None, help="seconds"),
                 hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Another token for a node (e.g. to rotate); prints it (shown once)."""
    from urllib.parse import quote

    r = hub_call(hub_client(hub, token).post, f"/api/v1/nodes/{quote(node)}/tokens", {"note": note, "ttl": ttl})
    typer.echo(r["token"])
    typer.echo(f"token id {r['token_id']}", err=True)


@token_app.command("ls")
def token_ls(hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Tokens (never their secrets)."""
    rows = hub_call(hub_client(hub, token).get, "/api/v1/tokens")
    table("tokens", ["id", "kind", "node", "note", "created", "state"],
           [[t["id"], t["kind"], t["node"], t["note"], ago(t["created_at"]),
             "revoked" if t["revoked_at"] else "active"] for t in rows])


@token_app.command("revoke")
def token_revoke(token_id: int, hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Revoke a token by id: refused from the next request on."""
    hub_call(hub_client(hub, token).delete, f"/api/v1/tokens/{token_id}")
    typer.echo(f"token {token_id} revoked")


@product_app.command("apply")
def product_apply(file: Path = typer.Option(..., "--file", "-f", help="products YAML"), hub: str = HubUrl,
                  token: Optional[str] = Token) -> None:
    """Share the products of a file through the hub (validated here first, then by the hub)."""
    from urllib.parse import quote

    from edge_runtime.devices.catalog import load_catalog
    from edge_runtime.operators.base import SpecError
    from edge_runtime.yamlspec import load_yaml

    try:
        load_catalog([file])
    except SpecError as exc:
        fail_spec(exc)
    data = plain(load_yaml(file))
    items = data["products"] if isinstance(data, dict) and "products" in data else data
    c = hub_client(hub, token)
    for spec in items if isinstance(items, list) else [items]:
        r = hub_call(c.put, f"/api/v1/products/{quote(spec['name'])}", spec)
        typer.echo(f"product {r['name']} v{r['version']}")




@pipeline_app.command("apply")
def pipeline_apply(
    file: Path = typer.Option(..., "--file", "-f", help="pipeline YAML/JSON"),
    to: Optional[str] = typer.Option(None, "--to", help="NODE or group:GROUP to run it on"),
    instance: Optional[str] = typer.Option(None, help="instance name (default: the pipeline's name)"),
    devices: Optional[str] = typer.Option(None, help="comma-separated device ids (default: all of the product)"),
    pin: bool = typer.Option(False, help="pin this version (default: follow the newest)"),
    param: Optional[list[str]] = ParamOpt,
    hub: str = HubUrl, token: Optional[str] = Token,
) -> None:
    """Publish a pipeline version to the hub and (with --to) assign an instance of it (with --param values)."""
    import re
    from urllib.parse import quote

    from edge_runtime.operators.base import SpecError
    from edge_runtime.pipeline import load_pipeline
    from edge_runtime.yamlspec import load_yaml

    values = params(param)
    if values and not to:
        fail_spec(ValueError("--param sets an instance's values: give --to (NODE or group:GROUP) as well"))
    try:
        plan = load_pipeline(file, values)
    except SpecError as exc:
        fail_spec(exc)
    c = hub_client(hub, token)
    r = hub_call(c.post, "/api/v1/pipelines", plain(load_yaml(file)))
    typer.echo(f"pipeline {r['name']} v{r['version']}" + (" (new version)" if r["created"] else " (unchanged)"))
    if to:
        target = to if to.startswith(("node:", "group:")) else f"node:{to}"
        name = instance or re.sub(r"[^A-Za-z0-9_.\-]", "-", plan.name)
        body = {"pipeline": r["name"], "version": r["version"] if pin else None,
                "devices": devices.split(",") if devices else None, "params": values}
        a = hub_call(c.put, f"/api/v1/assignments/{quote(target)}/{quote(name)}", body)
        typer.echo(f"instance {a['instance']} -> {a['target']} (v{a['version']}"
                   f"{', pinned' if pin else ''}; devices: {', '.join(a['devices']) if a['devices'] else 'all'})")


@pipeline_app.command("ls")
def pipeline_ls(hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Shared pipelines and where their instances run."""
    c = hub_client(hub, token)
    pipes = hub_call(c.get, "/api/v1/pipelines")
    assigns = hub_call(c.get, "/api/v1/assignments")
    table("pipelines", ["pipeline", "latest", "versions", "instances"],
           [[p["name"], p["latest"], p["versions"],
             ", ".join(f"{a['instance']}@{a['target']}" + (f" v{a['version']}" if a["version"] else "")
                       + (" " + " ".join(f"{k}={v}" for k, v in a["params"].items()) if a.get("params") else "")
                       for a in assigns if a["pipeline"] == p["name"])] for p in pipes])


