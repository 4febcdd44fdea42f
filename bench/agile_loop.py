"""The agile loop on the pump scenario: drifted accuracy before the loop, after 1 and 2 iterations, against
a model trained on all the drifted field data; labels spent; the wall time of an iteration.

    .venv/bin/python -m bench.agile_loop [--scale project|tiny] [--label-share 0.05]

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


def run(tmp: Path, label_share: float, params: dict[str, Any]) -> dict[str, Any]:
    from edgeloop.devkit.scenarios import pumps as sc

    out = sc.run_loop(tmp, params=params, label_share=label_share, admin_token=ADMIN,
                      say=lambda msg: print(msg, flush=True))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.agile_loop", description=__doc__.splitlines()[0])
    ap.add_argument("--label-share", type=float, default=0.05,
                    help="share of the uploads the node marks at random for labelling (besides low confidence)")
    ap.add_argument("--scale", choices=["project", "tiny"], default="project")
    args = ap.parse_args(argv)
    params = scenario_params(args.scale)
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-loop-") as tmp:
        os.environ.setdefault("PREFECT_HOME", str(Path(tmp) / "prefect-home"))
        r = run(Path(tmp), args.label_share, params)
        r["scale"] = args.scale
        r["params"] = params
    its = r["iterations"]
    oracle = r["oracle_all"]["drifted"]
    before = r["version_1"]["drifted"]
    summary = {
        "drifted_accuracy": {"before": before, "after_1": its[0]["candidate_drifted"],
                             "after_2": its[1]["candidate_drifted"], "oracle_all_drifted_data": oracle,
                             "oracle_first_field_set": r["oracle_one_field_set"]["drifted"]},
        "recovery_after_1": round(its[0]["candidate_drifted"] / oracle, 4),
        "gap_closed_after_1": round((its[0]["candidate_drifted"] - before) / (oracle - before), 4)
        if oracle > before else None,
        "label_share_iteration_1": its[0]["label_share"],
        "iteration_wall_s": [it["iteration_s"] for it in its],
        "node_accuracy_by_version": {it["node_version"]: it["node_accuracy"] for it in its},
    }
    print(f"agile loop (SYNTHETIC pumps): drifted accuracy {before:.3f} -> {summary['drifted_accuracy']['after_1']:.3f}"
          f" (1 iteration) -> {summary['drifted_accuracy']['after_2']:.3f} (2); oracle {oracle:.3f}; recovery "
          f"{summary['recovery_after_1']:.1%} with {summary['label_share_iteration_1']:.1%} of the uploads labelled; "
          f"iterations {summary['iteration_wall_s']} s")
    write_results("agile_loop", {"note": "SYNTHETIC pump telemetry (edgeloop.devkit.scenarios.pumps); labels by a SIMULATED "
                                         "annotator from the generator's ground truth", "summary": summary, **r})
    ok = summary["recovery_after_1"] >= 0.95 and summary["label_share_iteration_1"] <= 0.10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
