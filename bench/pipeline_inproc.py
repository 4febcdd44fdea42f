"""In-process throughput of the pipeline engine against a hand-written loop, in one run.

Pipeline (1,000,000 SYNTHETIC records from 1,000 simulated pumps)::

    device_input -> filter temperature > 75 -> time_window 1s -> aggregate (mean, max)
    -> custom_function temp_f -> filter vibration_max > 0.5

Measured in this one process, pinned to one core, numpy limited to one thread:

  (a) bench/baseline_loop.py over pre-parsed Record dicts;
  (b) EdgeLoop fed columnar micro-batches (Batch.from_columns with interned device
      codes, as the Device Bus hands them on), ``--batch`` records each;
  (c) EdgeLoop fed the same Record dicts, Batch.from_records per micro-batch included.

Also shown, not part of the targets: (b') columnar batches given device-id strings
(interning included). The outputs of (a), (b), (c) are checked to agree (count,
device, ts, every value within 1e-9) before any figure is reported. Best of
``--reps`` repetitions each, interleaved, after an unmeasured warm-up. Writes bench/results/pipeline_inproc.json.

    .venv/bin/python -m bench.pipeline_inproc [--records N] [--batch N] [--reps N] [--profile]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench.baseline_loop import run_baseline  # noqa: E402
from edge_runtime.instance import Instance  # noqa: E402
from edge_runtime.pipeline import parse_pipeline  # noqa: E402
from edge_runtime.records import DEVICES, Batch  # noqa: E402

SPEC = {"name": "bench", "product": "pump", "steps": [
    {"device_input": {}},
    {"filter": "temperature > 75"},
    {"time_window": {"size": "1s"}},
    {"aggregate": {"temperature": "mean", "vibration": "max"}},
    {"custom_function": {"set": {"temp_f": "temperature_mean * 9 / 5 + 32"}}},
    {"filter": "vibration_max > 0.5"},
]}
TARGET_RPS = 500_000
TARGET_RATIO = 3.0
TOLERANCE = 1e-9


def pin_to_one_core(core: int = 0) -> int | None:
    try:
        os.sched_setaffinity(0, {core})
        return core
    except (AttributeError, OSError):  # pragma: no cover - not Linux, or core 0 not allowed
        return None


# -- the three runs: each returns the outputs (in its own format) --------------------------

def _run(plan: Any, batches: Any) -> list[Batch]:
    inst = Instance("bench", plan)
    outs = [out for out in (inst.push(b) for b in batches) if len(out)]
    out = inst.flush()
    return outs + [out] if len(out) else outs


def run_columnar(plan: Any, batches: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]]) -> list[Batch]:
    return _run(plan, (Batch.from_columns(dev, "pump", ts, temperature=temp, vibration=vib)
                       for dev, ts, temp, vib in batches))


def run_dicts(plan: Any, records: list[dict[str, Any]], batch: int) -> list[Batch]:
    return _run(plan, (Batch.from_records(records[i:i + batch]) for i in range(0, len(records), batch)))


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result).

    On a pinned core the CPU time leaves out the time other processes held the
    core; it is reported beside the wall time for shared, noisy machines.
    """
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]  # noqa: SIM115
    except OSError:  # pragma: no cover - not Linux
        return None


# -- agreement ---------------------------------------------------------------------------

def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    return a == b


def compare(expected: list[dict[str, Any]], got: list[dict[str, Any]], label: str) -> list[str]:
    """Differences between two output record lists, in order (empty when they agree)."""
    problems = []
    if len(expected) != len(got):
        problems.append(f"{label}: {len(got)} output records, baseline has {len(expected)}")
    for i, (e, g) in enumerate(zip(expected, got, strict=False)):
        if e["device"] != g["device"] or e["product"] != g["product"] or not _close(e["ts"], g["ts"]):
            problems.append(f"{label}: record {i} is {g['device']}@{g['ts']}, baseline {e['device']}@{e['ts']}")
        elif set(e["values"]) != set(g["values"]):
            problems.append(f"{label}: record {i} fields {sorted(g['values'])}, baseline {sorted(e['values'])}")
        else:
            bad = [k for k in e["values"] if not _close(e["values"][k], g["values"][k])]
            if bad:
                problems.append(f"{label}: record {i} ({e['device']}@{e['ts']}) differs in {bad}: "
                                f"{[g['values'][k] for k in bad]} vs {[e['values'][k] for k in bad]}")
        if len(problems) >= 5:
            break
    return problems


