"""``edgeloop model``: train, package, list, show, promote and deploy the reference models.

Cloud-side commands: they import MLflow, BentoML and torch inside the command, never at start-up; on an
install without the cloud extra they say which extra to install. Exit codes and messages follow
:mod:`edge_runtime.clikit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edge_runtime.clikit import HubUrl, Token, die, exit_code, hub_call, hub_client, needs_cloud

model_app = typer.Typer(help="Models: train (DVC stages + MLflow), package (BentoML, signed, to the warehouse), "
                             "ls, show, promote, deploy.", no_args_is_help=True)

Root = typer.Option(Path("."), "--root", help="workspace (params.yaml, data/, artifacts/, var/mlflow)")
Params = typer.Option(Path("params.yaml"), "--params", help="params file (relative to --root)")




def _name(name: str) -> str:
    from models.stages import MODELS

    if name not in MODELS:
        die(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    return name


def _params(root: Path, params: Path) -> dict[str, Any]:
    from models.common import load_params

    path = params if params.is_absolute() else root / params
    if not path.exists():
        return {}
    try:
        return load_params(path)
    except (OSError, ValueError) as exc:
        die(f"{path}: {exc}")
    return {}


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                    "{task.total}"), TimeElapsedColumn(), transient=False)


@model_app.command("train")
@needs_cloud
def train(name: str = typer.Argument(..., help="pump_anomaly, intrusion or activity"), root: Path = Root,
          params: Path = Params, regenerate: bool = typer.Option(False, help="generate and prepare the data again"),
          track: bool = typer.Option(True, help="record the run in MLflow and register the version")) -> None:
    """Generate (if missing) and prepare SYNTHETIC data, train, evaluate; track and register in MLflow.

    The same stages as `dvc repro` (dvc.yaml), run in-process with progress; `dvc repro` also versions the
    data and caches every stage."""
    from models import stages

    name = _name(name)
    p = _params(root, params)
    try:
        mp = stages.model_params(name, p)
    except KeyError as exc:
        die(str(exc.args[0]))
    epochs = int(mp.get("epochs", 1))
    with _progress() as prog:
        if regenerate or not (root / "data" / "raw" / "README.json").exists():
            t = prog.add_task("generate synthetic data", total=None)
            stages.generate(root, p, lambda what: prog.update(t, description=f"generate: {what}"))
            prog.update(t, total=1, completed=1, description="generate synthetic data")
        if regenerate or not (root / "data" / "prepared" / name / "holdout_drifted.npz").exists():
            t = prog.add_task(f"prepare {name}", total=1)
            stages.prepare(root, p, [name])
            prog.update(t, completed=1)
        t = prog.add_task(f"train {name}", total=epochs)
        run = stages.train(root, name, p, track=track,
                           progress=lambda e, loss: prog.update(t, completed=e,
                                                                description=f"train {name} (loss {loss:.4f})"))
        t = prog.add_task(f"evaluate {name}", total=1)
        m = stages.evaluate(root, name, track=track)
        prog.update(t, completed=1)
    _metrics_table(name, m)
    if run.get("version"):
        aliases = ", ".join(m.get("registry", {}).get("aliases", []))
        typer.echo(f"registered {name} version {run['version']} ({aliases}) in {run['tracking_uri']}")


def _metrics_table(name: str, m: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{name} on SYNTHETIC holdouts")
    for c in ("split", "n", "positives", "precision", "recall", "f1", "roc_auc"):
        t.add_column(c)
    for split in ("clean", "drifted"):
        s = m[split]
        t.add_row(split, str(s["n"]), str(s["positives"]),
                  *[("-" if s[k] is None else f"{s[k]:.3f}") for k in ("precision", "recall", "f1", "roc_auc")])
    Console().print(t)


@model_app.command("package")
@needs_cloud
def package(name: str = typer.Argument(..., help="model name (a reference model or an imported one)"),
            version: str = typer.Option("champion", "--version", "-v", help="registry version or alias"),
            root: Path = Root,
            keys: Optional[Path] = typer.Option(None, "--keys", envvar="EDGELOOP_KEYS_DIR",
                                                help="signing key directory (edgeloop keys init)"),
            out: Optional[Path] = typer.Option(None, "--out", help="where the .bento goes (default var/bundles)"),
            upload: bool = typer.Option(True, help="upload to the hub's model warehouse"),
            hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Build the version's Bento, export a .bento, sign it, and upload it to the model warehouse."""
    from edge_runtime.hubclient import HubError, HubUnreachable
    from edge_runtime.signing import PRIVATE_KEY_FILE
    from models import bento

    keys_dir = (keys or Path("~/.config/edgeloop/keys")).expanduser()
    if not (keys_dir / PRIVATE_KEY_FILE).is_file():
        die(f"no signing key {keys_dir / PRIVATE_KEY_FILE}: run `edgeloop keys init` (or pass --keys)")
    client = None
    if upload:
        if not token:
            die("no admin token: pass --token or set EDGELOOP_TOKEN (or --no-upload)")
        client = hub_client(hub, token, timeout=120)
    with _progress() as prog:
        t = prog.add_task(f"package {name}:{version}", total=5 if upload else 4)
        try:
            r = bento.package(name, version, workdir=root, keys_dir=keys_dir, out_dir=out, client=client,
                              step=lambda what: prog.update(t, advance=1, description=what))
        except LookupError as exc:
            die(str(exc))
        except HubError as exc:
            die(f"{hub}: the warehouse refused the bundle: {exc.detail} ({exc.status})", exit_code(exc.status))
        except HubUnreachable as exc:
            die(f"hub unreachable: {exc}", 1)
        prog.update(t, completed=5 if upload else 4, description=f"packaged {name}:{r['version']}")
    typer.echo(f"{r['archive']}: {r['size']:,} bytes, sha256 {r['sha256']}, signed by {r['key_id']}"
               + (", in the warehouse" if r["uploaded"] else ""))


