"""The agile loop's steps as plain functions (the Prefect flows in :mod:`flows.loop` wrap them).

collect -> label -> harvest -> retrain -> gate -> package -> rollout. Each takes a :class:`LoopConfig`
and the :class:`~flows.state.LoopState`, does its part, records it in the state and returns a summary
dict for the loop report. Every step can be run again: what the state says is done is not redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .state import LoopState


class LoopError(RuntimeError):
    """A step cannot go on; the message says what is missing and how to fix it."""


@dataclass
class LoopConfig:
    """Where the loop's parts are. Every field has an environment variable (EDGELOOP_<FIELD>)."""

    workspace: str = "."                       # params.yaml, dvc.yaml, data/, artifacts/, var/
    hub_url: str = "http://127.0.0.1:8080"
    hub_token: str | None = None               # the hub's admin token
    label_studio_url: str = "http://127.0.0.1:8081"
    label_studio_token: str | None = None
    models: list[str] = field(default_factory=lambda: ["pump_anomaly"])
    max_label_share: float = 0.10              # at most this share of the uploads goes to labelling
    random_share: float = 0.5                  # of that budget, drawn uniformly (the rest: the edge's hard examples)
    min_labels: int = 20                       # retrain only with at least this many new labels
    metric: str = "accuracy"
    clean_margin: float = 0.01                 # the candidate may lose at most this much on the clean holdout
    drifted_margin: float = 0.0                # and must gain more than this on the drifted one
    group: str | None = None                   # roll out to this node group (none: do not roll out)
    canary: int = 1
    watch_s: float = 60.0
    approval: bool = False                     # wait for a person's approval (Prefect UI) before rolling out
    keys_dir: str = "var/keys"                 # signing keys for model bundles
    parallel_retrain: bool = False             # train the models that have new labels at the same time, one
                                               # Dask worker process each (flows.loop.retrain_on_dask)

    @classmethod
    def from_env(cls, **overrides: Any) -> LoopConfig:
        cfg = cls()
        for name, value in asdict(cfg).items():
            env = os.environ.get(f"EDGELOOP_{name.upper()}")
            if env is None:
                continue
            if isinstance(value, bool):
                setattr(cfg, name, env.lower() in ("1", "true", "yes"))
            elif isinstance(value, list):
                setattr(cfg, name, [v.strip() for v in env.split(",") if v.strip()])
            elif isinstance(value, (int, float)) and value is not None:
                setattr(cfg, name, type(value)(env))
            else:
                setattr(cfg, name, env)
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg

    @property
    def root(self) -> Path:
        return Path(self.workspace).resolve()

    def state(self) -> LoopState:
        return LoopState(self.root / "var" / "loop" / "state.db")

    def hub(self) -> Any:
        from edge_runtime.hubclient import HubClient

        if not self.hub_token:
            raise LoopError("no hub token: set EDGELOOP_HUB_TOKEN (the hub's admin token, in its data folder's "
                            "admin.token)")
        return HubClient(self.hub_url, self.hub_token)

    def labelling(self) -> Any:
        from .labelstudio import Labelling

        if not self.label_studio_token:
            raise LoopError("no Label Studio token: set EDGELOOP_LABEL_STUDIO_TOKEN (`edgeloop up` prints it)")
        return Labelling(self.label_studio_url, self.label_studio_token)


def _hub_call(cfg: LoopConfig, fn: Any) -> Any:
    from edge_runtime.hubclient import HubUnreachable

    try:
        return fn()
    except HubUnreachable as exc:
        raise LoopError(f"the hub at {cfg.hub_url} is unreachable ({exc}): start it with `edgeloop hub serve` "
                        "or `edgeloop up`; the next run resumes from the last watermark") from None


# -- collect --------------------------------------------------------------------------------------
def model_output(values: dict[str, Any], model: str) -> str | None:
    """The output field a record's apply_model step wrote for ``model`` (None: not this model's record)."""
    from edge_runtime.modelkit import model_outputs

    return next((out for out, _version in model_outputs(values, model)), None)


