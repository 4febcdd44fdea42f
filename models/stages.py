"""The training pipeline's stages, as ``dvc.yaml`` runs them: generate -> prepare -> train_<model> -> evaluate.

    python -m models.stages generate            data/raw: SYNTHETIC pump telemetry and street-camera videos
    python -m models.stages prepare             data/prepared/<model>/<split>.npz
    python -m models.stages train MODEL         artifacts/<model>/ (+ an MLflow run, a registered version)
    python -m models.stages evaluate [MODEL..]  metrics/<model>.json, plots/<model>/*.csv (+ MLflow, aliases)

Each reads ``params.yaml`` (``--params``); paths are relative to ``--root`` (default: the working
directory). ``edgeloop model train`` runs the same functions in-process with progress bars.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from models.common import SPLITS, binary_metrics, digest_dir, load_params, resolve, write_json, write_plots

MODELS: dict[str, str] = {
    "pump_anomaly": "models.pump_anomaly.train",
    "intrusion": "models.intrusion",
    "activity": "models.activity",
}
"""Reference model name -> the module with its NAME, LABELS, DEFAULTS, prepare, xy and fit."""

Progress = Callable[[str], None]


def model_module(name: str) -> ModuleType:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    return importlib.import_module(MODELS[name])


def model_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    m = model_module(name)
    return resolve(m.DEFAULTS, params.get(name) or {}, name)


def seed_of(params: dict[str, Any]) -> int:
    return int(params.get("seed", 0))


def generate(root: Path, params: dict[str, Any], progress: Progress | None = None) -> None:
    from models import vision

    raw = root / "data" / "raw"
    seed = seed_of(params)
    model_module("pump_anomaly").generate(raw, model_params("pump_anomaly", params), seed)
    if progress:
        progress("pump telemetry")
    vision.generate_scenes(raw, resolve(vision.SCENE_DEFAULTS, params.get("scenes") or {}, "scenes"), seed, progress)
    write_json(raw / "README.json", {"synthetic": True, "seed": seed,
                                     "what": "simulated pump telemetry and street-camera videos with ground truth "
                                             "(models.synth); not real data"})


def prepare(root: Path, params: dict[str, Any], names: list[str] | None = None,
            progress: Progress | None = None) -> None:
    for name in names or list(MODELS):
        model_module(name).prepare(root / "data" / "raw", root / "data" / "prepared" / name,
                                   model_params(name, params))
        merge_labelled(root, name, params)
        if progress:
            progress(name)


def merge_labelled(root: Path, name: str, params: dict[str, Any]) -> int:
    """Append the agile loop's harvested labels (``data/labelled/<name>/*.npz``: X, y) to the train split,
    each row ``loop.labelled_repeat`` times. The holdouts stay fixed. Returns the rows added."""
    import numpy as np

    from models.common import load_split, save_split

    folder = root / "data" / "labelled" / name
    files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if not files:
        return 0
    repeat = int((params.get("loop") or {}).get("labelled_repeat", 1))
    if repeat < 1:
        raise ValueError(f"params: loop.labelled_repeat must be >= 1, got {repeat}")
    train = root / "data" / "prepared" / name / "train.npz"
    d = load_split(train)
    xs, ys = [d["X"]], [d["y"]]
    for f in files:
        z = load_split(f)
        if z["X"].shape[1:] != d["X"].shape[1:]:
            raise ValueError(f"{f}: rows of shape {z['X'].shape[1:]}, the train split has {d['X'].shape[1:]}")
        xs += [z["X"].astype(d["X"].dtype)] * repeat
        ys += [z["y"].astype(d["y"].dtype)] * repeat
    save_split(train, X=np.concatenate(xs), y=np.concatenate(ys))
    return sum(len(y) for y in ys[1:])


def _git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return ""


def train(root: Path, name: str, params: dict[str, Any], *, track: bool = True,
          progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fit ``name`` on its prepared train split into ``artifacts/<name>/``; track and register in MLflow."""
    m = model_module(name)
    p = model_params(name, params)
    prepared = root / "data" / "prepared" / name
    out = root / "artifacts" / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    info = m.fit(prepared, out, p, seed_of(params), progress)
    run: dict[str, Any] = {"name": name, "trained": time.time(), "data_version": digest_dir(prepared)}
    if track:
        from models import tracking

        run.update(tracking.log_training(name, out, {**p, "seed": seed_of(params)}, info,
                                         {"data_version": run["data_version"], "git_commit": _git_commit(root),
                                          "data": "synthetic"}, workdir=root))
    write_json(root / "artifacts" / f"{name}.run.json", {**run, "train": info})
    return {**run, "train": info}


