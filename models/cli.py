"""``edgeloop model``: scaffold, train, import, package, list, show, promote and deploy models.

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




def _plugin(name: str) -> str:
    """``name`` when a model plug-in has it (the models EdgeLoop can train), else exit 2 saying which do."""
    from models import plugins

    try:
        plugins.get(name)
    except KeyError as exc:
        die(str(exc.args[0]))
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
def train(name: str = typer.Argument(..., help="a model plug-in's name (`edgeloop model plugins` lists them)"),
          root: Path = Root,
          params: Path = Params, regenerate: bool = typer.Option(False, help="generate and prepare the data again"),
          track: bool = typer.Option(True, help="record the run in MLflow and register the version")) -> None:
    """Prepare the model's data (generating it first when the plug-in has a SYNTHETIC generator and none is there),
    train, evaluate; track and register in MLflow.

    The same stages as `dvc repro` (dvc.yaml), run in-process with progress; `dvc repro` also versions the
    data and caches every stage."""
    import json

    from models import stages

    name = _plugin(name)
    p = _params(root, params)
    try:
        mp = stages.model_params(name, p)
    except KeyError as exc:
        die(str(exc.args[0]))
    epochs = int(mp.get("epochs", 1))
    readme = root / "data" / "raw" / "README.json"
    generated = json.loads(readme.read_text()).get("models", []) if readme.exists() else []
    with _progress() as prog:
        if stages.model_module(name).generate is not None and (regenerate or name not in generated):
            t = prog.add_task("generate synthetic data", total=None)
            stages.generate(root, p, lambda what: prog.update(t, description=f"generate: {what}"), [name])
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

    t = Table(title=f"{name} on {'SYNTHETIC' if 'synthetic' in str(m.get('data')).lower() else 'field'} holdouts")
    for c in ("split", "n", "positives", "precision", "recall", "f1", "roc_auc"):
        t.add_column(c)
    for split in ("clean", "drifted"):
        s = m[split]
        t.add_row(split, str(s["n"]), str(s["positives"]),
                  *[("-" if s[k] is None else f"{s[k]:.3f}") for k in ("precision", "recall", "f1", "roc_auc")])
    Console().print(t)


@model_app.command("init")
def init(name: str = typer.Argument(..., help="the model's name: lower-case letters, digits, _"),
         kind: str = typer.Option(..., "--kind", help="tabular or image"),
         labels: str = typer.Option("normal,anomalous", "--labels", help="the two class names, negative first"),
         features: Optional[str] = typer.Option(None, "--features", help="tabular: input columns, a,b,c"),
         dest: Path = typer.Option(Path("."), "--dir", help="where the package's folder goes"),
         workspace: Optional[Path] = typer.Option(None, "--workspace", "-w",
                                                  help="also add the model to this workspace's params.yaml"),
         uploads: Optional[str] = typer.Option(None, "--uploads", help="the pipeline whose uploads the loop sends to "
                                               "labelling while there is no model yet (the cold start)")) -> None:
    """Scaffold a model plug-in package of your own (code, params, a test): pip install -e it, and the loop trains,
    gates, packages and rolls it out like the built-in models."""
    from models import scaffold

    cols = [c.strip() for c in (features or "").split(",") if c.strip()]
    if workspace is not None and not (workspace / "params.yaml").is_file():
        die(f"{workspace / 'params.yaml'}: no such file (is {workspace} an EdgeLoop workspace?)")
    try:
        r = scaffold.init(name, kind, dest, labels=[s.strip() for s in labels.split(",")], features=cols or None,
                          workspace=workspace, uploads=uploads)
    except ValueError as exc:
        die(str(exc))
    typer.echo(f"wrote {r['package']}: {', '.join(r['files'])}")
    if r.get("params"):
        typer.echo(f"added {name} to {r['params']} (models.{name}, {name}:)")
    typer.echo(f"next: pip install -e {r['package']} && edgeloop model plugins")


@model_app.command("plugins")
def plugins_() -> None:
    """The model plug-ins installed (edgeloop.models entry points): what the loop can train and retrain."""
    from rich.console import Console
    from rich.table import Table

    from models import plugins

    found = plugins.plugins(reload=True)
    t = Table(title="model plug-ins (edgeloop.models)")
    for c in ("name", "input", "labels", "data", "from"):
        t.add_column(c)
    for p in found.values():
        t.add_row(p.name, p.input, ", ".join(p.labels), p.data, p.source)
    Console().print(t)
    for why in plugins.broken().values():
        typer.echo(f"unusable: {why}", err=True)


@model_app.command("package")
@needs_cloud
def package(name: str = typer.Argument(..., help="model name (trained by a plug-in, or imported)"),
            version: str = typer.Option("champion", "--version", "-v", help="registry version or alias"),
            root: Path = Root,
            keys: Optional[Path] = typer.Option(None, "--keys", envvar="EDGELOOP_KEYS_DIR",
                                                help="signing key directory (edgeloop keys init)"),
            out: Optional[Path] = typer.Option(None, "--out", help="where the .bento goes (default var/bundles)"),
            upload: bool = typer.Option(True, help="upload to the hub's model warehouse"),
            hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """Build the version's Bento, export a .bento, sign it, and upload it to the model warehouse."""
    from edge_runtime.hubclient import HubError, HubUnreachable
    from edge_runtime.signing import PRIVATE_KEY_FILE, default_keys_dir
    from models import bento

    keys_dir = keys.expanduser() if keys else default_keys_dir()
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
            onnx: Optional[Path] = typer.Option(None, "--onnx", help="an ONNX file (a classifier's probabilities or "
                                                                     "logits)"),
            mlflow_uri: Optional[str] = typer.Option(None, "--mlflow", help="an MLflow model: models:/NAME/VERSION, "
                                                     "models:/NAME@ALIAS, runs:/ID/PATH (sklearn or pytorch flavour)"),
            from_uri: Optional[str] = typer.Option(None, "--from-tracking-uri",
                                                   help="the MLflow tracking URI of the registry --mlflow is in "
                                                        "(default: the workspace's own store)"),
            labels: Optional[str] = typer.Option(None, "--labels", help="class names in the model's output order, "
                                                 "e.g. ok,anomaly (an MLflow scikit-learn model: its classes_)"),
            input: str = typer.Option("table", "--input", help="table, image or clip"),
            features: Optional[str] = typer.Option(None, "--features", help="table: input columns in order, a,b,c "
                                                   "(an MLflow model: its signature's)"),
            shape: Optional[str] = typer.Option(None, "--shape", help="image: H,W,C; clip: T,H,W,C (uint8 BGR)"),
            threshold: float = typer.Option(0.5, "--threshold", help="binary: class 1 when P(1) >= this"),
            softmax: Optional[bool] = typer.Option(None, "--softmax/--probabilities",
                                                   help="the output is logits (apply a softmax) or probabilities "
                                                        "(default: ONNX probabilities, PyTorch logits)"),
            output: Optional[str] = typer.Option(None, "--output", help="ONNX: the output with the probabilities"),
            sample: Optional[Path] = typer.Option(None, "--sample", help=".npy of inputs for the health check"),
            root: Path = Root) -> None:
    """Register a model trained elsewhere (ONNX, or an MLflow model) as a new version: then package, deploy and
    roll it out. The loop retrains it only when a model plug-in has its name; otherwise it monitors and replaces."""
    from models import plugins
    from models.importing import import_mlflow, import_onnx

    if (onnx is None) == (mlflow_uri is None):
        die("give one of --onnx FILE or --mlflow URI")
    names = [s.strip() for s in (labels or "").split(",") if s.strip()]
    cols = [s.strip() for s in (features or "").split(",") if s.strip()]
    if input not in ("table", "image", "clip"):
        die(f"--input {input!r}: expected table, image or clip")
    if input == "table" and not cols and onnx is not None:
        die("--features: a table model needs its input columns in order")
    dims: list[int] | None = None
    if input != "table":
        try:
            dims = [int(v) for v in (shape or "").split(",")]
        except ValueError:
            dims = None
        if not dims or len(dims) != (3 if input == "image" else 4) or min(dims) <= 0:
            die(f"--shape {shape!r}: an {input} model needs {'H,W,C' if input == 'image' else 'T,H,W,C'}")
    if labels is not None and len(names) < 2 or onnx is not None and len(names) < 2:
        die(f"--labels {labels!r}: at least two class names")
    try:
        if onnx is not None:
            r = import_onnx(name, onnx, labels=names, input=input, features=cols or None, shape=dims,
                            threshold=threshold, sample=sample, workdir=root, softmax=bool(softmax), output=output)
            origin = str(onnx)
        else:
            assert mlflow_uri is not None
            r = import_mlflow(name, mlflow_uri, tracking_uri=from_uri, labels=names or None, input=input,
                              features=cols or None, shape=dims, threshold=threshold,
                              softmax=True if softmax is None else softmax, sample=sample, workdir=root)
            origin = f"{mlflow_uri} ({r['flavor']})"
    except ValueError as exc:
        die(str(exc))
    typer.echo(f"registered {r['name']} version {r['version']} (challenger) from {origin} (sha256 {r['sha256'][:12]}, "
               f"health sample {r['sample_rows']} rows): `edgeloop model package {r['name']} -v {r['version']}`")
    retrain = name in plugins.names()
    typer.echo(f"the loop {'retrains it with the plug-in of that name' if retrain else 'can monitor and replace it, not retrain it (no model plug-in is called ' + repr(name) + ')'}")