def descriptor(cfg: LoopConfig, model: str) -> dict[str, Any]:
    path = cfg.root / "artifacts" / model / "edgeloop-model.json"
    if not path.exists():
        raise LoopError(f"no trained {model} in {cfg.root / 'artifacts'}: run `make repro` (or `dvc repro`) there "
                        "first")
    return json.loads(path.read_text())


MEDIA_FIELD = "_media"  # in a sent item's values: node/media id of its image at the hub
MEDIA_GRACE_S = 600.0   # how long collect waits for a record's image to reach the hub before giving up on it


def sample_key(model: str, upload_id: str) -> float:
    """A uniform number in [0, 1) fixed by the upload's id: the hub-side random share picks the smallest
    keys, so a re-run (after a failure) picks the same records and nothing has to be remembered."""
    digest = hashlib.blake2b(f"{model}\0{upload_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def collect(cfg: LoopConfig, state: LoopState, model: str, *, page: int = 5000) -> dict[str, Any]:
    """New uploaded inference records of ``model`` since the watermark, and which of them to label: at most
    ``max_label_share`` of them, ``random_share`` of that budget drawn uniformly from all the records (what
    the model now sees), the rest the edge's hard examples (records it marked ``select``: low confidence,
    disagreement), least confident first. Returns the items to label and counts; the watermark moves only
    when labelling succeeds.

    Why a random share: on the SYNTHETIC pump scenario (6,048 drifted windows, 10% labelled) labelling the
    least confident windows only recovered 0.70 drifted accuracy, a uniform sample 0.91, half and half 0.91
    (bench/agile_loop.py; low-confidence windows sit on the old boundary, the drift moved the data away)."""
    from hub.rollouts import record_values

    hub = cfg.hub()
    labels = descriptor(cfg, model).get("labels") or ["0", "1"]
    after = state.watermark(model)
    seen = marked = no_image = 0
    hard: list[dict[str, Any]] = []
    pool: list[tuple[float, dict[str, Any]]] = []  # records under the sampling threshold, for the random share
    keep_below = min(1.0, 2.0 * cfg.max_label_share * cfg.random_share)  # twice what the random share needs
    last = after

    images = descriptor(cfg, model).get("input") in ("image", "clip")

    def item(u: dict[str, Any], values: dict[str, Any], out: str, reason: str) -> dict[str, Any]:
        pred = values.get(out)
        kept = {k: v for k, v in values.items() if isinstance(v, (int, float, str))}
        media = (u.get("image") or {}).get("media") if isinstance(u.get("image"), dict) else None
        if media:
            kept[MEDIA_FIELD] = f"{u.get('node')}/{media}"  # where harvest finds the image again
        return {"id": u["id"], "node": u.get("node"), "device": u.get("device"), "ts": u.get("ts"),
                "values": kept,
                "prediction": labels[int(pred)] if isinstance(pred, (int, float)) and 0 <= int(pred) < len(labels)
                else str(pred), "confidence": values.get(f"{out}_confidence"),
                "model_version": values[f"{out}_model"], "reason": reason,
                "cursor": u.get("cursor"), "received_at": u.get("received_at")}

    while True:
        got = _hub_call(cfg, lambda w=last: hub.get(f"/api/v1/uploads?kind=record&after={w}&limit={page}"))
        for u in got["items"]:
            values = dict(record_values(u))
            out = model_output(values, model)
            if out is None:
                continue
            if images and not (u.get("image") or {}).get("media"):
                no_image += 1  # an image model's decision without its image cannot be labelled
                continue
            seen += 1
            reason = values.get("select")
            marked += bool(reason)
            if reason and reason != "random":
                hard.append(item(u, values, out, str(reason)))
            key = sample_key(model, u["id"])
            if key < keep_below:
                pool.append((key, item(u, values, out, "random")))
        if not got["items"]:
            break
        last = got["next"]
    budget = int(seen * cfg.max_label_share)
    fresh = state.unsent([p["id"] for p in hard] + [p["id"] for _, p in pool])
    pool.sort(key=lambda kp: kp[0])
    randoms = [p for _, p in pool if p["id"] in fresh][: int(round(budget * cfg.random_share))]
    chosen = {p["id"] for p in randoms}
    hard = sorted((p for p in hard if p["id"] in fresh and p["id"] not in chosen),
                  key=lambda p: p["confidence"] if p["confidence"] is not None else 1.0)[: budget - len(randoms)]
    chosen |= {p["id"] for p in hard}
    fill = [p for _, p in pool if p["id"] in fresh and p["id"] not in chosen][: budget - len(randoms) - len(hard)]
    from edge_runtime.hubclient import HubError

    items, pending = hard + randoms + fill, []
    for p in items if images else ():
        try:
            p["image"] = _hub_call(cfg, lambda p=p: hub.get(f"/api/v1/media/{p['values'][MEDIA_FIELD]}"))
        except HubError as exc:
            if exc.status != 404:
                raise
            # records come over MQTT, their images over HTTP: a recent one may not be there yet; it is taken
            # up again by the next run (the watermark stays before it). An old one never will be: skipped.
            if time.time() - (p.get("received_at") or 0) < MEDIA_GRACE_S:
                pending.append(p)
            else:
                no_image += 1
    if images:
        items = [p for p in items if "image" in p]
        if pending:
            last = min(last, min(p["cursor"] for p in pending) - 1)
    return {"model": model, "uploads": seen, "selected_at_edge": marked, "budget": budget,
            "random": len(randoms) + len(fill), "hard": len(hard), "without_image": no_image,
            "image_pending": len(pending), "items": items, "watermark": last}


# -- label ----------------------------------------------------------------------------------------
def label(cfg: LoopConfig, state: LoopState, model: str, collected: dict[str, Any]) -> dict[str, Any]:
    """Send the collected items to the model's Label Studio project (created if missing), with the edge's
    prediction as a pre-annotation; then move the watermark."""
    d = descriptor(cfg, model)
    ls = cfg.labelling()
    kind = "image" if d.get("input") in ("image", "clip") else "table"
    project = ls.ensure_project(model, kind, list(d.get("labels") or ["0", "1"]))
    items = collected["items"]
    sent = ls.send(project, items) if items else 0
    state.mark_sent(model, project, items)
    state.set_watermark(model, collected["watermark"])
    return {"project": project, "sent": sent, "total_sent": state.sent_count(model)}


# -- harvest --------------------------------------------------------------------------------------
def _env(cfg: LoopConfig) -> dict[str, str]:
    """The environment DVC runs the pipeline's stages in: this venv first on PATH, the workspace importable."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "BENTOML_DO_NOT_TRACK": "true",
            "PYTHONPATH": os.pathsep.join(p for p in (str(cfg.root), os.environ.get("PYTHONPATH", "")) if p)}


def _dvc(cfg: LoopConfig, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cfg.root, capture_output=True, text=True,
                          env=_env(cfg), timeout=timeout)


def is_dvc_repo(cfg: LoopConfig) -> bool:
    return (cfg.root / ".dvc").is_dir()


def harvest(cfg: LoopConfig, state: LoopState, model: str, iteration: int) -> dict[str, Any]:
    """Finished annotations not harvested before -> ``data/labelled/<model>/batch-<iteration>-<n>.npz``
    (features and labels of table models), then ``dvc add data/labelled`` + ``dvc push``: a new data
    version (its hash is returned and goes into the MLflow run). Annotations with an unknown label are
    skipped and reported."""
    d = descriptor(cfg, model)
    ls = cfg.labelling()
    project = ls.ensure_project(model, "image" if d.get("input") in ("image", "clip") else "table",
                                list(d.get("labels") or ["0", "1"]))
    labelled, problems = ls.harvest(project)
    new_ids = state.new_annotations(r["annotation_id"] for r in labelled)
    rows = [r for r in labelled if r["annotation_id"] in new_ids]
    labels = list(d.get("labels") or ["0", "1"])
    out: dict[str, Any] = {"project": project, "new_labels": 0, "problems": problems, "data_version": None}
    if not rows:
        return out
    values = state.sent_values(r["id"] for r in rows)
    if d.get("input") == "table":
        features = d["features"]
        usable = [r for r in rows if r["id"] in values and all(f in values[r["id"]] for f in features)]
        X = np.array([[float(values[r["id"]][f]) for f in features] for r in usable], dtype=np.float64)
        lacks = "the uploaded record lacks the model's features"
    elif d.get("input") in ("image", "clip"):
        usable, crops = [], []
        for r in rows:
            crop = _labelled_image(cfg, values.get(r["id"], {}).get(MEDIA_FIELD), d["shape"], d["input"] == "clip")
            if crop is not None:
                usable.append(r)
                crops.append(crop)
        X = np.stack(crops) if crops else np.zeros((0, *d["shape"]), dtype=np.uint8)
        lacks = "its image is not at the hub or does not decode"
    else:
        raise LoopError(f"harvesting {d.get('input')} labels of {model} into training data is not built yet; "
                        "its annotations stay in Label Studio")
    for r in rows:
        if r not in usable:
            problems.append(f"task {r.get('task_id')}: {lacks}")
    if usable:
        y = np.array([labels.index(r["label"]) for r in usable], dtype=np.int64)
        batch = f"batch-{iteration:04d}-{int(time.time())}"
        folder = cfg.root / "data" / "labelled" / model
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / f"{batch}.npz", X=X, y=y, ids=np.array([r["id"] for r in usable]))
        out["data_version"] = _version_data(cfg)
        state.mark_harvested(model, batch, usable)
        out.update(new_labels=len(usable), batch=batch, positives=int(y.sum()))
    return out


def _labelled_image(cfg: LoopConfig, ref: str | None, shape: list[int], clip: bool = False) -> np.ndarray | None:
    """The image a person labelled, from the hub, as the model's input (uint8, ``shape``, the node's channel
    order: OpenCV decodes what OpenCV encoded at the node); None when it is gone or does not decode. A clip
    model's ``shape`` is (frames, height, width, channels) and its image the node's filmstrip (the frames
    side by side, oldest first), cut back into its frames."""
    import cv2

    from edge_runtime.hubclient import HubError

    if not ref:
        return None
    try:
        data = _hub_call(cfg, lambda: cfg.hub().get(f"/api/v1/media/{ref}"))
    except HubError:
        return None
    img = cv2.imdecode(np.frombuffer(bytes(data), dtype=np.uint8), cv2.IMREAD_COLOR) \
        if isinstance(data, (bytes, bytearray)) else None
    if img is None:
        return None
    frames = np.array_split(img, int(shape[0]), axis=1) if clip else [img]
    h, w = (int(shape[1]), int(shape[2])) if clip else (int(shape[0]), int(shape[1]))
    if min(f.shape[1] for f in frames) == 0:
        return None  # narrower than the clip has frames: not a filmstrip of this model
    frames = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    return (np.stack(frames) if clip else frames[0]).astype(np.uint8)


def _version_data(cfg: LoopConfig) -> str | None:
    """``dvc add data/labelled`` (+ push to the default remote): the data version is the .dvc file's md5."""
    if not is_dvc_repo(cfg):
        from models.common import digest_dir

        return digest_dir(cfg.root / "data" / "labelled")
    added = _dvc(cfg, "add", "-q", "data/labelled")
    if added.returncode != 0:
        raise LoopError(f"dvc add data/labelled failed: {added.stderr[-2000:]}")
    pushed = _dvc(cfg, "push", "-q", "data/labelled.dvc")
    if pushed.returncode != 0:
        raise LoopError(f"dvc push failed (is a default remote configured?): {pushed.stderr[-2000:]}")
    import yaml

    meta = yaml.safe_load((cfg.root / "data" / "labelled.dvc").read_text())
    return str(meta["outs"][0]["md5"])


