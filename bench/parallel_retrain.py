"""Retraining two models one after another vs at the same time (Prefect's Dask task runner), same labels.

    .venv/bin/python -m bench.parallel_retrain [--tiny] [--rows 60] [--rounds 2]

A copy of the project's DVC pipeline (dvc.yaml, params.yaml: the real sizes unless --tiny) in a temporary
DVC repository, every stage run once (SYNTHETIC data). Each round gives pump_anomaly (table model,
scikit-learn) and intrusion (image CNN, torch) a new labelled batch (``--rows`` rows of each train split,
`dvc add`ed as harvest does), then times the retrain step of both four ways on those same labels (the loop
state forgets the training before each; the best round is the figure, every round is kept):

* ``sequential_dvc_repro``: today's default, ``dvc repro train_<model>`` then ``dvc repro --single-item
  evaluate`` for one model, then the other (flows.steps.retrain); each evaluate re-evaluates all three models;
* ``sequential_stages``: the parallel path's work done one model after the other, without Dask
  (its prepare, train, evaluate stages, then dvc commit): what the overlap alone gains;
* ``parallel_dask``: flows.loop.retrain_models, a LocalCluster of 2 worker processes (1 thread each),
  including the cluster's start and stop; a real Prefect server (prefect_test_harness);
* ``parallel_dask_threads_capped``: the same with each stage's BLAS/OpenMP threads capped to cores/models.

Each must leave `dvc status` clean. Writes bench/results/parallel_retrain.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import write_results

ROOT = Path(__file__).resolve().parent.parent
CORES = len(os.sched_getaffinity(0))
MODELS = ("pump_anomaly", "intrusion")


def workspace(ws: Path, tiny: bool) -> dict[str, Any]:
    """The pipeline in ``ws``, its stages run once (in this process) and committed to DVC. Returns the setup
    figures."""
    import yaml

    from flows import dvc as fdvc
    from flows import retrain, steps
    from models import stages
    from models.common import load_split

    t = time.perf_counter()
    for d in ("models", "edge_runtime"):
        shutil.copytree(ROOT / d, ws / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    (ws / "data").mkdir(exist_ok=True)
    shutil.copy(ROOT / "data" / "dvc.yaml", ws / "data" / "dvc.yaml")  # the reference models' SYNTHETIC data
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from trained import TINY

        for section, values in TINY.items():
            params[section] = {**params[section], **values} if isinstance(values, dict) else values
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = steps.LoopConfig(workspace=str(ws))
    for args in (("init", "--no-scm", "-q"), ("remote", "add", "-d", "local", "var/dvc-remote"),
                 ("config", "core.analytics", "false")):
        assert fdvc.run(cfg, *args).returncode == 0, args
    retrain.labelled_dirs(cfg)
    stages.generate(ws, params)
    stages.prepare(ws, params)
    for name in stages.workspace_models(params):
        stages.train(ws, name, params)
        stages.evaluate(ws, name)
    fdvc.run_locked(cfg, "commit", "-f", "-q")
    sizes = {}
    for m in MODELS:
        train = load_split(ws / "data" / "prepared" / m / "train.npz")
        sizes[m] = {"train_rows": int(len(train["y"])), "row_shape": list(train["X"].shape[1:])}
    return {"pipeline_s": round(time.perf_counter() - t, 1), "models": sizes,
            "params": {k: params[k] for k in ("scenes", *stages.workspace_models(params))}}


def _new_labels(cfg: Any, round_no: int, rows: int) -> str:
    """What harvest leaves: a batch of ``rows`` labelled rows per model (rows of its train split, a new slice
    each round), `dvc add`ed. Returns the data version."""
    import numpy as np

    from flows import dvc as fdvc
    from models.common import load_split

    for m in MODELS:
        train = load_split(cfg.root / "data" / "prepared" / m / "train.npz")
        take = slice(round_no * rows, (round_no + 1) * rows)
        np.savez_compressed(cfg.root / "data" / "labelled" / m / f"batch-{round_no + 1:04d}-1.npz", X=train["X"][take],
                            y=train["y"][take], ids=np.array([f"{m}-{round_no}-{i}" for i in range(rows)]))
    return str(fdvc.version_data(cfg))


def _labels_harvested(cfg: Any, rows: int) -> None:
    """The loop state as after harvesting ``rows`` labels per model and before any training of them."""
    from flows.state import LoopState

    for f in (cfg.root / "var" / "loop").glob("state.db*"):
        f.unlink()
    with LoopState(cfg.root / "var" / "loop" / "state.db") as state:
        for k, m in enumerate(MODELS):
            state.mark_harvested(m, "batch", [{"annotation_id": 100_000 * k + i, "id": f"{m}-{i}", "label": "x"}
                                              for i in range(rows)])


def _busy(stage_s: dict[str, dict[str, float]], cpu_s: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per model and stage, how many cores its process kept busy on average (CPU seconds / wall seconds)."""
    return {m: {s: round(cpu_s[m][s] / max(stage_s[m][s], 1e-9), 2) for s in stage_s[m]} for m in stage_s}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _clean(cfg: Any) -> bool:
    from flows import dvc as fdvc

    done = fdvc.run(cfg, "status")
    return done.returncode == 0 and "Data and pipelines are up to date" in done.stdout