@model_app.command("ls")
@needs_cloud
def ls(root: Path = Root, hub: str = HubUrl, token: Optional[str] = Token,
       metric: str = typer.Option("accuracy", "--metric", envvar="EDGELOOP_METRIC",
                                  help="the metric shown (the loop's gate uses EDGELOOP_METRIC, accuracy by default)")
       ) -> None:
    """Registered versions (MLflow) with aliases, the gate's metric on the clean and drifted holdouts, whether
    the hub's warehouse has them and which nodes serve them now (their heartbeats)."""
    from models import tracking

    warehouse: dict[tuple[str, str], Any] = {}
    serving: dict[tuple[str, str], list[str]] = {}
    if token:
        from edge_runtime.hubclient import HubClient, HubError, HubUnreachable

        client = HubClient(hub, token)
        try:
            for m in client.get("/api/v1/models"):
                for v in m["versions"]:
                    warehouse[(m["name"], v["version"])] = v
            for n in client.get("/api/v1/nodes"):
                per = ((n.get("models") or {}).get("models") or {})
                for name, st in per.items():
                    if isinstance(st, dict) and st.get("active") is not None:
                        serving.setdefault((name, str(st["active"])), []).append(
                            n["name"] + ("" if n.get("online") else " (offline)"))
        except (HubError, HubUnreachable) as exc:
            typer.echo(f"warning: warehouse and nodes not listed: {exc}", err=True)
    rows = []
    for v in tracking.list_versions(workdir=root):
        info = tracking.version_info(v["name"], v["version"], root)
        figures = [f"{info['metrics'][k]:.3f}" if k in info["metrics"] else "-"
                   for k in (f"clean.{metric}", f"drifted.{metric}")]
        key = (v["name"], v["version"])
        rows.append([v["name"], v["version"], ", ".join(sorted(info["aliases"])), *figures,
                     "yes" if key in warehouse else ("?" if not token else "no"),
                     ", ".join(sorted(serving.get(key, []))) or ("?" if not token else "-")])
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"models in {tracking.tracking_uri(root)}")
    for c in ("name", "version", "aliases", f"clean {metric}", f"drifted {metric}", "warehouse", "served by"):
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    Console().print(t)
    if not token:
        typer.echo("(no hub token: warehouse and serving nodes unknown; set EDGELOOP_HUB_TOKEN)", err=True)