# -- retrain, gate --------------------------------------------------------------------------------
def retrain_due(cfg: LoopConfig, model: str, state: LoopState) -> tuple[int, str | None]:
    """``(labels harvested for model, why it is not retrained now)``; the reason is None when it is due."""
    have, used = state.harvested_count(model), state.trained_labels(model)
    if have <= used:
        return have, f"no labels since the last training ({have} harvested)"
    if have - used < cfg.min_labels:
        return have, f"{have - used} new labels, fewer than min_labels={cfg.min_labels}"
    return have, None


def _labelled_dirs(cfg: LoopConfig) -> None:
    from models import stages

    for name in stages.MODELS:  # dependencies of prepare_<model> in dvc.yaml, empty until labels come
        (cfg.root / "data" / "labelled" / name).mkdir(parents=True, exist_ok=True)


def retrain(cfg: LoopConfig, model: str, harvested: dict[str, Any], state: LoopState) -> dict[str, Any]:
    """Re-run the training pipeline for ``model`` on the labelled data (``dvc repro`` in a DVC workspace;
    the stages directly otherwise), tracked in MLflow; the new version becomes ``challenger``."""
    from models import stages

    have, why = retrain_due(cfg, model, state)
    if why is not None:
        return {"retrained": False, "why": why}
    t = time.perf_counter()
    _labelled_dirs(cfg)
    if is_dvc_repo(cfg):
        # Not `dvc repro train_<model> evaluate`: evaluate depends on every model, so that would also retrain
        # each other model whose labels changed, below its min_labels. This model's stages, then evaluate alone
        # (the other models' artifacts are unchanged; `dvc status` keeps showing their new labels as pending).
        for args in (("repro", f"train_{model}"), ("repro", "--single-item", "evaluate")):
            done = _dvc(cfg, *args)
            if done.returncode != 0:
                raise LoopError(f"dvc {' '.join(args)} failed: {(done.stdout + done.stderr)[-3000:]}")
    else:
        from models.common import load_params

        params = load_params(cfg.root / "params.yaml")
        stages.prepare(cfg.root, params, [model])
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
# `dvc repro` holds a lock on the whole repository, so two `dvc repro train_<model> evaluate` in one workspace
# cannot run at once. Instead each model's share of them runs as the same stage commands (prepare, train,
# evaluate of that model: its own files only) in its own process, and DVC's bookkeeping, `dvc commit` of the
# stages that ran (what `dvc repro` records in dvc.lock after running them), is done one at a time under a
# file lock: afterwards `dvc status` says the pipeline is up to date, as after `dvc repro`.
STAGE_TIMEOUT_S = 3600.0