@model_app.command("import")
@needs_cloud
def import_(name: str = typer.Argument(..., help="the model's name in the registry"),
            onnx: Path = typer.Option(..., "--onnx", help="an ONNX file (a classifier's probabilities or logits)"),
            labels: str = typer.Option(..., "--labels", help="class names in the model's output order, e.g. ok,anomaly"),
            input: str = typer.Option("table", "--input", help="table, image or clip"),
            features: Optional[str] = typer.Option(None, "--features", help="table: input columns in order, a,b,c"),
            shape: Optional[str] = typer.Option(None, "--shape", help="image: H,W,C; clip: T,H,W,C (uint8 BGR)"),
            threshold: float = typer.Option(0.5, "--threshold", help="binary: class 1 when P(1) >= this"),
            softmax: bool = typer.Option(False, "--softmax", help="the output is logits: apply a softmax"),
            output: Optional[str] = typer.Option(None, "--output", help="the output with the probabilities"),
            sample: Optional[Path] = typer.Option(None, "--sample", help=".npy of inputs for the health check"),
            root: Path = Root) -> None:
    """Register a model trained elsewhere (ONNX) as a new version: then package, deploy and roll it out."""
    from models.importing import import_onnx

    names = [s.strip() for s in labels.split(",") if s.strip()]
    cols = [s.strip() for s in (features or "").split(",") if s.strip()]
    if input not in ("table", "image", "clip"):
        die(f"--input {input!r}: expected table, image or clip")
    if input == "table" and not cols:
        die("--features: a table model needs its input columns in order")
    dims: list[int] | None = None
    if input != "table":
        try:
            dims = [int(v) for v in (shape or "").split(",")]
        except ValueError:
            dims = None
        if not dims or len(dims) != (3 if input == "image" else 4) or min(dims) <= 0:
            die(f"--shape {shape!r}: an {input} model needs {'H,W,C' if input == 'image' else 'T,H,W,C'}")
    if len(names) < 2:
        die(f"--labels {labels!r}: at least two class names")
    try:
        r = import_onnx(name, onnx, labels=names, input=input, features=cols or None, shape=dims,
                        threshold=threshold, sample=sample, workdir=root, softmax=softmax, output=output)
    except ValueError as exc:
        die(str(exc))
    typer.echo(f"registered {r['name']} version {r['version']} (challenger) from {onnx} (sha256 {r['sha256'][:12]}, "
               f"health sample {r['sample_rows']} rows): `edgeloop model package {r['name']} -v {r['version']}`")


