"""Model hot swap under load: ``apply_model`` served continuously while ModelStore swaps versions.

    .venv/bin/python -m bench.hot_swap [--rate 30000] [--swaps 20] [--interval 0.25] [--artifacts ROOT]

SYNTHETIC data and models (see bench/model_apply.py): two ``pump_anomaly`` versions trained here on small
synthetic sets, laid out in a node's model store as ``<store>/models/pump_anomaly/1`` (the reference
configuration) and ``/2`` (``learning_rate`` 0.1 instead of 0.2, so its predictions differ). Nothing
goes through ``install_archive`` (no signed bundle); ``ModelStore.activate`` runs the real load +
health-check path the first time it sees a version, then swaps the cached predictor.

The live engine path: :class:`edge_runtime.engine.Engine` runs the pipeline
``device_input -> apply_model {model: pump_anomaly, inputs: FEATURES, batch_size: 256}`` on its worker
thread behind the bounded queue. A feeder thread submits columnar batches (``Batch.from_columns``, as
connectors hand them on) at ``--rate`` records/s in ``--tick`` ms ticks; each record carries its sequence
number, the index of its feature row and ``sent``, the ``perf_counter`` time just before the batch is
built and submitted. ``on_output`` stamps the time each output batch leaves the pipeline. Version 1 is
activated before the feed; once the feed is steady a swapper thread calls ``store.activate`` ``--swaps``
times, alternating 2, 1, 2, ... every ``--interval`` s (the first activation of 2 loads it and runs its
health check while records flow).

Checks and figures:

* lost = records in - records out - dead letters (target 0); dead letters (target 0); duplicates;
* every output batch carries one model tag (``prediction_model``), and its predictions are exactly
  that version's predictions for those rows (computed beforehand with separate Predictors);
* end-to-end latency (output time - ``sent``): p50, p99, max, records over 100 ms (target 0), overall
  and for records in flight during a swap window (their [sent, out] overlaps [activate called,
  activate returned + 50 ms]);
* each activate's duration, the achieved input rate, the largest queue depth seen.

Math libraries are limited to one thread (as in model_apply; sklearn's OpenMP predict on a shared,
loaded 2-core machine costs 100s of ms now and then). Writes bench/results/hot_swap.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench.model_apply import PARAMS, artifacts_root, build_artifacts, one_thread, pump_plan  # noqa: E402
from bench.pipeline_inproc import loadavg  # noqa: E402
from edge_runtime.engine import Engine, Instance  # noqa: E402
from edge_runtime.modelkit import Predictor  # noqa: E402
from edge_runtime.modelstore import ModelStore  # noqa: E402
from edge_runtime.records import DEVICES, Batch  # noqa: E402
from models.pump_anomaly.features import FEATURES  # noqa: E402

DATA_NOTE = ("SYNTHETIC data and models: pump window features from models.synth (seeded simulations), two "
             "pump_anomaly versions trained here on small synthetic sets; not real devices")
NAME = "pump_anomaly"
LATENCY_LIMIT_S = 0.100
SWAP_MARGIN_S = 0.050
TARGETS = {"lost": 0, "dead_letters": 0, "records_over_100ms": 0, "batches_with_mixed_versions": 0}


def make_versions(root: Path, store_root: Path) -> dict[str, Any]:
    """``store_root/models/pump_anomaly/{1,2}`` from the trained artifact and a second fit."""
    from models import stages
    from models.pump_anomaly.train import fit

    dest = store_root / "models" / NAME
    v1, v2 = dest / "1", dest / "2"
    if not v1.exists():
        shutil.copytree(root / "artifacts" / NAME, v1)
    info = {}
    if not v2.exists():
        p = {**stages.model_params(NAME, PARAMS), "learning_rate": 0.1}
        t = time.perf_counter()
        info = fit(root / "data" / "prepared" / NAME, v2, p, stages.seed_of(PARAMS) + 1)
        info["seconds"] = round(time.perf_counter() - t, 2)
    return {"1": "reference params", "2": "learning_rate 0.1 (predictions differ from 1)", "fit_2": info}


class Feeder(threading.Thread):
    """Columnar batches into the engine at a steady rate; every record stamped with its send time."""

    def __init__(self, engine: Engine, X: np.ndarray, rate: float, tick: float, max_batch: int,
                 n_devices: int = 100) -> None:
        super().__init__(name="feeder", daemon=True)
        self.engine, self.X, self.rate, self.tick, self.max_batch = engine, X, rate, tick, max_batch
        self.codes = DEVICES.codes([f"pump-{i:04d}" for i in range(n_devices)])
        self.sent = 0
        self.batches = 0
        self.max_queue = 0
        self.stop_flag = threading.Event()
        self.t0 = self.t1 = 0.0

    def _send(self, n: int) -> None:
        seq = np.arange(self.sent, self.sent + n, dtype=np.int64)
        rows = seq % len(self.X)
        now = time.perf_counter()
        cols = {f: self.X[rows, j].astype(np.float64) for j, f in enumerate(FEATURES)}
        batch = Batch.from_columns(self.codes[seq % len(self.codes)], "pump", common.T0 + seq * 1e-3,
                                   seq=seq, row=rows, sent=np.full(n, now), **cols)
        self.engine.submit(batch)  # blocks while the queue is full (backpressure): nothing dropped here
        self.sent += n
        self.batches += 1

    def run(self) -> None:
        self.t0 = time.perf_counter()
        while not self.stop_flag.is_set():
            due = int((time.perf_counter() - self.t0) * self.rate)
            while due > self.sent:
                self._send(min(due - self.sent, self.max_batch))
            self.max_queue = max(self.max_queue, *self.engine.queue_depths().values())
            self.stop_flag.wait(self.tick)
        self.t1 = time.perf_counter()


class Outputs:
    """What leaves the pipeline: per output batch its arrival time, rows and model tags."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]] = []

    def __call__(self, instance: Instance, batch: Batch) -> None:
        t = time.perf_counter()
        c = batch.cols
        self.batches.append((t, c["seq"].data, c["row"].data, c["sent"].data, c["prediction"].data,
                             list(dict.fromkeys(c["prediction_model"].data.tolist()))))