@contextmanager
def dvc_lock(cfg: LoopConfig) -> Iterator[None]:
    """An exclusive lock on the workspace's DVC bookkeeping (flock on ``var/loop/dvc-bookkeeping.lock``: held
    until the holder lets go, released if it dies); every DVC command of a parallel retraining runs under it."""
    import fcntl

    path = cfg.root / "var" / "loop" / "dvc-bookkeeping.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _dvc_locked(cfg: LoopConfig, *args: str) -> None:
    with dvc_lock(cfg):
        done = _dvc(cfg, *args)
    if done.returncode != 0:
        raise LoopError(f"dvc {' '.join(args)} failed: {(done.stdout + done.stderr)[-3000:]}")


def before_parallel_retrain(cfg: LoopConfig) -> None:
    """Once, before the models' stages run at the same time: the label folders, the stages upstream of every
    model (``dvc repro generate``: nothing runs when data/raw is up to date) and the MLflow store with its
    experiment, which two first writers would otherwise both try to create."""
    from models import tracking

    _labelled_dirs(cfg)
    if is_dvc_repo(cfg):
        _dvc_locked(cfg, "repro", "generate")
    tracking._experiment(tracking._mlflow(cfg.root), cfg.root)


def _stage_outs(cfg: LoopConfig, stage: str) -> list[Path]:
    import yaml

    spec = yaml.safe_load((cfg.root / "dvc.yaml").read_text())["stages"][stage]
    return [cfg.root / (next(iter(o)) if isinstance(o, dict) else o) for o in spec.get("outs") or []]


