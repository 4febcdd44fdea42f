"""Model inference on the node: ``apply_model`` in a real pipeline Instance against the bare Predictor.

    .venv/bin/python -m bench.model_apply [--records N] [--crops N] [--reps N] [--artifacts ROOT] [--profile]

SYNTHETIC data and models: the artifacts are trained here, in a temporary directory, by the DVC stage
functions (``models.stages.generate`` / ``prepare`` / ``train``) with SMALL data parameters (:data:`PARAMS`)
but the reference model configurations (pump_anomaly: HistGradientBoosting, 50 trees of at most 63
leaves; intrusion: the 4-block CNN on 128x128x3 crops, 1 epoch). Inference cost depends on the model's
shape, not on how well it was trained; no accuracy is measured here.

One core: the process is pinned to one CPU, ``OMP_NUM_THREADS`` & co. are 1 before numpy is imported,
``torch.set_num_threads(1)`` and, when threadpoolctl is installed, ``threadpool_limits(1)`` around the
runs (sklearn's HistGradientBoosting predicts with OpenMP).

(a) pump_anomaly, table input: records holding the 12 window features (``models.pump_anomaly.features.
    FEATURES``, rows of the prepared holdout set, cycled) are built with ``Batch.from_records`` before
    timing; the pipeline ``device_input -> apply_model {inputs: FEATURES, batch_size: B}`` runs in an
    ``Instance`` pushed micro-batches of B records (B = 1 and 256; also 4096-record pushes with
    batch_size 256, not a target). Per push the latency is timed (p50/p99 per batch). Baseline in the same
    run: the bare ``Predictor`` called on the same float32 rows, B at a time. overhead ratio = pipeline
    rate / raw rate. Target: >= 100,000 records/s at B = 256.
(b) intrusion, image input: 128x128x3 uint8 crops (the prepared ROI crops, cycled) through the Predictor
    directly and through ``apply_model {image: crop}`` with records holding a numpy array each
    (``Batch.from_records`` takes them as an object column). Batch sizes 1, 32, 64. Target >= 500 crops/s.
(c) a 12-feature gradient-boosting classifier (50 trees of depth 5, fitted here on the pump features) as
    joblib and exported to ONNX (skl2onnx), run by onnxruntime on one thread, through ``apply_model`` at batch
    sizes 256 and 4096, interleaved on the same records; target >= 100,000 records/s at 256 (issue 16); the
    share of equal predictions is reported (ONNX trees compare in float32).

(d) drift monitoring (issue 17): (a)'s pipeline at batch 256 and (b)'s at batch 32 with the version's drift
    monitor on (its profile in the artifact, as every trained version ships one) and off, interleaved in the same
    run; target: the monitor costs at most 5% of the throughput (ratio >= 0.95). (a) and (b) run with it on.

Best of ``--reps`` interleaved repetitions after an unmeasured warm-up; wall and CPU time both reported
(the machine is shared). Every pipeline output is checked against the bare Predictor's predictions.
Writes bench/results/model_apply.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench.pipeline_inproc import loadavg, pin_to_one_core  # noqa: E402
from edge_runtime.instance import Instance  # noqa: E402
from edge_runtime.modelkit import Predictor  # noqa: E402
from edge_runtime.pipeline import parse_pipeline  # noqa: E402
from edge_runtime.records import Batch  # noqa: E402
from models.pump_anomaly.features import FEATURES  # noqa: E402

DATA_NOTE = ("SYNTHETIC data and models: features and crops from models.synth (seeded simulations), models "
             "trained here on small synthetic sets; not real devices, not field accuracy")
TARGET_PUMP_RPS = 100_000
TARGET_CROPS_PS = 500
TARGET_ONNX_RPS = 100_000  # issue 16: a 12-feature gradient-boosting model exported to ONNX, through apply_model
PUMP_BATCHES = (1, 256)
CROP_BATCHES = (1, 32, 64)

PARAMS: dict[str, Any] = {
    "seed": 0,
    "scenes": {"frames": 120, "train_clips": 2, "clean_clips": 1, "drifted_clips": 1},
    "pump_anomaly": {"train_pumps": 10, "train_hours": 24, "holdout_pumps": 2, "holdout_hours": 24},
    "intrusion": {"epochs": 1},
    "activity": {"epochs": 1},
}
"""Small data for the artifacts (the model configurations stay the reference ones)."""


# -- artifacts ----------------------------------------------------------------------------------

def build_artifacts(root: Path, names: tuple[str, ...] = ("pump_anomaly", "intrusion"),
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`models.stages.ensure_artifacts` with this bench's small :data:`PARAMS` by default."""
    from models import stages

    return stages.ensure_artifacts(root, names, params or PARAMS)