def evaluate(root: Path, name: str, *, track: bool = True) -> dict[str, Any]:
    """Metrics of the artifact on every split (clean and drifted holdouts: the loop's baseline), DVC plot
    files, and the MLflow run updated; the version becomes ``challenger``."""
    from edge_runtime.modelkit import Predictor

    m = model_module(name)
    predictor = Predictor(root / "artifacts" / name)
    prepared = root / "data" / "prepared" / name
    metrics: dict[str, Any] = {"model": name, "data": "synthetic; not field performance"}
    files: list[Path] = []
    for split in SPLITS:
        X, y = m.xy(prepared / f"{split}.npz")
        t = time.perf_counter()
        proba = predictor.proba(X)
        took = time.perf_counter() - t
        pred, _ = predictor(X)
        key = {"train": "train", "holdout_clean": "clean", "holdout_drifted": "drifted"}[split]
        metrics[key] = {**binary_metrics(y, proba[:, 1], pred), "predict_seconds": round(took, 4)}
        if split != "train":
            files += write_plots(root / "plots" / name, key, y, proba[:, 1], pred, m.LABELS)
    run_file = root / "artifacts" / f"{name}.run.json"
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    if track and run.get("run_id"):
        from models import tracking

        metrics["registry"] = tracking.log_evaluation(name, run, {k: metrics[k] for k in ("clean", "drifted")},
                                                      files, workdir=root)
    metrics["version"] = run.get("version")
    write_json(root / "metrics" / f"{name}.json", metrics)
    return metrics


def ensure_artifacts(root: Path, names: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    """Generate, prepare and train ``names`` under ``root`` without MLflow, reusing artifacts already there
    (benchmarks, the demo). Returns ``{"root", "seconds", "trained", "params"}``; artifacts land in
    ``root/artifacts/<name>/``."""
    t = time.perf_counter()
    todo = [n for n in names if not (root / "artifacts" / n / "edgeloop-model.json").exists()]
    if todo:
        raw = root / "data" / "raw"
        if set(todo) <= {"pump_anomaly"}:  # telemetry only: no need to render the camera scenes
            if not (raw / "pump" / "train.npz").exists():
                model_module("pump_anomaly").generate(raw, model_params("pump_anomaly", params), seed_of(params))
        elif not (raw / "README.json").exists():
            generate(root, params)
        prepare(root, params, todo)
        for n in todo:
            train(root, n, params, track=False)
    return {"root": str(root), "seconds": round(time.perf_counter() - t, 2), "trained": todo, "params": params}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.stages", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["generate", "prepare", "train", "evaluate"])
    ap.add_argument("models", nargs="*", help="model names (train: exactly one; default: all)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".")
    ap.add_argument("--no-track", action="store_true", help="do not record in MLflow")
    args = ap.parse_args(argv)
    root = Path(args.root)
    params = load_params(root / args.params if not Path(args.params).is_absolute() else args.params)
    say = lambda what: print(f"{args.stage}: {what}", flush=True)  # noqa: E731
    try:
        names = args.models or list(MODELS)
        for n in names:
            model_module(n)
        if args.stage == "generate":
            generate(root, params, say)
        elif args.stage == "prepare":
            prepare(root, params, names, say)
        elif args.stage == "train":
            if len(args.models) != 1:
                ap.error("train takes exactly one model")
            r = train(root, args.models[0], params, track=not args.no_track,
                      progress=lambda e, loss: say(f"{args.models[0]} epoch {e} loss {loss:.4f}"))
            say(f"{args.models[0]} version {r.get('version', '-')} in {r['train']['fit_seconds']} s")
        else:
            for n in names:
                mt = evaluate(root, n, track=not args.no_track)
                say(f"{n}: clean f1 {mt['clean']['f1']:.3f}, drifted f1 {mt['drifted']['f1']:.3f}")
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