def train_stages(cfg: LoopConfig, model: str, threads: int | None = None) -> dict[str, Any]:
    """``model``'s share of ``dvc repro train_<model> evaluate``, for one worker of a parallel retraining:
    ``python -m models.stages prepare|train|evaluate <model>`` (the commands dvc.yaml runs, on this model
    only: they write its own files and its own MLflow run), then, in a DVC workspace, ``dvc commit`` of its
    prepare and train stages under :func:`dvc_lock`. The shared evaluate stage is committed by
    :func:`commit_evaluation` once every model is done. ``threads`` caps the BLAS/OpenMP threads of each stage
    (its share of the cores). Returns each stage's start and end (epoch seconds) and CPU seconds, the worker's
    pid, seconds, the stages' OMP_NUM_THREADS (None: not set)."""
    env = _env(cfg)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, str(threads))
    dvc = is_dvc_repo(cfg)
    if dvc:  # as `dvc repro` does before it runs a stage: its outputs go first
        for out in _stage_outs(cfg, f"prepare_{model}") + _stage_outs(cfg, f"train_{model}"):
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
    t = time.perf_counter()
    windows: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    for stage in ("prepare", "train", "evaluate"):
        start, used = time.time(), _children_cpu_s()
        done = subprocess.run([sys.executable, "-m", "models.stages", stage, model], cwd=cfg.root, env=env,
                              capture_output=True, text=True, timeout=STAGE_TIMEOUT_S)
        windows[stage], cpu[stage] = [start, time.time()], round(_children_cpu_s() - used, 1)
        if done.returncode != 0:
            raise LoopError(f"{model}: `python -m models.stages {stage} {model}` failed (exit {done.returncode}): "
                            f"{(done.stdout + done.stderr)[-3000:]}")
    if dvc:
        _dvc_locked(cfg, "commit", "-f", "-q", f"prepare_{model}", f"train_{model}")
    return {"model": model, "pid": os.getpid(), "stages": windows, "cpu_s": cpu,
            "seconds": round(time.perf_counter() - t, 1), "omp_threads": env.get("OMP_NUM_THREADS")}