def _sequential_dvc_repro(cfg: Any, harvested: dict[str, Any], rows: int) -> dict[str, Any]:
    from flows import retrain, steps

    _labels_harvested(cfg, rows)
    t, cpu = time.perf_counter(), retrain.children_cpu_s()
    per_model = {}
    with cfg.state() as state:
        for m in MODELS:
            t_m = time.perf_counter()
            got = steps.retrain(cfg, m, harvested[m], state)
            assert got["retrained"], got
            per_model[m] = round(time.perf_counter() - t_m, 1)
    wall = time.perf_counter() - t
    return {"wall_s": round(wall, 1), "per_model_s": per_model,
            "cores_busy": round((retrain.children_cpu_s() - cpu) / wall, 2)}


def _sequential_stages(cfg: Any, harvested: dict[str, Any], rows: int) -> dict[str, Any]:
    from flows import steps

    _labels_harvested(cfg, rows)
    t = time.perf_counter()
    steps.before_parallel_retrain(cfg)
    per_model, stage_s, cpu_s = {}, {}, {}
    for m in MODELS:
        got = steps.train_stages(cfg, m)
        per_model[m], stage_s[m] = got["seconds"], {s: round(b - a, 1) for s, (a, b) in got["stages"].items()}
        cpu_s[m] = got["cpu_s"]
    with cfg.state() as state:
        for m in MODELS:
            steps.register_candidate(cfg, m, harvested[m], state, rows, per_model[m])
    return {"wall_s": round(time.perf_counter() - t, 1), "per_model_s": per_model, "stage_s": stage_s,
            "stage_cpu_s": cpu_s, "stage_cores_busy": _busy(stage_s, cpu_s)}


def _parallel(cfg: Any, harvested: dict[str, Any], rows: int, threads: int | None) -> dict[str, Any]:
    from flows.loop import retrain_models

    _labels_harvested(cfg, rows)
    t = time.perf_counter()
    got = retrain_models(cfg, harvested, threads=threads)
    wall = time.perf_counter() - t
    par = got["parallel"]
    assert par and not par["failed"] and all(r["retrained"] for r in got["models"].values()), got
    stage_s = {m: {s: round(b - a, 1) for s, (a, b) in par["stages"][m].items()} for m in MODELS}
    span = [(min(a for a, _ in par["stages"][m].values()), max(b for _, b in par["stages"][m].values())) for m in MODELS]
    return {"wall_s": round(wall, 1), "inside_flow_s": par["seconds"],
            "per_model_s": {m: r["seconds"] for m, r in got["models"].items()}, "stage_s": stage_s,
            "stage_cpu_s": par["cpu_s"], "stage_cores_busy": _busy(stage_s, par["cpu_s"]),
            "models_overlap_s": round(max(0.0, min(b for _, b in span) - max(a for a, _ in span)), 1),
            "workers": par["workers"], "blas_openmp_threads_per_stage": threads or "not capped"}


