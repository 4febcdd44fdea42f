"""The agile loop on the sewage-dumping cameras: the intrusion model's drifted accuracy before the loop and
after one iteration, against a model trained with every drifted field frame labelled.

    .venv/bin/python -m bench.agile_loop_sewage [--variants mixed,night,rain,other_bucket] [--seeds 0,1,2]
                                                [--random-share 1.0]

SYNTHETIC throughout (edgeloop.devkit.scenarios.sewage): intrusion and activity trained on 4 day clips; the field
cameras show night and rain (one camera each, 600 frames). Every part is real: Mosquitto, a hub process, an
edge node running the app's pipeline (its models signed from the hub's warehouse) with one frame in two
uploading its drain crop as a JPEG with the intrusion decision, a Prefect server, Label Studio showing the
crops as images, a SIMULATED annotator answering from the generator's per-frame truth through Label Studio's
API, MLflow and BentoML stores. An iteration is two loop runs (collect and send; people label; harvest,
retrain, gate, package, roll out). Writes bench/results/agile_loop_sewage.json.

Drift variants (edgeloop.devkit.scenarios.sewage.DRIFTS): ``mixed`` (the default: a night and a rain camera, the
drifted holdout one clip of each), ``night``, ``rain``, ``other_bucket`` (two cameras of that variant, the drifted
holdout one clip of it). Seeds: the world's (the workspace's clips; the field cameras' seeds 77 + 2s, 78 + 2s).
One full run (its own oracle) per variant and seed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.agile_loop import ADMIN
from bench.common import write_results
from edgeloop.devkit.scenarios.pumps import until


def run(tmp: Path, variant: str = "mixed", seed: int = 0, loop: dict[str, Any] | None = None) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from edge_runtime.hubclient import HubClient
    from edge_runtime.node import Node, load_node_config
    from edgeloop.devkit.annotator import simulated_annotator
    from edgeloop.devkit.broker import Mosquitto
    from edgeloop.devkit.hub import HubProcess
    from edgeloop.devkit.labelstudio import LabelStudioServer
    from edgeloop.devkit.scenarios import sewage as ss
    from flows import steps
    from flows.loop import agile_loop

    t = time.perf_counter()
    ws = tmp / "ws"
    params = ss.variant_params(variant, seed)
    v1 = ss.workspace(ws, params)
    fields = {name: tmp / f"field-{name}" for name in ("a", "b")}
    truths = {name: ss.field_cameras(folder, ss.DRIFTS[variant], seed=s)
              for (name, folder), s in zip(fields.items(), (77 + 2 * seed, 78 + 2 * seed))}
    out: dict[str, Any] = {"setup_s": round(time.perf_counter() - t, 1),
                           "version_1": {"clean": v1["clean"]["accuracy"], "drifted": v1["drifted"]["accuracy"]}}
    ls = LabelStudioServer(tmp / "label-studio")
    ls.start()
    node = hub = None
    try:
        with Mosquitto() as broker, prefect_test_harness(server_startup_timeout=120):
            hub = HubProcess(tmp / "hub", admin_token=ADMIN, broker_port=broker.port, heartbeat=0.5).start()
            admin = hub.admin()
            config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": ADMIN, "label_studio_url": ls.url,
                      "label_studio_token": ls.token, "models": [ss.MODEL], "min_labels": 10,
                      "keys_dir": str(tmp / "keys"), "group": "cameras", "canary": 1, "watch_s": 2.0, **(loop or {})}
            for model in (ss.MODEL, "activity"):
                steps.package(steps.LoopConfig(**config), model, "1")
                admin.put(f"/api/v1/models/{model}/deployments/group:cameras", {"version": "1"})
            token = admin.post("/api/v1/nodes", {"name": "edge-cam", "group": "cameras"})["token"]

            def play(field: str, version: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
                """Run the node on a field set's cameras; its uploads and its accuracy there."""
                nonlocal node
                node = Node(load_node_config(ss.write_node(fields[field], broker.port, hub.url, token,
                                                           tmp / "keys")))
                before = len(admin.all_uploads(kind="record"))
                frames = sum(len(t["frames"]) for t in truths[field].values())
                # the cameras are files read as fast as the node goes: install the group's models first, the
                # way the agent does on its first heartbeat, so that no frame meets a node without them
                want = HubClient(hub.url, token).get("/api/v1/nodes/edge-cam/desired")["models"]
                node.models.reconcile(want)
                if (node.models.get(ss.MODEL) is None or node.models.get("activity") is None
                        or node.models.get(ss.MODEL).version != version):
                    raise RuntimeError(f"the node did not install intrusion {version}: {node.models.status()}")
                node.start()
                until(lambda: len(admin.all_uploads(kind="record")) >= before + frames // 2, 600,
                      f"the uploads of field set {field}")
                # records come over MQTT, their JPEGs over HTTP: let the node's outbox empty before stopping it
                until(lambda: node.outbox.stats()["rows"] == 0 and node.outbox.stats()["media"] == 0, 300,
                      "the node's outbox to drain")
                records = admin.all_uploads(kind="record")[before:]
                node.stop()
                node = None
                truth = ss.truth_by_frame(truths[field])
                return records, ss.accuracy_at_node(records, truth, version, set(truths[field]))

            records, at_node_1 = play("a", "1")
            truth_a = ss.truth_by_frame(truths["a"])
            ids = {u["id"]: (u["device"], int(u["record"]["values"]["frame_index"])) for u in records}
            t = time.perf_counter()
            first = agile_loop(config)["models"][ss.MODEL]
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            made = simulated_annotator(ls.labelling(), first["label"]["project"],
                                       lambda data: ss.LABELS[truth_a[ids[data["edgeloop_id"]]]])
            annotate_s = time.perf_counter() - t
            t = time.perf_counter()
            second = agile_loop(config)["models"][ss.MODEL]
            second_s = time.perf_counter() - t
            gate = second.get("gate") or {}
            new = (second.get("retrain") or {}).get("candidate")
            rolled = (second.get("rollout") or {}).get("rolled_out")
            at_node_2 = None
            if rolled:
                _, at_node_2 = play("b", new)
            out.update({
                "uploads_a": len(records), "node_accuracy_v1_field_a": at_node_1,
                "node_accuracy_new_field_b": at_node_2, "labels_sent": first["label"]["sent"],
                "labels_made": made, "label_share": round(first["label"]["sent"] / max(len(records), 1), 4),
                "harvest": {k: second["harvest"].get(k) for k in ("new_labels", "problems", "positives")},
                "candidate": new, "gate": gate, "rollout": second.get("rollout"),
                "run_1_s": round(first_s, 1), "annotator_s": round(annotate_s, 1), "run_2_s": round(second_s, 1),
                "iteration_s": round(first_s + second_s, 1), "steps_run_1_s": first.get("times_s"),
                "steps_run_2_s": second.get("times_s")})
    finally:
        if node is not None:
            node.stop()
        if hub is not None:
            hub.stop()
        ls.stop()
    t = time.perf_counter()
    out["oracle_field_a"] = ss.oracle_accuracy(ws, tmp / "oracle", [fields["a"]], params)
    out["oracle_s"] = round(time.perf_counter() - t, 1)
    return out


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    gate = r.get("gate") or {}
    before, after = r["version_1"]["drifted"], gate.get("candidate_drifted")
    oracle = r["oracle_field_a"]["drifted"]
    return {"drifted_accuracy": {"before": before, "after_1": after, "oracle_field_a": oracle},
            "recovery_after_1": round(after / oracle, 4) if after is not None else None,
            "clean_accuracy": {"champion": gate.get("champion_clean"), "candidate": gate.get("candidate_clean"),
                               "oracle": r["oracle_field_a"]["clean"],
                               "gate_floor": round(gate["champion_clean"] - 0.01, 4)
                               if gate.get("champion_clean") is not None else None},
            "promoted": gate.get("promoted"), "why": gate.get("why"), "label_share": r.get("label_share"),
            "iteration_wall_s": r.get("iteration_s")}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from edgeloop.devkit.scenarios.sewage import DRIFTS

    ap = argparse.ArgumentParser(prog="python -m bench.agile_loop_sewage", description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="mixed", help=f"comma separated, of {', '.join(DRIFTS)}")
    ap.add_argument("--seeds", default="0", help="world seeds, comma separated")
    ap.add_argument("--random-share", type=float, default=None,
                    help="the loop's random_share (of the labelling budget, drawn stratified; the rest: hard examples)")
    args = ap.parse_args(argv)
    loop = {"random_share": args.random_share} if args.random_share is not None else {}
    runs: dict[str, Any] = {}
    for variant in args.variants.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            with tempfile.TemporaryDirectory(prefix="edgeloop-bench-sewage-loop-") as tmp:
                os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect-home")
                r = run(Path(tmp), variant, seed, loop)
            s = summarise(r)
            runs[f"{variant}/{seed}"] = {"variant": variant, "seed": seed, "loop": loop, "summary": s, **r}
            d = s["drifted_accuracy"]
            print(f"agile loop (SYNTHETIC cameras, intrusion, {variant}, seed {seed}): drifted accuracy "
                  f"{d['before']:.3f} -> {d['after_1']} after 1 iteration ({r.get('labels_sent')} labels, "
                  f"{r.get('label_share', 0):.1%} of the uploads); oracle {d['oracle_field_a']:.3f}; clean "
                  f"{s['clean_accuracy']}; gate: {s['why']}; iteration {r.get('iteration_s')} s", flush=True)
    rec = {k: r["summary"]["recovery_after_1"] for k, r in runs.items()}
    summary: dict[str, Any] = {"recovery_after_1": rec, "promoted": {k: r["summary"]["promoted"] for k, r in runs.items()},
               "recovery_after_1_min": min((v for v in rec.values() if v is not None), default=None),
               "label_share_max": max(r["summary"]["label_share"] or 0 for r in runs.values())}
    write_results("agile_loop_sewage", {"note": "SYNTHETIC street-camera clips (edgeloop.devkit.scenarios.sewage); labels by a "
                                                "SIMULATED annotator from the generator's per-frame truth",
                                        "summary": summary, "runs": runs})
    ok = all(v is not None and v >= 0.95 for v in rec.values()) and all(summary["promoted"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