def _children_cpu_s() -> float:
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def commit_evaluation(cfg: LoopConfig) -> None:
    """``dvc commit evaluate`` (the stage shared by every model) once the models retrained at the same time
    are all evaluated; the models not retrained keep their metrics, which are still those of their artifacts."""
    if is_dvc_repo(cfg):
        _dvc_locked(cfg, "commit", "-f", "-q", "evaluate")


def gate(cfg: LoopConfig, model: str) -> dict[str, Any]:
    """Candidate (``challenger``) vs ``champion`` on the fixed holdouts: promoted only when it is not worse
    on clean (by more than ``clean_margin``) and better on drifted (by more than ``drifted_margin``)."""
    from models import tracking

    cand = tracking.alias_version(model, "challenger", cfg.root)
    champ = tracking.alias_version(model, "champion", cfg.root)
    if cand is None:
        return {"promoted": False, "why": "no candidate"}
    if cand == champ:
        return {"promoted": False, "why": f"version {cand} is already the champion", "champion": champ}
    m = cfg.metric
    ci = tracking.version_info(model, cand, cfg.root)["metrics"]
    pi = tracking.version_info(model, champ, cfg.root)["metrics"] if champ else {}
    figures = {"candidate": cand, "champion": champ, "metric": m, "candidate_clean": ci.get(f"clean.{m}"),
               "candidate_drifted": ci.get(f"drifted.{m}"), "champion_clean": pi.get(f"clean.{m}"),
               "champion_drifted": pi.get(f"drifted.{m}")}
    ok, why = decide(figures, cfg.clean_margin, cfg.drifted_margin)
    if not ok:
        return {"promoted": False, **figures, "why": why}
    tracking.promote(model, cand, workdir=cfg.root)
    return {"promoted": True, **figures, "why": why}