def run(ws: Path, tiny: bool, rows: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds; each gives both models a new labelled batch, then retrains them the four ways on
    those same labels (the first, `dvc repro`, needs the stages stale; the others run them regardless)."""
    from prefect.testing.utilities import prefect_test_harness

    from flows import steps

    out: dict[str, Any] = {"setup": workspace(ws, tiny)}
    cfg = steps.LoopConfig(workspace=str(ws), models=list(MODELS), min_labels=1)
    ways = {"sequential_dvc_repro": lambda h: _sequential_dvc_repro(cfg, h, rows),
            "sequential_stages": lambda h: _sequential_stages(cfg, h, rows),
            "parallel_dask": lambda h: _parallel(cfg, h, rows, None),
            "parallel_dask_threads_capped": lambda h: _parallel(cfg, h, rows, max(1, CORES // len(MODELS)))}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ways}
    with prefect_test_harness(server_startup_timeout=120):
        for round_no in range(rounds):
            version = _new_labels(cfg, round_no, rows)
            harvested = {m: {"data_version": version, "new_labels": rows} for m in MODELS}
            for name, way in ways.items():
                got = way(harvested)
                runs[name].append({**got, "round": round_no + 1, "dvc_status_clean": _clean(cfg),
                                   "load_average_after": _load()})
                print(f"round {round_no + 1}: {name} {got['wall_s']} s (load {_load()})", flush=True)
    out["runs"] = runs
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.parallel_retrain", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny params (a quick check, not a figure)")
    ap.add_argument("--rows", type=int, default=60, help="labelled rows per model and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (the best of them is the figure)")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()  # other work on the machine skews the figures: it is recorded
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-parallel-retrain-") as tmp:
        os.environ.setdefault("PREFECT_HOME", str(Path(tmp) / "prefect-home"))
        os.environ["BENTOML_DO_NOT_TRACK"] = "true"
        ws = Path(tmp) / "ws"
        ws.mkdir()
        r = run(ws, args.tiny, args.rows, args.rounds)
    best = {k: min(v, key=lambda x: x["wall_s"]) for k, v in r["runs"].items()}
    seq, stg, par, cap = (best[k]["wall_s"] for k in ("sequential_dvc_repro", "sequential_stages", "parallel_dask",
                                                       "parallel_dask_threads_capped"))
    per_model = best["sequential_stages"]["per_model_s"]
    summary = {"sequential_s": seq, "sequential_stages_s": stg, "parallel_s": par, "parallel_threads_capped_s": cap,
               "speedup_vs_default": round(seq / par, 2), "speedup_from_overlap": round(stg / par, 2),
               "speedup_threads_capped_vs_default": round(seq / cap, 2),
               "bound_from_overlap": round(sum(per_model.values()) / max(per_model.values()), 2),
               "wall_s_every_round": {k: [x["wall_s"] for x in v] for k, v in r["runs"].items()},
               "all_dvc_status_clean": all(x["dvc_status_clean"] for v in r["runs"].values() for x in v)}
    print(f"retrain {' + '.join(MODELS)} on {CORES} cores, best of {args.rounds}: sequential (dvc repro) {seq} s, "
          f"the same stages one after another {stg} s, parallel (Dask, 2 workers) {par} s "
          f"({summary['speedup_vs_default']}x vs the default, {summary['speedup_from_overlap']}x from the overlap; "
          f"at most {summary['bound_from_overlap']}x with these two models), with BLAS/OpenMP threads capped to "
          f"cores/models {cap} s; dvc status clean after each: {summary['all_dvc_status_clean']}")
    write_results("parallel_retrain", {
        "data": "SYNTHETIC (models.synth): simulated pump telemetry and street-camera clips",
        "measured": "wall seconds of the loop's retrain step for two models with new labels (pump_anomaly, "
                    "intrusion), from the same starting point each time: sequential `dvc repro train_<model>` and "
                    "`dvc repro --single-item evaluate` (the default), the same per-model stages one after another, and both at once "
                    "on Prefect's Dask task runner (LocalCluster: 2 processes x 1 thread, its start and stop "
                    "included), without and with a cap of cores/models BLAS/OpenMP threads per stage",
        "note": "torch CNN training pins 2 threads itself (models/street/__init__.py) whatever the cap",
        "params": "tests' TINY" if args.tiny else "params.yaml",
        "labelled_rows_per_model_and_round": args.rows,
        "rounds": args.rounds,
        "cores": CORES,
        "load_average_before": [round(x, 2) for x in load_before],
        "summary": summary, "best": best, **r})
    return 0 if summary["all_dvc_status_clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