@contextlib.contextmanager
def artifacts_root(path: str | None) -> Iterator[Path]:
    """``path`` (kept) or a temporary directory (removed afterwards)."""
    if path:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    tmp = Path(tempfile.mkdtemp(prefix="edgeloop-bench-models-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def one_thread() -> dict[str, Any]:
    """torch to one thread; threadpoolctl limits (if installed) entered for the rest of the process."""
    info: dict[str, Any] = {"env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                    "MKL_NUM_THREADS")}}
    try:
        import torch

        torch.set_num_threads(1)
        with contextlib.suppress(RuntimeError):  # only before any inter-op work started
            torch.set_num_interop_threads(1)
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    except ImportError:  # pragma: no cover
        info["torch_threads"] = None
    try:
        import sklearn.ensemble  # noqa: F401 - load its OpenMP runtime so the limit covers it
        from threadpoolctl import threadpool_info, threadpool_limits

        _LIMITS.append(threadpool_limits(limits=1))
        info["threadpoolctl"] = True
        info["threadpools"] = [{"api": p.get("internal_api"), "lib": Path(p.get("filepath", "")).name,
                                "num_threads": p.get("num_threads")} for p in threadpool_info()]
    except ImportError:
        info["threadpoolctl"] = False
    return info


_LIMITS: list[Any] = []  # keeps the threadpool limits alive


# -- measuring ----------------------------------------------------------------------------------

def timed_calls(fn: Callable[[Any], Any], items: list[Any]) -> dict[str, Any]:
    """Call ``fn`` on every item; wall and CPU seconds in all, and each call's wall time."""
    gc.collect()
    lat = np.empty(len(items))
    outs = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        t = time.perf_counter()
        outs.append(fn(it))
        lat[i] = time.perf_counter() - t
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "lat": lat, "outs": outs}


def summarise(reps: list[dict[str, Any]], n: int, unit: str) -> dict[str, Any]:
    best = min(reps, key=lambda r: r["wall"])
    best_cpu = min(r["cpu"] for r in reps)
    lat = np.concatenate([r["lat"] for r in reps]) * 1e3
    return {f"{unit}_per_s": round(n / best["wall"], 1), f"{unit}_per_cpu_s": round(n / best_cpu, 1),
            "best_wall_s": round(best["wall"], 4), "best_cpu_s": round(best_cpu, 4),
            "wall_s": [round(r["wall"], 4) for r in reps],
            "batch_ms_p50": round(float(np.percentile(lat, 50)), 4),
            "batch_ms_p99": round(float(np.percentile(lat, 99)), 4),
            "batch_ms_max": round(float(lat.max()), 4), "batches_timed": int(lat.size)}


def profile_of(fn: Callable[[], Any], top: int = 20) -> list[str]:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    root = str(Path(__file__).resolve().parent.parent) + "/"
    return [ln.replace(root, "") for ln in lines[start:] if ln.strip()]


# -- (a) pump_anomaly ---------------------------------------------------------------------------

def pump_plan(batch_size: int, model: str = "pump_anomaly") -> Any:
    return parse_pipeline({"name": "score-pumps", "product": "pump", "steps": [
        {"device_input": {}},
        {"apply_model": {"model": model, "inputs": FEATURES, "output": "prediction", "batch_size": batch_size}}]})


def pump_records(X: np.ndarray, n_devices: int = 100) -> list[dict[str, Any]]:
    """Aggregate-output-like records: one window of features per record (plain floats)."""
    rows = X.astype(np.float64).tolist()
    return [{"device": f"pump-{i % n_devices:04d}", "product": "pump", "ts": common.T0 + 600.0 * (i // n_devices),
             "values": dict(zip(FEATURES, row, strict=True))} for i, row in enumerate(rows)]


class Models(dict):
    """The smallest model registry apply_model needs: ``get(name)`` (what ModelStore offers)."""


def bench_pump(root: Path, n: int, reps: int, prof: bool) -> dict[str, Any]:
    from models.pump_anomaly.train import xy

    p = Predictor(root / "artifacts" / "pump_anomaly", version="bench")
    pool, _ = xy(root / "data" / "prepared" / "pump_anomaly" / "holdout_clean.npz")
    X = np.resize(pool, (n, pool.shape[1])).astype(np.float32)  # cycled rows of real window features
    records = pump_records(X)
    t = time.perf_counter()
    Batch.from_records(records[:20_000])
    from_records_rps = 20_000 / (time.perf_counter() - t)
    models = Models(pump_anomaly=p)
    want_pred, want_conf = p(X)
    cases = [("b1", 1, 1, min(n, 2_000)), ("b256", 256, 256, n), ("push4096_b256", 4096, 256, n),
             ("b4096", 4096, 4096, n)]
    out: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for key, push, bs, m in cases:
        batches = [Batch.from_records(records[a:a + push]) for a in range(0, m, push)]
        xs = [X[a:a + bs] for a in range(0, m, bs)]
        inst = Instance(f"pump-{key}", pump_plan(bs), models=models)
        runs[key] = {"push": push, "bs": bs, "n": m, "batches": batches, "xs": xs, "inst": inst}
        inst.push(batches[0])  # warm-up
        p(xs[0])
    res: dict[str, dict[str, list[Any]]] = {k: {"pipeline": [], "raw": []} for k in runs}
    for _ in range(reps):
        for key, r in runs.items():
            res[key]["pipeline"].append(timed_calls(r["inst"].push, r["batches"]))
            res[key]["raw"].append(timed_calls(p, r["xs"]))
    for key, r in runs.items():
        pipe = summarise(res[key]["pipeline"], r["n"], "records")
        raw = summarise(res[key]["raw"], r["n"], "records")
        got = Batch.concat(res[key]["pipeline"][-1]["outs"])
        agree = (len(got) == r["n"]
                 and np.array_equal(got.cols["prediction"].data, want_pred[:r["n"]])
                 and np.allclose(got.cols["prediction_confidence"].data, want_conf[:r["n"]], atol=1e-12)
                 and set(got.cols["prediction_model"].data.tolist()) == {"pump_anomaly:bench"})
        out[key] = {"pushed_batch": r["push"], "apply_model_batch_size": r["bs"], "records": r["n"],
                    "pipeline": pipe, "raw_predictor": raw,
                    "overhead_ratio_pipeline_over_raw": round(pipe["records_per_s"] / raw["records_per_s"], 3),
                    "overhead_ratio_cpu": round(pipe["records_per_cpu_s"] / raw["records_per_cpu_s"], 3),
                    "pipeline_us_per_batch_over_raw": round(
                        (pipe["best_wall_s"] - raw["best_wall_s"]) / len(r["batches"]) * 1e6, 2),
                    "outputs_agree_with_predictor": bool(agree),
                    "dead_letters": len(r["inst"].dead_letters.items)}
    if prof:
        r = runs["b256"]
        out["profile_b256_pipeline"] = profile_of(lambda: [r["inst"].push(b) for b in r["batches"]])
        out["profile_b256_raw"] = profile_of(lambda: [p(x) for x in r["xs"]])
    out["from_records_records_per_s"] = round(from_records_rps)
    return out


# -- (c) the same model as ONNX ----------------------------------------------------------------------

def onnx_artifacts(root: Path) -> tuple[Path, Path]:
    """A 12-feature gradient-boosting classifier (scikit-learn's GradientBoostingClassifier, 50 trees of depth 5,
    fitted on the prepared pump training split) saved twice: as a joblib artifact (kind sklearn) and exported to
    ONNX by skl2onnx (kind onnx), what `edgeloop model import --onnx` registers for a model from elsewhere. (The
    reference pump model, a HistGradientBoostingClassifier, does not convert: skl2onnx 1.20 passes a boolean
    where ONNX wants ints with scikit-learn 1.9.)"""
    import joblib
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    from edge_runtime import modelkit
    from models.pump_anomaly.train import xy

    src = root / "artifacts" / "pump_anomaly"
    desc = json.loads((src / modelkit.DESCRIPTOR).read_text())
    X, y = xy(root / "data" / "prepared" / "pump_anomaly" / "train.npz")
    model = GradientBoostingClassifier(n_estimators=50, max_depth=5, random_state=0).fit(X.astype(np.float32), y)
    keep = {k: v for k, v in desc.items() if k not in ("format", "kind", "arch", "name")}
    out = []
    for kind in ("sklearn", "onnx"):
        dest = root / "artifacts" / f"gbm_{kind}"
        dest.mkdir(exist_ok=True)
        if kind == "sklearn":
            joblib.dump(model, dest / "model.joblib")
        else:
            onx = to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False}, target_opset=17)
            (dest / "model.onnx").write_bytes(onx.SerializeToString())
        modelkit.write_descriptor(dest, {**keep, "name": f"gbm_{kind}", "kind": kind})
        out.append(dest)
    return out[0], out[1]


def bench_onnx(root: Path, n: int, reps: int) -> dict[str, Any]:
    """apply_model over one gradient-boosting model as joblib and as ONNX, the same records, interleaved."""
    from models.pump_anomaly.train import xy

    joblib_dir, onnx_dir = onnx_artifacts(root)
    joblib_p, onnx_p = Predictor(joblib_dir, version="bench"), Predictor(onnx_dir, version="bench")
    pool, _ = xy(root / "data" / "prepared" / "pump_anomaly" / "holdout_clean.npz")
    X = np.resize(pool, (n, pool.shape[1])).astype(np.float32)
    records = pump_records(X)
    models = Models(gbm_joblib=joblib_p, gbm_onnx=onnx_p)
    out: dict[str, Any] = {}
    for bs in (256, 4096):
        batches = [Batch.from_records(records[a:a + bs]) for a in range(0, n, bs)]
        insts = {"joblib": Instance(f"j{bs}", pump_plan(bs, "gbm_joblib"), models=models),
                 "onnx": Instance(f"o{bs}", pump_plan(bs, "gbm_onnx"), models=models)}
        for inst in insts.values():
            inst.push(batches[0])  # warm-up
        res: dict[str, list[Any]] = {k: [] for k in insts}
        for _ in range(reps):
            for k, inst in insts.items():
                res[k].append(timed_calls(inst.push, batches))
        got = {k: Batch.concat(res[k][-1]["outs"]).cols["prediction"].data for k in insts}
        same = float(np.mean(got["joblib"] == got["onnx"]))
        s = {k: summarise(v, n, "records") for k, v in res.items()}
        out[f"b{bs}"] = {"batch_size": bs, "records": n, "joblib": s["joblib"], "onnx": s["onnx"],
                         "onnx_over_joblib": round(s["onnx"]["records_per_s"] / s["joblib"]["records_per_s"], 3),
                         "predictions_agree": round(same, 6),
                         "dead_letters": sum(len(i.dead_letters.items) for i in insts.values())}
    return out


# -- (b) intrusion ------------------------------------------------------------------------------

def bench_intrusion(root: Path, n: int, reps: int, prof: bool) -> dict[str, Any]:
    from models.street import intrusion_xy

    p = Predictor(root / "artifacts" / "intrusion", version="bench")
    pool, _ = intrusion_xy(root / "data" / "prepared" / "intrusion" / "holdout_clean.npz")
    idx = np.resize(np.arange(len(pool)), n)
    crops = np.ascontiguousarray(pool[idx])
    assert crops.dtype == np.uint8 and crops.shape[1:] == (128, 128, 3), crops.shape
    records = [{"device": f"cam-{i % 4}", "product": "camera", "ts": common.T0 + i * 0.1,
                "values": {"crop": crops[i]}} for i in range(n)]
    accepts: dict[str, Any] = {}
    try:
        b = Batch.from_records(records[:64])
        col = b.cols["crop"]
        accepts = {"ok": col.data.dtype == object and len(col.data) == 64
                   and all(isinstance(v, np.ndarray) and v.shape == (128, 128, 3) for v in col.data.tolist()),
                   "column_dtype": str(col.data.dtype)}
        b1 = Batch.from_records(records[:1])
        accepts["single_record_ok"] = bool(b1.cols["crop"].data.shape == (1,))
    except Exception as exc:  # noqa: BLE001 - reported, then only the Predictor is measured
        accepts = {"ok": False, "error": repr(exc)}
    want_pred, want_conf = p(crops)
    plan = {"name": "intrusion", "product": "camera", "steps": [{"device_input": {}}]}
    runs: dict[str, Any] = {}
    for bs in CROP_BATCHES:
        m = min(n, 128) if bs == 1 else n
        xs = [crops[a:a + bs] for a in range(0, m, bs)]
        r: dict[str, Any] = {"bs": bs, "n": m, "xs": xs}
        if accepts.get("ok"):
            spec = {**plan, "steps": plan["steps"] + [{"apply_model": {"model": "intrusion", "image": "crop",
                                                                       "output": "intrusion", "batch_size": bs}}]}
            r["inst"] = Instance(f"intrusion-b{bs}", parse_pipeline(spec), models=Models(intrusion=p))
            r["batches"] = [Batch.from_records(records[a:a + bs]) for a in range(0, m, bs)]
            r["inst"].push(r["batches"][0])
        p(xs[0])
        runs[f"b{bs}"] = r
    res: dict[str, dict[str, list[Any]]] = {k: {"pipeline": [], "raw": []} for k in runs}
    for _ in range(reps):
        for key, r in runs.items():
            res[key]["raw"].append(timed_calls(p, r["xs"]))
            if "inst" in r:
                res[key]["pipeline"].append(timed_calls(r["inst"].push, r["batches"]))
    out: dict[str, Any] = {"from_records_accepts_ndarray_values": accepts}
    for key, r in runs.items():
        raw = summarise(res[key]["raw"], r["n"], "crops")
        raw_pred = np.concatenate([o[0] for o in res[key]["raw"][-1]["outs"]])
        raw_conf = np.concatenate([o[1] for o in res[key]["raw"][-1]["outs"]])
        entry: dict[str, Any] = {"batch_size": r["bs"], "crops": r["n"], "raw_predictor": raw,
                                 # torch picks other kernels for other batch sizes: rounding, not labels
                                 "raw_max_conf_diff_vs_one_big_batch": float(np.max(np.abs(
                                     raw_conf - want_conf[:r["n"]]))),
                                 "raw_pred_mismatch_vs_one_big_batch": int((raw_pred != want_pred[:r["n"]]).sum())}
        if "inst" in r:
            pipe = summarise(res[key]["pipeline"], r["n"], "crops")
            got = Batch.concat(res[key]["pipeline"][-1]["outs"])
            entry["pipeline"] = pipe
            entry["overhead_ratio_pipeline_over_raw"] = round(pipe["crops_per_s"] / raw["crops_per_s"], 3)
            entry["outputs_agree_with_predictor"] = bool(
                len(got) == r["n"] and np.array_equal(got.cols["intrusion"].data, raw_pred)
                and np.allclose(got.cols["intrusion_confidence"].data, raw_conf, atol=1e-6))
            entry["dead_letters"] = len(r["inst"].dead_letters.items)
        out[key] = entry
    if prof and "inst" in runs["b64"]:
        r = runs["b64"]
        out["profile_b64_pipeline"] = profile_of(lambda: [r["inst"].push(b) for b in r["batches"]])
    return out


# -- (d) what drift monitoring costs ---------------------------------------------------------------

def bench_drift_cost(root: Path, n: int, crops: int, reps: int) -> dict[str, Any]:
    """apply_model with the version's drift monitor on (its profile shipped) against the same predictor with it
    off, interleaved in the same run: the pump pipeline at batch 256 and the intrusion CNN at batch 32."""
    from models.pump_anomaly.train import xy
    from models.street import intrusion_xy

    out: dict[str, Any] = {}
    pool, _ = xy(root / "data" / "prepared" / "pump_anomaly" / "holdout_clean.npz")
    X = np.resize(pool, (n, pool.shape[1])).astype(np.float32)
    recs = pump_records(X)
    ipool, _ = intrusion_xy(root / "data" / "prepared" / "intrusion" / "holdout_clean.npz")
    C = np.ascontiguousarray(ipool[np.resize(np.arange(len(ipool)), crops)])
    crecs = [{"device": f"cam-{i % 4}", "product": "camera", "ts": common.T0 + i * 0.1, "values": {"crop": C[i]}}
             for i in range(crops)]
    cases = {"pump_anomaly_b256": ("pump_anomaly", recs, 256, lambda bs: pump_plan(bs)),
             "intrusion_b32": ("intrusion", crecs, 32, lambda bs: parse_pipeline({
                 "name": "intrusion", "product": "camera", "steps": [{"device_input": {}}, {"apply_model": {
                     "model": "intrusion", "image": "crop", "output": "intrusion", "batch_size": bs}}]}))}
    for key, (model, records, bs, plan) in cases.items():
        on = Predictor(root / "artifacts" / model, version="bench")
        off = Predictor(root / "artifacts" / model, version="bench")
        assert on.drift is not None, f"{model}: no drift profile in the artifact"
        off.drift = None
        batches = [Batch.from_records(records[a:a + bs]) for a in range(0, len(records), bs)]
        insts = {"on": Instance(f"{key}-on", plan(bs), models=Models(**{model: on})),
                 "off": Instance(f"{key}-off", plan(bs), models=Models(**{model: off}))}
        for inst in insts.values():
            inst.push(batches[0])
        res: dict[str, list[Any]] = {"on": [], "off": []}
        for _ in range(reps):
            for k in ("off", "on"):
                res[k].append(timed_calls(insts[k].push, batches))
        unit = "records" if model == "pump_anomaly" else "crops"
        s_on, s_off = summarise(res["on"], len(records), unit), summarise(res["off"], len(records), unit)
        out[key] = {"with_drift": s_on, "without_drift": s_off,
                    "throughput_ratio": round(s_on[f"{unit}_per_s"] / s_off[f"{unit}_per_s"], 3),
                    "cpu_ratio": round(s_on[f"{unit}_per_cpu_s"] / s_off[f"{unit}_per_cpu_s"], 3),
                    "drift_summary": on.drift.summary() if on.drift is not None else None}
    return out


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 records, 256 crops, 2 reps")
    ap.add_argument("--records", type=int, default=None, help="pump records per batched run (default 50,000)")
    ap.add_argument("--crops", type=int, default=None, help="crops per batched run (default 768; batch 1: 128)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--artifacts", default=None, help="keep/reuse the trained artifacts under this directory")
    ap.add_argument("--profile", action="store_true", help="also cProfile the batched runs")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    args.records = args.records or (20_000 if args.quick else 50_000)
    args.crops = args.crops or (256 if args.quick else 768)
    args.reps = args.reps or (2 if args.quick else 3)
    t_start = time.perf_counter()
    affinity_before = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    core = pin_to_one_core(args.core)
    threads = one_thread()
    print(f"model_apply: {DATA_NOTE}")
    print(f"pinned to core {core}; nproc {os.cpu_count()}; threads {threads.get('torch_threads')} (torch), "
          f"threadpoolctl {'limits to 1' if threads.get('threadpoolctl') else 'NOT installed'}", flush=True)
    load_before = loadavg()
    with artifacts_root(args.artifacts) as root:
        art = build_artifacts(root)
        print(f"artifacts ready in {art['seconds']} s (trained: {', '.join(art['trained']) or 'reused'})", flush=True)
        pump = bench_pump(root, args.records, args.reps, args.profile)
        print("pump_anomaly done", flush=True)
        intr = bench_intrusion(root, args.crops, args.reps, args.profile)
        onnx = bench_onnx(root, args.records, args.reps)
        print("onnx done", flush=True)
        drift = bench_drift_cost(root, args.records, args.crops, max(args.reps, 5))
        print("drift cost done", flush=True)
    load_after = loadavg()

    rows = []
    for r in pump.values():
        if not isinstance(r, dict) or "pipeline" not in r:
            continue
        rows.append([f"pump_anomaly push {r['pushed_batch']} / batch_size {r['apply_model_batch_size']}",
                     r["pipeline"]["records_per_s"], r["raw_predictor"]["records_per_s"],
                     r["overhead_ratio_pipeline_over_raw"], r["pipeline"]["batch_ms_p50"],
                     r["pipeline"]["batch_ms_p99"], "yes" if r["outputs_agree_with_predictor"] else "NO"])
    for r in intr.values():
        if not isinstance(r, dict) or "raw_predictor" not in r:
            continue
        pipe = r.get("pipeline", {})
        rows.append([f"intrusion batch {r['batch_size']}", pipe.get("crops_per_s", "-"),
                     r["raw_predictor"]["crops_per_s"], r.get("overhead_ratio_pipeline_over_raw", "-"),
                     pipe.get("batch_ms_p50", "-"), pipe.get("batch_ms_p99", "-"),
                     {True: "yes", False: "NO"}.get(r.get("outputs_agree_with_predictor"), "-")])
    for r in onnx.values():
        rows.append([f"12-feature GBM as ONNX, batch_size {r['batch_size']} (joblib {r['joblib']['records_per_s']:,.0f}/s)",
                     r["onnx"]["records_per_s"], "-", f"{r['onnx_over_joblib']}x joblib", r["onnx"]["batch_ms_p50"],
                     r["onnx"]["batch_ms_p99"], f"{r['predictions_agree']:.4%}"])
    print()
    common.print_table(rows, ["run", "pipeline /s", "raw predictor /s", "pipeline/raw", "p50 ms/batch",
                              "p99 ms/batch", "agree"])
    pump_rps = pump["b256"]["pipeline"]["records_per_s"]
    crops_best = max((r.get("pipeline") or r["raw_predictor"])["crops_per_s"]
                     for r in intr.values() if isinstance(r, dict) and "raw_predictor" in r)
    crops_b64 = (intr["b64"].get("pipeline") or intr["b64"]["raw_predictor"])["crops_per_s"]
    met_pump = pump_rps >= TARGET_PUMP_RPS
    met_crops = crops_b64 >= TARGET_CROPS_PS
    onnx_rps = onnx["b256"]["onnx"]["records_per_s"]
    met_onnx = onnx_rps >= TARGET_ONNX_RPS
    print(f"load average before/after: {load_before} / {load_after}")
    print(f"target pump_anomaly >= {TARGET_PUMP_RPS:,} records/s batched (apply_model, batch 256): "
          f"{'met' if met_pump else 'NOT met'} ({pump_rps:,.0f}; batch 4096: "
          f"{pump['b4096']['pipeline']['records_per_s']:,.0f})")
    print(f"target intrusion >= {TARGET_CROPS_PS} crops/s (apply_model, batch 64): {'met' if met_crops else 'NOT met'} "
          f"({crops_b64:,.0f}; best of all batch sizes {crops_best:,.0f})")
    print(f"target ONNX (a 12-feature GBM exported, onnxruntime, one thread) >= {TARGET_ONNX_RPS:,} records/s through "
          f"apply_model, batch 256: {'met' if met_onnx else 'NOT met'} ({onnx_rps:,.0f}; joblib in the same run "
          f"{onnx['b256']['joblib']['records_per_s']:,.0f}; predictions agree on {onnx['b256']['predictions_agree']:.4%})")
    for key, r in drift.items():
        print(f"drift monitoring (issue 17: costs <= 5% of apply_model's throughput) {key}: "
              f"{r['throughput_ratio']:.3f}x the throughput without it (CPU time {r['cpu_ratio']:.3f}x): "
              f"{'met' if r['throughput_ratio'] >= 0.95 else 'NOT met'}")
    agree = all(r.get("outputs_agree_with_predictor", True) for r in (*pump.values(), *intr.values())
                if isinstance(r, dict))
    if not args.no_write:
        path = common.write_results("model_apply", {
            "data_note": DATA_NOTE,
            "setup": {
                "one_core": {"pinned_core": core, "affinity_before_pinning": affinity_before, **threads},
                "artifacts": {k: v for k, v in art.items() if k != "root"},
                "pump_pipeline": pump_plan(256).to_dict(),
                "pump_records": "12 float features per record (FEATURES), rows of the prepared holdout_clean "
                                "set cycled; Batch.from_records before timing (not timed)",
                "intrusion_records": "{'crop': uint8 ndarray (128, 128, 3)} per record, prepared ROI crops "
                                     "cycled; Batch.from_records before timing",
                "reps": args.reps, "figures": "records/s from the best wall time of the reps; latency "
                                              "percentiles over every timed batch of every rep",
            },
            "targets": {"pump_records_per_s_batched": TARGET_PUMP_RPS, "intrusion_crops_per_s": TARGET_CROPS_PS,
                        "onnx_records_per_s_batched": TARGET_ONNX_RPS},
            "onnx": onnx,
            "drift_monitoring": drift,
            "summary": {"drift_throughput_ratio": {k: r["throughput_ratio"] for k, r in drift.items()},
                        "meets_drift_cost": all(r["throughput_ratio"] >= 0.95 for r in drift.values()),"pump_records_per_s_b256": pump_rps, "onnx_records_per_s_b256": onnx_rps, "meets_onnx": met_onnx,
                        "pump_raw_records_per_s_b256": pump["b256"]["raw_predictor"]["records_per_s"],
                        "pump_overhead_ratio_b256": pump["b256"]["overhead_ratio_pipeline_over_raw"],
                        "pump_p99_ms_b256": pump["b256"]["pipeline"]["batch_ms_p99"],
                        "pump_records_per_s_b4096": pump["b4096"]["pipeline"]["records_per_s"],
                        "pump_records_per_s_b1": pump["b1"]["pipeline"]["records_per_s"],
                        "pump_p99_ms_b1": pump["b1"]["pipeline"]["batch_ms_p99"],
                        "intrusion_crops_per_s_b64": crops_b64, "intrusion_crops_per_s_best": crops_best,
                        "intrusion_via_apply_model": bool(intr["from_records_accepts_ndarray_values"].get("ok")),
                        "outputs_agree": agree,
                        "meets_pump_target": met_pump, "meets_intrusion_target": met_crops,
                        "meets_target": met_pump and met_crops},
            "pump_anomaly": pump,
            "intrusion": intr,
            "loadavg_before_after": [load_before, load_after],
            "run_seconds": round(time.perf_counter() - t_start, 1),
        })
        print(f"results: {path}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