def decide(f: dict[str, Any], clean_margin: float, drifted_margin: float) -> tuple[bool, str]:
    """Promote when the candidate is not worse on clean (by more than ``clean_margin``) and better on
    drifted (by more than ``drifted_margin``); the first candidate of a model without champion passes."""
    m = f["metric"]
    c_clean, c_drift, p_clean, p_drift = (f["candidate_clean"], f["candidate_drifted"], f["champion_clean"],
                                          f["champion_drifted"])
    if c_clean is None or c_drift is None:
        return False, f"candidate {f['candidate']} has no clean/drifted {m}"
    if f["champion"] is None or p_clean is None or p_drift is None:
        return True, "no champion to beat"
    if c_clean < p_clean - clean_margin:
        return False, f"worse on clean: {m} {c_clean:.3f} < {p_clean:.3f} - {clean_margin}"
    if c_drift <= p_drift + drifted_margin:
        return False, f"not better on drifted: {m} {c_drift:.3f} <= {p_drift:.3f} + {drifted_margin}"
    return True, f"drifted {m} {p_drift:.3f} -> {c_drift:.3f}, clean {p_clean:.3f} -> {c_clean:.3f}"


# -- package, rollout -----------------------------------------------------------------------------
def package(cfg: LoopConfig, model: str, version: str) -> dict[str, Any]:
    """BentoML build + export + sign, uploaded to the hub's warehouse (idempotent: a version already there
    is reported, not rebuilt)."""
    from edge_runtime.hubclient import HubError
    from models import bento

    hub = cfg.hub()
    try:
        meta = _hub_call(cfg, lambda: hub.get(f"/api/v1/models/{model}/versions/{version}"))
        return {"packaged": False, "why": "already in the warehouse", "sha256": meta.get("sha256")}
    except HubError as exc:
        if exc.status != 404:
            raise
    keys = cfg.root / cfg.keys_dir
    if not (keys / "signing.key").exists():
        from edge_runtime.signing import init_keys

        init_keys(keys)
    shipped = _hub_call(cfg, lambda: bento.package(model, version, workdir=cfg.root, keys_dir=keys,
                                                   out_dir=cfg.root / "var" / "bundles", client=hub))
    return {"packaged": True, **{k: v for k, v in shipped.items() if isinstance(v, (str, int, float))}}


def rollout(cfg: LoopConfig, model: str, version: str, *, timeout: float = 1800) -> dict[str, Any]:
    """Canary, then the whole group, through the hub's rollout controller (the CLI's code path); waits for
    the end. Offline nodes are reported as waiting, never as done."""
    if not cfg.group:
        return {"rolled_out": False, "why": "no group configured"}
    from hub.rollouts import start_rollout, wait_rollout

    hub = cfg.hub()
    started = _hub_call(cfg, lambda: start_rollout(hub, model, version, cfg.group, canary=cfg.canary,
                                                   watch_s=cfg.watch_s))
    final = _hub_call(cfg, lambda: wait_rollout(hub, started["id"], timeout))
    return {"rolled_out": final.get("state") in ("done", "done_with_offline"), "rollout": started["id"],
            "state": final.get("state"), "waiting": final.get("waiting") or [], "why": final.get("reason")}