@model_app.command("show")
@needs_cloud
def show(name: str = typer.Argument(...), version: str = typer.Argument("champion", help="version or alias"),
         root: Path = Root) -> None:
    """A registered version: aliases, run, data version, params and metrics."""
    import json

    from models import tracking

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


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(scores: list[float | None], top: float) -> str:
    """Scores as a line of block characters scaled to ``top`` (``·`` where a point had no score)."""
    out = []
    for s in scores:
        if s is None:
            out.append("·")
        else:
            out.append(_BARS[min(len(_BARS) - 1, int(len(_BARS) * min(s, top) / top)) if top > 0 else 0])
    return "".join(out)


@model_app.command("drift")
def drift(name: str = typer.Argument(..., help="model name"),
          since: str = typer.Option("24h", "--since", help="how far back (30m, 24h, 7d)"),
          threshold: Optional[float] = typer.Option(None, "--threshold", min=0.01,
                                                    help="set the model's drift threshold (PSI)"),
          sustain: Optional[str] = typer.Option(None, "--sustain",
                                                help="set how long the score must stay over it (2m, 10m)"),
          as_json: bool = typer.Option(False, "--json", help="the hub's answer as JSON"),
          hub: str = HubUrl, token: Optional[str] = Token) -> None:
    """A model's drift on each node: the newest score (the largest PSI over its inputs and its confidence) and
    which input it is, the alarm (over the threshold for the sustain time), and the score over time. With
    --threshold/--sustain: change the model's settings first (both, or the one given with the other kept)."""
    import json
    import time
    from urllib.parse import quote

    from edge_runtime.clikit import duration

    client = hub_client(hub, token)
    path = f"/api/v1/models/{quote(name)}/drift"
    if threshold is not None or sustain is not None:
        now = hub_call(client.get, path + "?limit=1")
        body = {"threshold": threshold if threshold is not None else now["threshold"],
                "sustain_s": duration(sustain, "--sustain", zero=True) if sustain is not None else now["sustain_s"]}
        hub_call(client.put, path + "/settings", body)
    got = hub_call(client.get, f"{path}?since={time.time() - duration(since, '--since'):.0f}")
    if as_json:
        typer.echo(json.dumps(got, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"{name}: drift by node (threshold {got['threshold']:g} for {got['sustain_s']:g} s"
                    f"{', the default' if got.get('default') else ''})")
    for c in ("node", "version", "score", "worst input", "rows", "alarm", f"over the last {since}"):
        t.add_column(c)
    lines = {(s["node"], s["version"]): [p[1] for p in s["points"]] for s in got["series"]}
    top = max([got["threshold"] * 2, *(v for pts in lines.values() for v in pts if v is not None)])
    for node, v in got["nodes"].items():
        alarm = ("[red]DRIFT[/] since " + time.strftime("%H:%M:%S", time.localtime(v["over_since"]))
                 if v["alarm"] else ("over, not yet sustained" if v["over_since"] else "-"))
        score = "-" if v["score"] is None else f"{v['score']:.3f}"
        t.add_row(node, v["version"], score, v.get("worst") or "-", str(v["rows"]), alarm,
                  sparkline(lines.get((node, v["version"]), [])[-60:], top))
    if not got["nodes"]:
        console.print(f"no drift reported for {name} since {since}: nodes report it once a version with a drift "
                      "profile has scored 200 rows", markup=False)
        return
    console.print(t)