def swapper(store: ModelStore, swaps: int, interval: float, log: list[dict[str, Any]], start: threading.Event
            ) -> None:
    start.wait()
    for i in range(swaps):
        version = "2" if i % 2 == 0 else "1"
        cold = (NAME, version) not in store._loaded  # first activation of the version: load + health check
        t = time.perf_counter()
        err = None
        try:
            store.activate(NAME, version)
        except Exception as exc:  # noqa: BLE001 - reported in the results
            err = repr(exc)
        log.append({"swap": i + 1, "to": version, "start": t, "end": time.perf_counter(), "cold_load": cold,
                    "error": err})
        time.sleep(interval)


def pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1e3, 3) if len(values) else None


def latency_stats(lat: np.ndarray) -> dict[str, Any]:
    return {"records": int(lat.size), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "max_ms": round(float(lat.max()) * 1e3, 3) if lat.size else None,
            "over_100ms": int((lat > LATENCY_LIMIT_S).sum())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = one_thread()
    with artifacts_root(args.artifacts) as root:
        art = build_artifacts(root, (NAME,))
        store_root = root / "store"
        versions = make_versions(root, store_root)
        from models.pump_anomaly.train import xy

        pool = np.concatenate([xy(root / "data" / "prepared" / NAME / f"{s}.npz")[0]
                               for s in ("holdout_clean", "holdout_drifted")]).astype(np.float32)
        expect = {v: Predictor(store_root / "models" / NAME / v, version=v)(pool)[0] for v in ("1", "2")}
        differ = int((expect["1"] != expect["2"]).sum())
        store = ModelStore(store_root)
        t = time.perf_counter()
        store.activate(NAME, "1")
        first_load_s = time.perf_counter() - t

        outputs = Outputs()
        engine = Engine(outputs, queue_size=args.queue, tick_interval=0.5)
        inst = Instance("hot-swap", pump_plan(256, NAME), models=store)
        engine.start(inst)
        feeder = Feeder(engine, pool, args.rate, args.tick / 1000, args.max_batch)
        swaps: list[dict[str, Any]] = []
        go = threading.Event()
        sw = threading.Thread(target=swapper, args=(store, args.swaps, args.interval, swaps, go), name="swapper",
                              daemon=True)
        load_before = loadavg()
        feeder.start()
        sw.start()
        time.sleep(args.warmup)
        go.set()
        sw.join(args.swaps * (args.interval + 10))
        time.sleep(args.after)
        feeder.stop_flag.set()
        feeder.join(10)
        drained = engine.drain(30)
        engine.stop_all()
        load_after = loadavg()
        status = store.status()

    # -- checks --------------------------------------------------------------------------------
    n_in = feeder.sent
    ob = outputs.batches
    seq = np.concatenate([b[1] for b in ob]) if ob else np.empty(0, np.int64)
    n_out = int(seq.size)
    dead = len(inst.dead_letters.items)
    distinct = int(np.unique(seq).size)
    mixed = [i for i, b in enumerate(ob) if len(b[5]) != 1]
    wrong = 0
    tags_in_order: list[str] = []
    for _, _, rows, _, pred, tags in ob:
        if len(tags) == 1:
            v = tags[0].split(":", 1)[1]
            wrong += int((pred != expect[v][rows]).sum()) if v in expect else len(pred)
        if not tags_in_order or tags_in_order[-1] != tags[0]:
            tags_in_order.append(tags[0])
    t_out = np.concatenate([np.full(len(b[1]), b[0]) for b in ob]) if ob else np.empty(0)
    sent = np.concatenate([b[3] for b in ob]) if ob else np.empty(0)
    lat = t_out - sent
    in_swap = np.zeros(lat.size, dtype=bool)
    for s in swaps:
        in_swap |= (sent <= s["end"] + SWAP_MARGIN_S) & (t_out >= s["start"])
    cold = [s for s in swaps if s["cold_load"]]
    in_cold = np.zeros(lat.size, dtype=bool)
    for s in cold:
        in_cold |= (sent <= s["end"] + SWAP_MARGIN_S) & (t_out >= s["start"])
    feed_s = feeder.t1 - feeder.t0
    t_ref = feeder.t0
    res = {
        "setup": {"rate_records_per_s": args.rate, "tick_ms": args.tick, "max_batch": args.max_batch,
                  "queue_size": args.queue, "swaps": args.swaps, "interval_s": args.interval,
                  "warmup_s": args.warmup, "after_s": args.after, "pipeline": pump_plan(256, NAME).to_dict(),
                  "versions": versions, "threads": threads,
                  "artifacts": {k: v for k, v in art.items() if k != "root"},
                  "feature_rows": int(len(pool)), "rows_where_versions_disagree": differ,
                  "swap_window": f"a record whose [sent, out] overlaps [activate called, activate returned + "
                                 f"{SWAP_MARGIN_S * 1e3:g} ms] of any swap",
                  "first_activation_of_1_s": round(first_load_s, 4)},
        "counts": {"in": n_in, "out": n_out, "dead_letters": dead, "lost": n_in - n_out - dead,
                   "duplicates": n_out - distinct, "output_batches": len(ob), "input_batches": feeder.batches,
                   "batches_with_mixed_versions": len(mixed),
                   "rows_not_matching_their_tags_version": wrong,
                   "version_changes_seen_in_output": len(tags_in_order) - 1, "drained": drained},
        "input": {"seconds": round(feed_s, 3), "records_per_s_achieved": round(n_in / feed_s) if feed_s else None,
                  "max_queue_depth_seen": feeder.max_queue},
        "latency": {"overall": latency_stats(lat), "during_swaps": latency_stats(lat[in_swap]),
                    "outside_swaps": latency_stats(lat[~in_swap]),
                    "during_cold_load_swaps": latency_stats(lat[in_cold])},
        "swaps": [{"swap": s["swap"], "to": s["to"], "at_s": round(s["start"] - t_ref, 4),
                   "activate_ms": round((s["end"] - s["start"]) * 1e3, 3), "cold_load": s["cold_load"],
                   "error": s["error"]} for s in swaps],
        "store_status": status,
        "loadavg_before_after": [load_before, load_after],
    }
    worst = np.argsort(lat)[-5:][::-1] if lat.size else []
    res["latency"]["worst"] = [{"ms": round(float(lat[i]) * 1e3, 3), "sent_at_s": round(float(sent[i] - t_ref), 4)}
                               for i in worst]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="swaps every 0.1 s, 1 s before and after")
    ap.add_argument("--rate", type=float, default=30_000, help="records/s into the pipeline")
    ap.add_argument("--tick", type=float, default=5.0, help="feeder tick, ms")
    ap.add_argument("--max-batch", type=int, default=1024, help="most records per submitted batch")
    ap.add_argument("--queue", type=int, default=64, help="engine queue size (batches)")
    ap.add_argument("--swaps", type=int, default=20)
    ap.add_argument("--interval", type=float, default=None, help="seconds between swaps (default 0.25)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of steady feed before the first swap (2)")
    ap.add_argument("--after", type=float, default=None, help="seconds of feed after the last swap (2)")
    ap.add_argument("--artifacts", default=None, help="keep/reuse the trained artifacts under this directory")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    for k, normal, quick in (("interval", 0.25, 0.1), ("warmup", 2.0, 1.0), ("after", 2.0, 1.0)):
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else normal)
    print(f"hot_swap: {DATA_NOTE}")
    print(f"{args.swaps} swaps every {args.interval:g} s under {args.rate:,.0f} records/s; nproc {os.cpu_count()}",
          flush=True)
    t0 = time.perf_counter()
    res = run(args)
    c, lt = res["counts"], res["latency"]
    met = {"lost": c["lost"] == 0, "dead_letters": c["dead_letters"] == 0,
           "records_over_100ms": lt["overall"]["over_100ms"] == 0,
           "batches_with_mixed_versions": c["batches_with_mixed_versions"] == 0}
    ok = all(met.values()) and c["duplicates"] == 0 and c["rows_not_matching_their_tags_version"] == 0 \
        and not any(s["error"] for s in res["swaps"])
    print()
    common.print_table([[k, v["records"], v["p50_ms"] or "-", v["p99_ms"] or "-", v["max_ms"] or "-",
                         v["over_100ms"]] for k, v in lt.items() if k != "worst"],
                       ["latency", "records", "p50 ms", "p99 ms", "max ms", "> 100 ms"])
    print()
    print(f"in {c['in']:,}  out {c['out']:,}  dead {c['dead_letters']}  lost {c['lost']}  duplicates "
          f"{c['duplicates']}  mixed-version batches {c['batches_with_mixed_versions']}  rows not matching "
          f"their tag's version {c['rows_not_matching_their_tags_version']}  version changes seen "
          f"{c['version_changes_seen_in_output']}")
    acts = [s["activate_ms"] for s in res["swaps"]]
    if acts:
        print(f"activate: cold {[s['activate_ms'] for s in res['swaps'] if s['cold_load']]} ms, "
              f"cached max {max([s['activate_ms'] for s in res['swaps'] if not s['cold_load']] or [0]):.3f} ms; "
              f"input {res['input']['records_per_s_achieved']:,} records/s, max queue "
              f"{res['input']['max_queue_depth_seen']}")
    for k, v in met.items():
        print(f"target {k} = {TARGETS[k]}: {'met' if v else 'NOT met'}")
    if not args.no_write:
        path = common.write_results("hot_swap", {
            "data_note": DATA_NOTE, "targets": TARGETS,
            "summary": {"lost": c["lost"], "dead_letters": c["dead_letters"],
                        "records_over_100ms": lt["overall"]["over_100ms"],
                        "batches_with_mixed_versions": c["batches_with_mixed_versions"],
                        "p50_ms": lt["overall"]["p50_ms"], "p99_ms": lt["overall"]["p99_ms"],
                        "p99_ms_during_swaps": lt["during_swaps"]["p99_ms"],
                        "swaps_done": len(res["swaps"]), "targets_met": met, "meets_target": ok},
            **res, "run_seconds": round(time.perf_counter() - t0, 1)})
        print(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
