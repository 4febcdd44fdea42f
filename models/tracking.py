"""MLflow for the reference models: runs (params, metrics, artifacts), the registry and its aliases.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else a SQLite store in ``var/mlflow/mlflow.db`` under
the working directory (MLflow 3.17 refuses the plain file store). Artifacts go next to it unless the URI
says otherwise. Aliases decide what ships: ``challenger`` is the latest evaluated candidate, ``champion``
what is packaged and rolled out (the first candidate of a model becomes champion; later ones by the
loop's gate or ``edgeloop model promote``). MLflow is imported only here, never by the edge runtime.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXPERIMENT = "edgeloop"
CHAMPION, CHALLENGER = "champion", "challenger"


def tracking_uri(workdir: str | Path | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    base = Path(workdir or Path.cwd()).resolve() / "var" / "mlflow"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'mlflow.db'}"


def _mlflow(workdir: str | Path | None = None) -> Any:
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    users = "MLFLOW_TRACKING_URI" in os.environ
    mlflow.set_tracking_uri(tracking_uri(workdir))
    if not users:
        # set_tracking_uri also exports MLFLOW_TRACKING_URI: left there, it would pin every later workdir (and
        # every child process) to this store, and send artifacts to ./mlruns of whatever directory is current
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return mlflow


def _experiment(mlflow: Any, workdir: str | Path | None) -> str:
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (Path(workdir or Path.cwd()).resolve() / "var" / "mlflow" / "artifacts").as_uri()
    return mlflow.create_experiment(EXPERIMENT, artifact_location=location)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def log_training(name: str, artifact: Path, params: Mapping[str, Any], info: Mapping[str, Any],
                 tags: Mapping[str, str], workdir: str | Path | None = None) -> dict[str, Any]:
    """One MLflow run for a training: params, training metrics, the artifact under ``model/``; the
    artifact registered as a new version of ``name``. Returns ``{"run_id", "version", "tracking_uri"}``."""
    mlflow = _mlflow(workdir)
    from mlflow import MlflowClient

    exp = _experiment(mlflow, workdir)
    with mlflow.start_run(experiment_id=exp, run_name=f"{name}-train") as run:
        mlflow.set_tags({"model": name, **tags})
        mlflow.log_params({k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in params.items()})
        mlflow.log_metrics({f"train.{k}": v for k, v in _flat(info).items()})
        if isinstance(info.get("loss"), list):
            for step, v in enumerate(info["loss"]):
                mlflow.log_metric("train.loss", v, step=step)
        mlflow.log_artifacts(str(artifact), artifact_path="model")
        run_id = run.info.run_id
        source = f"{run.info.artifact_uri}/model"
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - MlflowException when absent
        client.create_registered_model(name, description=f"EdgeLoop model {name} ({tags.get('data') or tags.get('source') or 'trained here'})")
    mv = client.create_model_version(name, source=source, run_id=run_id, tags={"data_version": tags.get(
        "data_version", "")})
    return {"run_id": run_id, "version": str(mv.version), "tracking_uri": mlflow.get_tracking_uri()}


def log_evaluation(name: str, run: Mapping[str, Any], metrics: Mapping[str, Any], files: list[Path],
                   workdir: str | Path | None = None) -> dict[str, Any]:
    """Add evaluation metrics and plot files to the training run; alias the version ``challenger`` (and
    ``champion`` when the model has none). Returns the aliases now on the version."""
    mlflow = _mlflow(workdir)
    from mlflow import MlflowClient

    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({k: v for k, v in _flat(metrics).items() if v is not None})
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="evaluation")
    client = MlflowClient()
    client.set_registered_model_alias(name, CHALLENGER, run["version"])
    aliases = [CHALLENGER]
    if champion(name, workdir) is None:
        client.set_registered_model_alias(name, CHAMPION, run["version"])
        aliases.append(CHAMPION)
    return {"version": run["version"], "aliases": aliases}


def set_run_tags(run_id: str, tags: Mapping[str, Any], workdir: str | Path | None = None) -> None:
    _mlflow(workdir)
    from mlflow import MlflowClient

    client = MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def log_files(run_id: str, files: list[Path], artifact_path: str, workdir: str | Path | None = None) -> None:
    """Attach files (a loop report, plots) to an existing run."""
    _mlflow(workdir)
    from mlflow import MlflowClient

    client = MlflowClient()
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path=artifact_path)


def champion(name: str, workdir: str | Path | None = None) -> str | None:
    return alias_version(name, CHAMPION, workdir)


def alias_version(name: str, alias: str, workdir: str | Path | None = None) -> str | None:
    _mlflow(workdir)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(name: str, version: str, alias: str = CHAMPION, workdir: str | Path | None = None) -> None:
    _mlflow(workdir)
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)


def version_info(name: str, version: str, workdir: str | Path | None = None) -> dict[str, Any]:
    """A registered version: its run's metrics and params, aliases, source URI."""
    _mlflow(workdir)
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    return {"name": name, "version": str(mv.version), "run_id": mv.run_id, "source": mv.source,
            "aliases": list(mv.aliases), "metrics": dict(run.data.metrics), "params": dict(run.data.params),
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            "created": mv.creation_timestamp}


def list_versions(name: str | None = None, workdir: str | Path | None = None) -> list[dict[str, Any]]:
    _mlflow(workdir)
    from mlflow import MlflowClient

    client = MlflowClient()
    names = [name] if name else [m.name for m in client.search_registered_models()]
    out = []
    for n in names:
        for mv in client.search_model_versions(f"name='{n}'"):
            out.append({"name": n, "version": str(mv.version), "aliases": list(mv.aliases), "run_id": mv.run_id,
                        "created": mv.creation_timestamp})
    return sorted(out, key=lambda r: (r["name"], int(r["version"])))


def download(name: str, version: str, dest: Path, workdir: str | Path | None = None) -> Path:
    """The registered version's model artifact directory, downloaded to ``dest``."""
    mlflow = _mlflow(workdir)
    from mlflow import MlflowClient

    mv = MlflowClient().get_model_version(name, version)
    dest.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dest)))