def max_abs_diff(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> float:
    worst = 0.0
    for e, g in zip(expected, got, strict=False):
        for k, v in e["values"].items():
            worst = max(worst, abs(float(v) - float(g["values"][k])))
    return worst


# -- profile -----------------------------------------------------------------------------

def profile(fn: Callable[[], Any], top: int = 25) -> tuple[str, list[dict[str, Any]]]:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).sort_stats("tottime")
    stats.print_stats(top)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _) in sorted(
            stats.stats.items(), key=lambda kv: -kv[1][2])[:top]:  # type: ignore[attr-defined]
        rows.append({"function": f"{os.path.relpath(file) if file.startswith('/') else file}:{line}({func})",
                     "calls": ncalls, "tottime_s": round(tottime, 4), "cumtime_s": round(cumtime, 4),
                     "share": round(tottime / total, 4) if total else None})
    return buf.getvalue(), rows


# -- main --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=common.N_RECORDS)
    ap.add_argument("--devices", type=int, default=common.N_DEVICES)
    ap.add_argument("--batch", type=int, default=10_000, help="micro-batch size for (b) and (c)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--core", type=int, default=0, help="the core to pin to")
    ap.add_argument("--profile", action="store_true", help="also cProfile one run of (b) and (c)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/pipeline_inproc.json")
    args = ap.parse_args(argv)

    affinity_before = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    core = pin_to_one_core(args.core)
    load_before = loadavg()
    n = args.records
    print(f"pipeline_inproc: {n:,} records from {args.devices:,} devices, micro-batches of {args.batch:,}")
    print(common.DATA_NOTE)
    print(f"pinned to core {core}; nproc {os.cpu_count()}; numpy threads limited to 1")

    plan = parse_pipeline(SPEC)
    cols = common.generate_columns(n, args.devices)
    records = common.columns_to_records(cols)
    codes_of_name = DEVICES.codes(cols["names"])  # the Device Bus interns device ids as they arrive
    codes = codes_of_name[cols["device_idx"]]
    names_arr = np.array(cols["names"], dtype=object)[cols["device_idx"]]
    slices = [slice(i, i + args.batch) for i in range(0, n, args.batch)]
    col_batches = [(codes[s], cols["ts"][s], cols["temperature"][s], cols["vibration"][s]) for s in slices]
    str_batches = [(names_arr[s], cols["ts"][s], cols["temperature"][s], cols["vibration"][s]) for s in slices]

    runs: dict[str, Callable[[], Any]] = {
        "a": lambda: run_baseline(records),
        "b": lambda: run_columnar(plan, col_batches),
        "c": lambda: run_dicts(plan, records, args.batch),
        "b_strings": lambda: run_columnar(plan, str_batches),
    }
    labels = {
        "a": "(a) hand-written loop over dicts",
        "b": "(b) EdgeLoop, columnar batches",
        "c": "(c) EdgeLoop, dicts + from_records",
        "b_strings": "(b') EdgeLoop, columnar, device-id strings",
    }
    # warm-up, not measured: first calls, imports, allocator (a slice of the data, fresh state)
    warm = min(n, 5 * args.batch)
    run_baseline(records[:warm])
    run_columnar(plan, col_batches[:max(1, warm // args.batch)])
    run_dicts(plan, records[:warm], args.batch)
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu_times: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, Any] = {}
    for rep in range(args.reps):
        for key, fn in runs.items():
            secs, cpu, result = timed(fn)
            times[key].append(secs)
            cpu_times[key].append(cpu)
            outputs[key] = result
        print(f"  rep {rep + 1} (wall/cpu s): "
              + ", ".join(f"{k} {t[-1]:.3f}/{cpu_times[k][-1]:.3f}" for k, t in times.items()))
    load_after = loadavg()

    # agreement: every EdgeLoop variant must produce exactly what the baseline does
    expected, late = outputs["a"]
    t_mat, _, materialised = timed(lambda: {k: Batch.concat(outputs[k]).to_records() for k in ("b", "c", "b_strings")})
    problems = []
    for key, got in materialised.items():
        problems += compare(expected, got, labels[key])
    agree = not problems
    diffs = {k: max_abs_diff(expected, got) for k, got in materialised.items()}

    best = {k: min(t) for k, t in times.items()}
    best_cpu = {k: min(t) for k, t in cpu_times.items()}
    rps = {k: n / best[k] for k in runs}
    rps_cpu = {k: n / best_cpu[k] for k in runs}
    ratio_b = rps["b"] / rps["a"]
    ratio_c = rps["c"] / rps["a"]
    rows = [[labels[k], round(best[k], 3), round(rps[k]), round(rps[k] / rps["a"], 2),
             round(best_cpu[k], 3), round(rps_cpu[k]), round(rps_cpu[k] / rps_cpu["a"], 2)] for k in runs]
    print()
    common.print_table(rows, ["run", "best wall s", "records/s", "x baseline",
                              "best cpu s", "records/cpu-s", "x baseline (cpu)"])
    print(f"load average before/after: {load_before} / {load_after} (other processes share this machine)")
    print()
    print(f"outputs: {len(expected):,} records (windows passing the last filter), late {late}; "
          f"agreement (a)=(b)=(c)=(b'): {'yes' if agree else 'NO'}; max |diff| "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    for p in problems:
        print("  MISMATCH", p)
    met_rps = rps["b"] >= TARGET_RPS
    met_ratio = ratio_b >= TARGET_RATIO
    print(f"target records/s >= {TARGET_RPS:,} on one core (b): {'met' if met_rps else 'NOT met'} "
          f"({rps['b']:,.0f}); (c): {'met' if rps['c'] >= TARGET_RPS else 'NOT met'} ({rps['c']:,.0f})")
    print(f"target >= {TARGET_RATIO:g}x the hand-written loop (b)/(a): {'met' if met_ratio else 'NOT met'} "
          f"({ratio_b:.2f}x); (c)/(a): {ratio_c:.2f}x")
    print(f"(not timed above: materialising EdgeLoop's outputs as dicts, to_records, takes "
          f"{t_mat / 3:.3f}s per run)")

    prof_rows: dict[str, Any] = {}
    if args.profile:
        for key in ("b", "c"):
            text, prof_rows[key] = profile(runs[key])
            print(f"\ncProfile of {labels[key]} (by own time):")
            print("\n".join(text.splitlines()[:45]))

    if not args.no_write:
        path = common.write_results("pipeline_inproc", {
            "pipeline": SPEC,
            "records": n, "devices": args.devices, "batch": args.batch, "reps": args.reps,
            "pinned_core": core, "numpy_threads": 1,
            "runs": {k: {"label": labels[k], "seconds": times[k], "best_s": best[k], "records_per_s": rps[k],
                         "x_baseline": rps[k] / rps["a"], "cpu_seconds": cpu_times[k], "best_cpu_s": best_cpu[k],
                         "records_per_cpu_s": rps_cpu[k], "x_baseline_cpu": rps_cpu[k] / rps_cpu["a"]}
                     for k in runs},
            "ratio_b_over_a": ratio_b, "ratio_c_over_a": ratio_c,
            "outputs": len(expected), "late": late,
            "agreement": {"ok": agree, "tolerance": TOLERANCE, "problems": problems, "max_abs_diff": diffs},
            "targets": {"records_per_s": TARGET_RPS, "ratio": TARGET_RATIO, "records_per_s_met_b": met_rps,
                        "records_per_s_met_c": rps["c"] >= TARGET_RPS, "ratio_met_b": met_ratio,
                        "ratio_met_c": ratio_c >= TARGET_RATIO},
            "materialise_outputs_s": t_mat / 3,
            "profile_top": prof_rows or None,
            "affinity_before_pinning": affinity_before,
            "loadavg_before_after": [load_before, load_after],
        })
        print(f"\nwrote {path}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