@model_app.command("ls")
@needs_cloud
def ls(root: Path = Root, hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Registered versions (MLflow) with aliases and metrics, and which are in the hub's warehouse."""
    from models import tracking

    warehouse: dict[tuple[str, str], Any] = {}
    if token:
        from edge_runtime.hubclient import HubClient, HubError, HubUnreachable

        try:
            for m in HubClient(hub, token).get("/api/v1/models"):
                for v in m["versions"]:
                    warehouse[(m["name"], v["version"])] = v
        except (HubError, HubUnreachable) as exc:
            typer.echo(f"warning: warehouse not listed: {exc}", err=True)
    rows = []
    for v in tracking.list_versions(workdir=root):
        info = tracking.version_info(v["name"], v["version"], root)
        f1 = [f"{info['metrics'][k]:.3f}" if k in info["metrics"] else "-" for k in ("clean.f1", "drifted.f1")]
        rows.append([v["name"], v["version"], ", ".join(sorted(info["aliases"])), *f1,
                     "yes" if (v["name"], v["version"]) in warehouse else ("?" if not token else "no")])
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"models in {tracking.tracking_uri(root)}")
    for c in ("name", "version", "aliases", "clean f1", "drifted f1", "warehouse"):
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    Console().print(t)


@model_app.command("show")
@needs_cloud
def show(name: str = typer.Argument(...), version: str = typer.Argument("champion", help="version or alias"),
         root: Path = Root) -> None:
    """A registered version: aliases, run, data version, params and metrics."""
    import json

    from models import tracking

    name = _name(name)
    v = version if version.isdigit() else tracking.alias_version(name, version, root)
    if v is None:
        die(f"model {name!r} has no alias {version!r}")
    try:
        info = tracking.version_info(name, v, root)
    except Exception as exc:  # noqa: BLE001 - MlflowException for an unknown version
        die(f"model {name!r} version {v}: {exc}")
    typer.echo(json.dumps(info, indent=2, sort_keys=True, default=str))


@model_app.command("promote")
@needs_cloud
def promote(name: str = typer.Argument(...), version: str = typer.Argument(...),
            alias: str = typer.Option("champion", "--alias"), root: Path = Root) -> None:
    """Point an alias (default champion: what ships) at a registered version."""
    from models import tracking

    name = _name(name)
    try:
        tracking.version_info(name, version, root)
    except Exception as exc:  # noqa: BLE001
        die(f"model {name!r} version {version}: {exc}")
    tracking.promote(name, version, alias, root)
    typer.echo(f"{name}@{alias} -> version {version}")


@model_app.command("deploy")
@needs_cloud
def deploy(ref: str = typer.Argument(..., help="NAME:VERSION (in the warehouse)"),
           to: str = typer.Option(..., "--to", help="node:<name> or group:<name>"),
           hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Serve a warehouse version on a node or group (their desired state); nodes verify it before loading.

    Canary rollouts with automatic rollback: `edgeloop rollout` (the loop issue)."""
    from urllib.parse import quote

    name, sep, version = ref.partition(":")
    if not sep or not name or not version:
        die(f"expected NAME:VERSION, got {ref!r}")
    client = hub_client(hub, token)
    r = hub_call(client.put, f"/api/v1/models/{quote(name)}/deployments/{quote(to)}", {"version": version})
    typer.echo(f"{r['name']}:{r['version']} -> {r['target']}")
