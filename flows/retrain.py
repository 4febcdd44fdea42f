"""The loop's ``retrain`` step: re-run the training pipeline for a model with new labels (``dvc repro`` of its stages
in a DVC workspace, the stages directly otherwise), tracked in MLflow, the new version registered as
``challenger``; and the pieces of retraining several models at once (:func:`flows.loop.retrain_on_dask`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from .config import LoopConfig, LoopError
from .dvc import env as dvc_env
from .dvc import is_dvc_repo, run, run_locked, stage_outs
from .state import LoopState

__all__ = ["retrain_due", "labelled_dirs", "retrain", "register_candidate", "before_parallel_retrain", "train_stages",
           "STAGE_TIMEOUT_S"]


def retrain_due(cfg: LoopConfig, model: str, state: LoopState) -> tuple[int, str | None]:
    """``(labels harvested for model, why it is not retrained now)``; the reason is None when it is due."""
    have, used = state.harvested_count(model), state.trained_labels(model)
    if have <= used:
        return have, f"no labels since the last training ({have} harvested)"
    if have - used < cfg.min_labels:
        return have, f"{have - used} new labels, fewer than min_labels={cfg.min_labels}"
    return have, None


def labelled_dirs(cfg: LoopConfig) -> None:
    from models import stages
    from models.common import load_params

    # dependencies of prepare@<model> in dvc.yaml, empty until labels come
    params_file = cfg.root / "params.yaml"
    for name in stages.workspace_models(load_params(params_file) if params_file.exists() else {}):
        (cfg.root / "data" / "labelled" / name).mkdir(parents=True, exist_ok=True)


def retrain(cfg: LoopConfig, model: str, harvested: dict[str, Any], state: LoopState) -> dict[str, Any]:
    """Re-run the training pipeline for ``model`` on the labelled data (``dvc repro`` in a DVC workspace;
    the stages directly otherwise), tracked in MLflow; the new version becomes ``challenger``."""
    from models import stages

    have, why = retrain_due(cfg, model, state)
    if why is not None:
        return {"retrained": False, "why": why}
    t = time.perf_counter()
    labelled_dirs(cfg)
    if is_dvc_repo(cfg):
        # this model's stages only (each model has its own: the others' new labels, below their min_labels, stay
        # pending in `dvc status`)
        done = run(cfg, "repro", f"evaluate@{model}")
        if done.returncode != 0:
            raise LoopError(f"dvc repro evaluate@{model} failed: {(done.stdout + done.stderr)[-3000:]}")
    else:
        from models.common import load_params
        from models.kit import FieldDataError

        params = load_params(cfg.root / "params.yaml")
        try:
            stages.prepare(cfg.root, params, [model])
        except FieldDataError as exc:  # the cold start: not yet enough labelled field data for honest splits
            return {"retrained": False, "why": f"field data not ready: {exc}"}
        stages.train(cfg.root, model, params)
        stages.evaluate(cfg.root, model)
    return register_candidate(cfg, model, harvested, state, have, time.perf_counter() - t)


def register_candidate(cfg: LoopConfig, model: str, harvested: dict[str, Any], state: LoopState, labels: int,
                       seconds: float) -> dict[str, Any]:
    """After a training of ``model`` on ``labels`` harvested labels: the labelled data version tagged on its
    MLflow run, its ``challenger`` version recorded as trained (retrain's summary)."""
    from models import tracking

    run = json.loads((cfg.root / "artifacts" / f"{model}.run.json").read_text())
    if harvested.get("data_version") and run.get("run_id"):
        tracking.set_run_tags(run["run_id"], {"labelled_data_version": harvested["data_version"]}, cfg.root)
    candidate = tracking.alias_version(model, "challenger", cfg.root)
    state.mark_trained(model, labels, candidate)
    return {"retrained": True, "candidate": candidate, "seconds": round(seconds, 1), "labels_used": labels}


# -- retrain several models at the same time (flows.loop.retrain_on_dask) -------------------------------
# `dvc repro` holds a lock on the whole repository, so two `dvc repro evaluate@<model>` in one workspace
# cannot run at once. Instead each model's share of them runs as the same stage commands (prepare, train,
# evaluate of that model: its own files only) in its own process, and DVC's bookkeeping, `dvc commit` of the
# stages that ran (what `dvc repro` records in dvc.lock after running them), is done one at a time under a
# file lock: afterwards `dvc status` says the pipeline is up to date, as after `dvc repro`.
STAGE_TIMEOUT_S = 3600.0


def before_parallel_retrain(cfg: LoopConfig) -> None:
    """Once, before the models' stages run at the same time: the label folders, the stage upstream of the
    generated-data models (``dvc repro data/dvc.yaml:generate``: nothing runs when data/raw is up to date) and the MLflow store with its
    experiment, which two first writers would otherwise both try to create."""
    from models import tracking

    labelled_dirs(cfg)
    if is_dvc_repo(cfg) and (cfg.root / "data" / "dvc.yaml").is_file():  # the reference models' generated data
        run_locked(cfg, "repro", "data/dvc.yaml:generate")
    tracking._experiment(tracking._mlflow(cfg.root), cfg.root)


def train_stages(cfg: LoopConfig, model: str, threads: int | None = None) -> dict[str, Any]:
    """``dvc repro evaluate@<model>``, for one worker of a parallel retraining: ``python -m models.stages
    prepare|train|evaluate <model>`` (the commands dvc.yaml runs, on this model only: they write its own files
    and its own MLflow run), then, in a DVC workspace, ``dvc commit`` of its stages under :func:`dvc_lock`. ``threads`` caps the BLAS/OpenMP threads of each stage
    (its share of the cores). Returns each stage's start and end (epoch seconds) and CPU seconds, the worker's
    pid, seconds, the stages' OMP_NUM_THREADS (None: not set)."""
    env = dvc_env(cfg)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, str(threads))
    in_dvc = is_dvc_repo(cfg)
    if in_dvc:  # as `dvc repro` does before it runs a stage: its outputs go first
        for out in stage_outs(cfg, f"prepare@{model}") + stage_outs(cfg, f"train@{model}"):
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
    t = time.perf_counter()
    windows: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    for stage in ("prepare", "train", "evaluate"):
        start, used = time.time(), children_cpu_s()
        done = subprocess.run([sys.executable, "-m", "models.stages", stage, model], cwd=cfg.root, env=env,
                              capture_output=True, text=True, timeout=STAGE_TIMEOUT_S)
        windows[stage], cpu[stage] = [start, time.time()], round(children_cpu_s() - used, 1)
        if done.returncode != 0:
            raise LoopError(f"{model}: `python -m models.stages {stage} {model}` failed (exit {done.returncode}): "
                            f"{(done.stdout + done.stderr)[-3000:]}")
    if in_dvc:
        run_locked(cfg, "commit", "-f", "-q", f"prepare@{model}", f"train@{model}", f"evaluate@{model}")
    return {"model": model, "pid": os.getpid(), "stages": windows, "cpu_s": cpu,
            "seconds": round(time.perf_counter() - t, 1), "omp_threads": env.get("OMP_NUM_THREADS")}


def children_cpu_s() -> float:
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime
