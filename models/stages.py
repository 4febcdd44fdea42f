"""The training pipeline's stages, as ``dvc.yaml`` runs them for every model of the workspace (the ``models``
section of params.yaml; each a plug-in, :mod:`models.plugins`): generate -> prepare -> train -> evaluate.

    python -m models.stages generate [MODEL..]  data/raw: the SYNTHETIC data of the models that have a generator
    python -m models.stages prepare [MODEL..]   data/prepared/<model>/<split>.npz (+ the loop's labels)
    python -m models.stages train MODEL         artifacts/<model>/ (+ an MLflow run, a registered version)
    python -m models.stages evaluate [MODEL..]  metrics/<model>.json, plots/<model>/*.csv (+ MLflow, aliases)

Each reads ``params.yaml`` (``--params``); paths are relative to ``--root`` (default: the working
directory). ``edgeloop model train`` runs the same functions in-process with progress bars.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models import plugins
from models.common import SPLITS, binary_metrics, digest_dir, load_params, write_json, write_plots
from models.plugins import ModelPlugin

Progress = Callable[[str], None]


def model_module(name: str) -> ModelPlugin:
    """The model plug-in ``name`` (``edgeloop.models`` entry points); KeyError naming the registered ones."""
    return plugins.get(name)


def model_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return model_module(name).params(params)


def workspace_models(params: dict[str, Any]) -> list[str]:
    """The models this workspace's pipeline trains: the ``models`` section of its params.yaml (what dvc.yaml's
    stages run over), or every registered plug-in when it has none. Each must be a registered plug-in."""
    listed = params.get("models")
    if listed is None:
        return plugins.names()
    if not isinstance(listed, dict):
        raise ValueError("params: `models` must map each model's name to its stage settings (data:, code:)")
    for name in listed:
        model_module(name)
    return list(listed)


def raw_data(root: Path, name: str, params: dict[str, Any]) -> Path:
    """The folder ``name``'s prepare reads: its ``data`` in the params' ``models`` section (its field data,
    ``data/field/<name>``, for a model trained on what nodes upload), else ``data/raw`` (generated)."""
    entry = (params.get("models") or {}).get(name) or {}
    return root / str(entry.get("data") or "data/raw")


def seed_of(params: dict[str, Any]) -> int:
    return int(params.get("seed", 0))


def generate(root: Path, params: dict[str, Any], progress: Progress | None = None,
             names: list[str] | None = None) -> list[str]:
    """The SYNTHETIC raw data of ``names`` (default: the workspace's models) that have a generator, each
    generator once (models may share one), into ``data/raw``. Returns the models generated for."""
    raw = root / "data" / "raw"
    seed = seed_of(params)
    done: list[Any] = []
    generated = []
    for name in names or workspace_models(params):
        m = model_module(name)
        if m.generate is None:
            continue
        generated.append(name)
        if m.generate not in done:
            m.generate(raw, params, seed, progress)
            done.append(m.generate)
    previous = json.loads((raw / "README.json").read_text()) if (raw / "README.json").exists() else {}
    write_json(raw / "README.json", {"synthetic": True, "seed": seed,
                                     "models": sorted(set(previous.get("models", [])) | set(generated)),
                                     "what": "SYNTHETIC data from the model plug-ins' generators (for the "
                                             "reference models: models.synth); not real data"})
    return generated


def prepare(root: Path, params: dict[str, Any], names: list[str] | None = None,
            progress: Progress | None = None) -> None:
    for name in names or workspace_models(params):
        model_module(name).prepare(raw_data(root, name, params), root / "data" / "prepared" / name,
                                   model_params(name, params))
        merge_labelled(root, name, params)
        if progress:
            progress(name)


def merge_labelled(root: Path, name: str, params: dict[str, Any]) -> int:
    """Append the agile loop's harvested labels (``data/labelled/<name>/*.npz``: X, y) to the train split,
    each row ``loop.labelled_repeat`` times: once as labelled, the other times through the plug-in's ``augment``
    (a new draw each, seeded) when it has one. The holdouts stay fixed. Returns the rows added."""
    import numpy as np

    from models.common import load_split, save_split

    folder = root / "data" / "labelled" / name
    merge_pool(root, name)
    files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if not files:
        return 0
    repeat = int((params.get("loop") or {}).get("labelled_repeat", 1))
    if repeat < 1:
        raise ValueError(f"params: loop.labelled_repeat must be >= 1, got {repeat}")
    train = root / "data" / "prepared" / name / "train.npz"
    m = model_module(name)
    X0, y0 = m.read(train)
    xs, ys = [X0], [y0]
    rng = np.random.default_rng(seed_of(params))
    for f in files:
        z = load_split(f)
        if z["X"].shape[1:] != X0.shape[1:]:
            raise ValueError(f"{f}: rows of shape {z['X'].shape[1:]}, the train split has {X0.shape[1:]}")
        X, y = z["X"].astype(X0.dtype), z["y"].astype(y0.dtype)
        xs.append(X)
        ys.append(y)
        for _ in range(repeat - 1):  # the other copies through the plug-in's augment (each its own draw), if any
            Xa, ya = m.augment(X, y, rng) if m.augment is not None else (X, y)
            xs.append(Xa)
            ys.append(ya)
    save_split(train, X=np.concatenate(xs), y=np.concatenate(ys))
    return sum(len(y) for y in ys[1:])


def merge_pool(root: Path, name: str) -> int:
    """The loop's uploads nobody labelled (``data/labelled/<name>/unlabelled/*.npz``, written by its collect step:
    :mod:`flows.selection`) as ``data/prepared/<name>/unlabelled.npz`` (``X``), the pool a plug-in's ``fit`` may
    self-train on (:func:`models.kit.self_train`); rows of another shape than the train split's are left out.
    Returns the rows (0: no pool, and none left from an earlier prepare)."""
    import numpy as np

    from models.common import load_split, save_split
    from models.kit import POOL

    out = root / "data" / "prepared" / name / POOL
    out.unlink(missing_ok=True)
    files = sorted((root / "data" / "labelled" / name / "unlabelled").glob("*.npz"))
    if not files:
        return 0
    width = model_module(name).read(root / "data" / "prepared" / name / "train.npz")[0].shape[1:]
    xs = [x for x in (load_split(f)["X"] for f in files) if x.shape[1:] == width]
    if not xs:
        return 0
    save_split(out, X=np.concatenate(xs))
    return sum(len(x) for x in xs)


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
    _drift_profile(m, prepared, out, seed_of(params))
    run: dict[str, Any] = {"name": name, "trained": time.time(), "data_version": digest_dir(prepared)}
    if track:
        from models import tracking

        run.update(tracking.log_training(name, out, {**p, "seed": seed_of(params)}, info,
                                         {"data_version": run["data_version"], "git_commit": _git_commit(root),
                                          "data": m.data}, workdir=root))
    write_json(root / "artifacts" / f"{name}.run.json", {**run, "train": info})
    return {**run, "train": info}


def _drift_profile(m: ModelPlugin, prepared: Path, out: Path, seed: int) -> None:
    """The version's reference profile for drift at the edge (:mod:`edge_runtime.drift`), made from its train
    split and shipped inside its bundle. Image models: 512 crops (their statistics are cheap, the model's pass
    on them is not); tables: 4,000 rows."""
    from edge_runtime.drift import write_profile

    X, _ = m.read(prepared / "train.npz")
    write_profile(out, X, rows=4000 if m.input == "table" else 512, seed=seed)


def evaluate(root: Path, name: str, *, track: bool = True) -> dict[str, Any]:
    """Metrics of the artifact on every split (clean and drifted holdouts: the loop's baseline), DVC plot
    files, and the MLflow run updated; the version becomes ``challenger``."""
    from edge_runtime.modelkit import Predictor

    m = model_module(name)
    predictor = Predictor(root / "artifacts" / name)
    prepared = root / "data" / "prepared" / name
    metrics: dict[str, Any] = {"model": name, "data": m.data + ("; not field performance" if
                                                                "synthetic" in m.data.lower() else "")}
    files: list[Path] = []
    for split in SPLITS:
        X, y = m.read(prepared / f"{split}.npz")
        t = time.perf_counter()
        proba = predictor.proba(X)
        took = time.perf_counter() - t
        pred, _ = predictor(X)
        key = {"train": "train", "holdout_clean": "clean", "holdout_drifted": "drifted"}[split]
        metrics[key] = {**binary_metrics(y, proba[:, 1], pred), "predict_seconds": round(took, 4)}
        if split != "train":
            files += write_plots(root / "plots" / name, key, y, proba[:, 1], pred, m.labels)
    run_file = root / "artifacts" / f"{name}.run.json"
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    if track and run.get("run_id"):
        from models import tracking

        metrics["registry"] = tracking.log_evaluation(name, run, {k: metrics[k] for k in ("clean", "drifted")},
                                                      files, workdir=root)
    metrics["version"] = run.get("version")
    write_json(root / "metrics" / f"{name}.json", metrics)
    return metrics


def holdout_metrics(root: Path, name: str, artifact: Path) -> dict[str, float]:
    """The model artifact at ``artifact`` on ``name``'s current holdouts, flat as MLflow keeps them
    (``clean.accuracy``, ``drifted.f1``, ...): a champion measured on the holdouts its challenger was (field data
    grows with each labelled batch, and its holdouts with it)."""
    from edge_runtime.modelkit import Predictor

    m = model_module(name)
    predictor = Predictor(artifact)
    out: dict[str, float] = {}
    for split, key in (("holdout_clean", "clean"), ("holdout_drifted", "drifted")):
        X, y = m.read(root / "data" / "prepared" / name / f"{split}.npz")
        pred, _ = predictor(X)
        got = binary_metrics(y, predictor.proba(X)[:, 1], pred)
        out.update({f"{key}.{k}": float(v) for k, v in got.items() if isinstance(v, (int, float)) and v is not None})
    return out


def ensure_artifacts(root: Path, names: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    """Generate, prepare and train ``names`` under ``root`` without MLflow, reusing artifacts already there
    (benchmarks, the demo). Returns ``{"root", "seconds", "trained", "params"}``; artifacts land in
    ``root/artifacts/<name>/``."""
    t = time.perf_counter()
    todo = [n for n in names if not (root / "artifacts" / n / "edgeloop-model.json").exists()]
    if todo:
        readme = root / "data" / "raw" / "README.json"
        have = set(json.loads(readme.read_text()).get("models", [])) if readme.exists() else set()
        missing = [n for n in todo if n not in have]
        if missing:  # only what these models need (telemetry alone does not render the camera scenes)
            generate(root, params, names=missing)
        prepare(root, params, todo)
        for n in todo:
            train(root, n, params, track=False)
    return {"root": str(root), "seconds": round(time.perf_counter() - t, 2), "trained": todo, "params": params}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.stages", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["generate", "prepare", "train", "evaluate"])
    ap.add_argument("models", nargs="*", help="model names (train: exactly one; default: the workspace's models)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".")
    ap.add_argument("--no-track", action="store_true", help="do not record in MLflow")
    args = ap.parse_args(argv)
    root = Path(args.root)
    params = load_params(root / args.params if not Path(args.params).is_absolute() else args.params)
    say = lambda what: print(f"{args.stage}: {what}", flush=True)  # noqa: E731
    try:
        names = args.models or workspace_models(params)
        for n in names:
            model_module(n)
        if args.stage == "generate":
            generate(root, params, say, names)
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
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
