"""The agile loop on the pump scenario: drifted accuracy before the loop, after 1 and 2 iterations, against
a model trained on all the drifted field data; labels spent; the wall time of an iteration.

    .venv/bin/python -m bench.agile_loop [--scale project|tiny] [--label-share 0.05] [--seeds 3,5,7]
                                         [--random-share 1.0]

Every part is real and runs here: Mosquitto, a hub process, an edge node (the champion comes signed from
the hub's warehouse), a Prefect server (``prefect_test_harness``), Label Studio (its own venv: `make
label-studio`), MLflow and BentoML stores in a workspace. The data is SYNTHETIC
(edgeloop.devkit.scenarios.pumps): the champion (version 1) knew clean pumps only; after its deployment the pumps age
(drift). The labels come from a SIMULATED annotator that answers from the generator's ground truth, through
Label Studio's API. An iteration is two loop runs: the first collects the node's uploads and sends the
ones to label (the node marks low-confidence and a random few), people label, the second harvests,
retrains, gates, packages and rolls out. Iteration 2 does the same with the next field data, which the
node scored with version 2.

Reported (bench/results/agile_loop.json):
- drifted-holdout accuracy of versions 1, 2 and 3 (the workspace's fixed holdout) and of the oracle, a
  model trained with every field window of both iterations labelled; recovery = accuracy / oracle's;
- accuracy measured at the node: its uploaded decisions on each field set against the ground truth;
- labels sent / uploads; seconds per loop run and per step; the annotator's seconds (the stand-in for
  people, not counted in the iteration).
Drift variant: ageing (the only one models.synth.telemetry has). ``--seeds``: one run per world seed (the
workspace's seed; the field sets' seeds 1234 + s and 4321 + s, and 1234, 4321 for the historical seed 3), each
with its own oracle; the summary is per seed and the mean.
Targets (issue 6): one iteration recovers >= 95% of the oracle's drifted accuracy labelling <= 10% of
the uploads; an iteration <= 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import write_results

ADMIN = "ela_bench-admin-token-0123456789"  # noqa: S105 (a throwaway hub)


def scenario_params(scale: str) -> dict[str, Any]:
    """``project``: the pump model's settings in params.yaml (40 pumps x 72 h to train, field sets of 6 pumps
    x 168 h = 6,048 windows); ``tiny``: the end-to-end test's (864 windows)."""
    import copy

    from edgeloop.devkit.scenarios import pumps as sc

    if scale == "tiny":
        return copy.deepcopy(sc.PARAMS)
    return sc.project_params()


def field_seeds(seed: int) -> tuple[int, int]:
    return (1234, 4321) if seed == 3 else (1234 + seed, 4321 + seed)


def run(tmp: Path, label_share: float, params: dict[str, Any], loop: dict[str, Any] | None = None) -> dict[str, Any]:
    from edgeloop.devkit.scenarios import pumps as sc

    out = sc.run_loop(tmp, params=params, label_share=label_share, admin_token=ADMIN,
                      say=lambda msg: print(msg, flush=True), field_seeds=field_seeds(int(params["seed"])),
                      loop=loop)
    fields = out.pop("fields")
    ws = tmp / "ws"
    t = time.perf_counter()
    # the reference: every field window labelled; its weight chosen in its favour (1 or 2 copies; more
    # copies of thousands of rows only lower it)
    for name, sets in (("oracle_one_field_set", fields[:1]), ("oracle_all", fields)):
        tries = {r: sc.oracle_accuracy(ws, tmp / f"{name}-{r}", sets, {**params, "loop": {"labelled_repeat": r}})
                 for r in (1, 2)}
        best = max(tries, key=lambda r: tries[r]["drifted"])
        out[name] = {**tries[best], "labelled_repeat": best, "by_repeat": tries}
    out["oracle_s"] = round(time.perf_counter() - t, 1)
    return out


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    its = r["iterations"]
    oracle = r["oracle_all"]["drifted"]
    before = r["version_1"]["drifted"]
    return {
        "drifted_accuracy": {"before": before, "after_1": its[0]["candidate_drifted"],
                             "after_2": its[1]["candidate_drifted"], "oracle_all_drifted_data": oracle,
                             "oracle_first_field_set": r["oracle_one_field_set"]["drifted"]},
        "recovery_after_1": round(its[0]["candidate_drifted"] / oracle, 4),
        "gap_closed_after_1": round((its[0]["candidate_drifted"] - before) / (oracle - before), 4)
        if oracle > before else None,
        "clean_accuracy_after_1": {"champion": its[0]["champion_clean"], "candidate": its[0]["candidate_clean"],
                                   "gate_floor": round(its[0]["champion_clean"] - 0.01, 4)
                                   if its[0]["champion_clean"] is not None else None},
        "promoted_1": its[0]["promoted"], "why_1": its[0]["why"],
        "label_share_iteration_1": its[0]["label_share"],
        "iteration_wall_s": [it["iteration_s"] for it in its],
        "node_accuracy_by_version": {it["node_version"]: it["node_accuracy"] for it in its},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.agile_loop", description=__doc__.splitlines()[0])
    ap.add_argument("--label-share", type=float, default=0.05,
                    help="share of the uploads the node marks at random for labelling (besides low confidence)")
    ap.add_argument("--scale", choices=["project", "tiny"], default="project")
    ap.add_argument("--seeds", default="3", help="world seeds, comma separated (one full run each)")
    ap.add_argument("--random-share", type=float, default=None,
                    help="the loop's random_share (of the labelling budget, drawn stratified; the rest: hard examples)")
    args = ap.parse_args(argv)
    loop = {"random_share": args.random_share} if args.random_share is not None else {}
    runs: dict[str, Any] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        params = {**scenario_params(args.scale), "seed": seed}
        with tempfile.TemporaryDirectory(prefix="edgeloop-bench-loop-") as tmp:
            os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect-home")
            r = run(Path(tmp), args.label_share, params, loop)
            r["scale"] = args.scale
            r["params"] = params
            r["loop"] = loop
        s = summarise(r)
        runs[str(seed)] = {"summary": s, **r}
        d = s["drifted_accuracy"]
        print(f"agile loop (SYNTHETIC pumps, ageing, seed {seed}): drifted accuracy {d['before']:.3f} -> "
              f"{d['after_1']:.3f} (1 iteration) -> {d['after_2']:.3f} (2); oracle {d['oracle_all_drifted_data']:.3f}; "
              f"recovery {s['recovery_after_1']:.1%} with {s['label_share_iteration_1']:.1%} of the uploads labelled; "
              f"clean {s['clean_accuracy_after_1']}; {s['why_1']}; iterations {s['iteration_wall_s']} s", flush=True)
    rec = [r["summary"]["recovery_after_1"] for r in runs.values()]
    summary = {"variant": "ageing", "seeds": list(runs), "recovery_after_1_by_seed": dict(zip(runs, rec)),
               "recovery_after_1_mean": round(sum(rec) / len(rec), 4), "recovery_after_1_min": min(rec),
               "promoted_1_by_seed": {k: r["summary"]["promoted_1"] for k, r in runs.items()},
               "label_share_iteration_1_max": max(r["summary"]["label_share_iteration_1"] for r in runs.values())}
    write_results("agile_loop", {"note": "SYNTHETIC pump telemetry (edgeloop.devkit.scenarios.pumps); labels by a SIMULATED "
                                         "annotator from the generator's ground truth", "summary": summary,
                                 "runs": runs})
    ok = summary["recovery_after_1_min"] >= 0.95 and summary["label_share_iteration_1_max"] <= 0.10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
