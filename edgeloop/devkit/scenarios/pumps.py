"""The agile loop's pump scenario, SYNTHETIC throughout: shared by the end-to-end test, bench/agile_loop.py
and the demo.

- :func:`workspace`: a training workspace whose champion (version 1) has seen clean pumps only;
- :func:`field_windows`: what the pumps send after the deployment, drifted (ageing sensors), from another
  seed than the workspace's holdouts, with the generator's ground truth;
- :func:`write_node`: a node that scores each window with ``pump_anomaly`` (models come signed from the
  hub) and uploads every inference, marking low-confidence and a random few for labelling;
- :func:`send`, :func:`accuracy_at_node`, :func:`serving`: play the windows through the broker and read
  back what the node decided and which version it serves, from the hub;
- :func:`oracle_accuracy`: the reference for recovery, a model trained with every field window labelled.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.devkit import nodes

MODEL = "pump_anomaly"
LABELS = ["normal", "anomalous"]
PARAMS: dict[str, Any] = {
    "seed": 3,
    "pump_anomaly": {"train_pumps": 6, "train_hours": 24.0, "holdout_pumps": 3, "holdout_hours": 48.0,
                     "max_iter": 30},
    "loop": {"labelled_repeat": 4},
}


def features() -> list[str]:
    from models.pump_anomaly.features import FEATURES

    return list(FEATURES)


def workspace(root: Path, params: dict[str, Any] = PARAMS, *, track: bool = True) -> dict[str, Any]:
    """Generate, prepare, train and evaluate version 1 on clean SYNTHETIC pumps; returns its metrics."""
    import yaml

    from models import stages

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    m = stages.model_module(MODEL)
    m.generate(root / "data" / "raw", stages.model_params(MODEL, params), stages.seed_of(params))
    stages.prepare(root, params, [MODEL])
    stages.train(root, MODEL, params, track=track)
    return stages.evaluate(root, MODEL, track=track)


def field_windows(tmp: Path, seed: int, params: dict[str, Any] = PARAMS) -> tuple[np.ndarray, np.ndarray]:
    """Drifted windows (features, truth) from ``seed``: pick one the workspace does not use."""
    from models import stages
    from models.common import load_split

    m = stages.model_module(MODEL)
    p = stages.model_params(MODEL, params)
    m.generate(tmp / "raw", p, seed)
    m.prepare(tmp / "raw", tmp / "prepared", p)
    d = load_split(tmp / "prepared" / "holdout_drifted.npz")
    return d["X"], d["y"]


def write_node(folder: Path, broker: int, hub: str, token: str, keys: Path, *, name: str = "edge-p",
               label_share: float = 0.05, model: str = MODEL) -> Path:
    """node.yaml (+ products, devices, pipeline) for four pumps publishing feature windows, scored by ``model``
    (any table model over the pump window features)."""
    feats = features()
    return nodes.write_node(
        folder, name, broker_port=broker,
        products=[{"name": "pump_window", "properties": {f: {"type": "number"} for f in feats}}],
        devices=[{"id": f"pump-{i}", "product": "pump_window", "connector": "mqtt", "topic": f"plant/pumps/{i}/window",
                  "ts_field": "ts"} for i in range(4)],
        pipelines={"score": {"name": "score", "product": "pump_window", "steps": [
            {"device_input": {}},
            {"apply_model": {"model": model, "inputs": feats, "output": "anomaly",
                             "select": {"low_confidence": 0.8, "random": label_share, "seed": 1}}},
            {"upload": {}}]}},
        models={"store": "models", "trusted_keys": [str(keys / "signing.pub")]},
        hub={"url": hub, "token": token, "heartbeat": 0.5}, outbox={"path": "outbox.db"})


def send(pub: Any, X: np.ndarray, y: np.ndarray, t0: float) -> dict[tuple[str, float], int]:
    """Publish the windows as the four pumps would (QoS 1); returns the truth by (device, ts)."""
    from edge_runtime import jsonio

    feats = features()
    truth: dict[tuple[str, float], int] = {}
    for i, row in enumerate(X):
        dev, ts = f"pump-{i % 4}", t0 + 600.0 * (i // 4)
        truth[(dev, ts)] = int(y[i])
        pub.publish(f"plant/pumps/{dev.split('-')[1]}/window",
                    jsonio.dumps({"ts": ts, **{f: float(v) for f, v in zip(feats, row)}}), qos=1)
    return truth


def accuracy_at_node(uploads: list[dict[str, Any]], truth: dict[tuple[str, float], int], version: str) -> float:
    """The share of the node's uploaded inferences on ``truth``'s windows that match the ground truth.
    Raises when one was made by another version than ``version`` or when some are missing."""
    from edge_runtime.modelkit import model_outputs
    from hub.client import record_values

    hits = n = 0
    for u in uploads:
        key = (u["device"], u["ts"])
        if key not in truth:
            continue
        values = dict(record_values(u))
        outs = dict(model_outputs(values, MODEL))
        if outs != {"anomaly": version}:
            raise ValueError(f"upload {u.get('id')}: made by {outs}, expected anomaly by version {version}")
        got = values["anomaly"]
        n += 1
        hits += (LABELS.index(got) if isinstance(got, str) else int(got)) == truth[key]
    if n != len(truth):
        raise ValueError(f"{n} of {len(truth)} inferences at the hub")
    return hits / n


def serving(admin: Any, node: str = "edge-p", model: str = MODEL) -> str | None:
    """The version of ``model`` ``node`` reports in its heartbeats."""
    view = next((n for n in admin.get("/api/v1/nodes") if n["name"] == node), {})
    per = ((view.get("models") or {}).get("models") or {}).get(model) or {}
    return str(per["active"]) if per.get("active") is not None else None


def oracle_accuracy(root: Path, work: Path, windows: list[tuple[np.ndarray, np.ndarray]],
                    params: dict[str, Any] = PARAMS) -> dict[str, Any]:
    """Train on the workspace's train split plus EVERY field window labelled (what unlimited labelling
    would give), without MLflow, in a copy under ``work``; its clean and drifted holdout accuracy."""
    from models import stages

    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(root / "data" / "raw", work / "data" / "raw")
    folder = work / "data" / "labelled" / MODEL
    folder.mkdir(parents=True)
    for i, (X, y) in enumerate(windows):
        np.savez_compressed(folder / f"all-{i}.npz", X=X, y=y)
    stages.prepare(work, params, [MODEL])
    stages.train(work, MODEL, params, track=False)
    m = stages.evaluate(work, MODEL, track=False)
    return {"clean": m["clean"]["accuracy"], "drifted": m["drifted"]["accuracy"],
            "labels": int(sum(len(y) for _, y in windows))}


def project_params() -> dict[str, Any]:
    """The pump model's settings in params.yaml (40 pumps x 72 h to train, field sets of 6 pumps x 168 h =
    6,048 windows), for the benchmark and the demo; :data:`PARAMS` is the tests' tiny scale."""
    import yaml

    project = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())
    return {"seed": 3, "pump_anomaly": project["pump_anomaly"], "loop": project["loop"]}


def until(cond: Any, timeout: float, what: str) -> None:
    """Wait for ``cond()`` to hold, checking every 0.2 s; TimeoutError naming ``what`` after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def run_loop(tmp: Path, *, params: dict[str, Any] = PARAMS, label_share: float = 0.05, iterations: int = 2,
             admin_token: str, broker_port: int | None = None, hub: Any = None, measure_after: bool = False,
             say: Any = print, on_step: Any = None, field_seeds: tuple[int, ...] = (1234, 4321),
             loop: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pump scenario's agile loop with every part real, for bench/agile_loop.py and the demo.

    A workspace whose champion (version 1) knew clean pumps; a hub process and an edge node ``edge-p`` in
    group ``pumps`` serving version 1 (signed, from the hub's warehouse); Label Studio (its own venv), a
    temporary Prefect server (Prefect's harness: a fresh server and database, gone afterwards), MLflow and
    BentoML stores in the workspace, Mosquitto on a free port unless ``broker_port`` names one.
    Each iteration: the node scores a set of SYNTHETIC drifted field windows (uploading its inferences),
    the loop runs (collect, send to Label Studio), a SIMULATED annotator labels them from the generator's
    ground truth through Label Studio's API, the loop runs again (harvest, retrain, gate, package, roll out
    canary-first) and the node is waited on to serve the new version. ``hub``: a running hub process to use
    (its ``admin_token``) instead of starting one. ``measure_after``: then score another drifted field set
    with the version the node serves, for the accuracy at the node after the loop. ``on_step(name)`` is
    called as each part begins (the demo's progress). Returns the figures, and ``fields`` (the windows, for
    an oracle). ``field_seeds``: the field sets' seeds, one per iteration; ``loop``: more loop settings
    (:class:`flows.config.LoopConfig` fields, e.g. ``random_share``).
    """
    import contextlib
    import os
    import time

    import paho.mqtt.client as mqtt
    from prefect.testing.utilities import prefect_test_harness

    from edge_runtime.node import Node, load_node_config
    from edgeloop.devkit.annotator import simulated_annotator
    from edgeloop.devkit.broker import Mosquitto
    from edgeloop.devkit.hub import HubProcess
    from edgeloop.devkit.labelstudio import LabelStudioServer
    from flows import steps
    from flows.loop import agile_loop

    step = on_step or (lambda _name: None)
    t = time.perf_counter()
    step("training the champion (version 1) on clean pumps")
    ws = tmp / "ws"
    v1 = workspace(ws, params)
    fields = [field_windows(tmp / f"field-{i}", seed, params) for i, seed in enumerate(field_seeds[:iterations])]
    setup_s = time.perf_counter() - t
    step("starting Label Studio")
    ls = LabelStudioServer(tmp / "label-studio")
    t = time.perf_counter()
    ls.start()
    ls_start_s = time.perf_counter() - t
    out: dict[str, Any] = {"setup_s": round(setup_s, 1), "label_studio_start_s": round(ls_start_s, 1),
                           "label_studio_url": ls.url,
                           "version_1": {"clean": v1["clean"]["accuracy"], "drifted": v1["drifted"]["accuracy"]}}
    node = pub = None
    own_hub = hub is None
    try:
        with contextlib.ExitStack() as stack:
            if broker_port is None:
                broker_port = stack.enter_context(Mosquitto()).port
            step("starting a Prefect server")
            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            if own_hub:
                hub = HubProcess(tmp / "hub", admin_token=admin_token, broker_port=broker_port, heartbeat=0.5).start()
            admin = hub.admin()
            config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": admin_token, "label_studio_url": ls.url,
                      "label_studio_token": ls.token, "models": [MODEL], "min_labels": 10,
                      "keys_dir": str(tmp / "keys"), "group": "pumps", "canary": 1, "watch_s": 2.0, **(loop or {})}
            step("shipping version 1 to the node edge-p")
            steps.package(steps.LoopConfig(**config), MODEL, "1")
            admin.put(f"/api/v1/models/{MODEL}/deployments/group:pumps", {"version": "1"})
            token = admin.post("/api/v1/nodes", {"name": "edge-p", "group": "pumps"})["token"]
            node = Node(load_node_config(write_node(tmp / "node", broker_port, hub.url, token, tmp / "keys",
                                                    label_share=label_share)))
            node.start()
            until(lambda: serving(admin) == "1", 120, "the node to serve version 1")
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pump-field-{os.getpid()}")
            pub.connect("127.0.0.1", broker_port)
            pub.loop_start()
            runs = []
            seen = 0
            for i, (X, y) in enumerate(fields):
                version = str(i + 1)
                step(f"iteration {i + 1}: the pumps drift; edge-p scores {len(X)} windows with version {version}")
                truth = send(pub, X, y, 1.7e9 + 1e8 * i)
                want = seen + len(X)
                until(lambda: len(admin.all_uploads(kind="record", node="edge-p")) >= want, 300, "the inferences")  # noqa: B023
                records = [u for u in admin.all_uploads(kind="record", node="edge-p") if (u["device"], u["ts"]) in truth]
                at_node = accuracy_at_node(records, truth, version)
                seen += len(X)
                step(f"iteration {i + 1}: collect and send to Label Studio")
                t = time.perf_counter()
                first = agile_loop(config)["models"][MODEL]
                first_s = time.perf_counter() - t
                ids = {u["id"]: (u["device"], u["ts"]) for u in records}
                step(f"iteration {i + 1}: the SIMULATED annotator labels {first['label']['sent']} windows")
                t = time.perf_counter()
                made = simulated_annotator(ls.labelling(), first["label"]["project"],
                                           lambda data, truth=truth, ids=ids: LABELS[truth[ids[data["edgeloop_id"]]]])
                annotate_s = time.perf_counter() - t
                step(f"iteration {i + 1}: harvest, retrain, gate, package, roll out")
                t = time.perf_counter()
                second = agile_loop(config)["models"][MODEL]
                second_s = time.perf_counter() - t
                gate = second["gate"]
                if second.get("rollout", {}).get("rolled_out"):
                    new = second["retrain"]["candidate"]
                    until(lambda: serving(admin) == new, 60, "the new version")  # noqa: B023
                runs.append({
                    "field_windows": len(X), "node_version": version, "node_accuracy": round(at_node, 4),
                    "labels_sent": first["label"]["sent"], "labels_made": made,
                    "label_share": round(first["label"]["sent"] / len(X), 4),
                    "candidate": second["retrain"].get("candidate"), "promoted": gate.get("promoted"),
                    "why": gate.get("why"),
                    "candidate_drifted": gate.get("candidate_drifted"), "candidate_clean": gate.get("candidate_clean"),
                    "champion_drifted": gate.get("champion_drifted"), "champion_clean": gate.get("champion_clean"),
                    "rollout": {k: second.get("rollout", {}).get(k) for k in ("rolled_out", "state", "waiting", "rollout")},
                    "run_1_s": round(first_s, 1), "annotator_s": round(annotate_s, 1), "run_2_s": round(second_s, 1),
                    "iteration_s": round(first_s + second_s, 1), "steps_run_1_s": first.get("times_s"),
                    "steps_run_2_s": second.get("times_s")})
                say(f"iteration {i + 1}: {runs[-1]}")
            out["iterations"] = runs
            out["serving_after"] = serving(admin)
            if measure_after:
                # an A/B at the edge on the same new drifted data: edge-p serves what the loop rolled out, a
                # control node edge-q (group "control") still serves version 1; neither has seen these windows
                step("after the loop: a control node edge-q keeps version 1")
                admin.put(f"/api/v1/models/{MODEL}/deployments/group:control", {"version": "1"})
                qtoken = admin.post("/api/v1/nodes", {"name": "edge-q", "group": "control"})["token"]
                control = Node(load_node_config(write_node(tmp / "node-q", broker_port, hub.url, qtoken, tmp / "keys",
                                                           name="edge-q", label_share=label_share)))
                control.start()
                try:
                    until(lambda: serving(admin, "edge-q") == "1", 120, "edge-q to serve version 1")
                    X, y = field_windows(tmp / "field-after", 9876, params)
                    step(f"after the loop: edge-p (version {out['serving_after']}) and edge-q (version 1) score "
                         f"the same {len(X)} new drifted windows")
                    truth = send(pub, X, y, 1.9e9)
                    until(lambda: len(admin.all_uploads(kind="record", node="edge-p")) >= seen + len(X)
                          and len(admin.all_uploads(kind="record", node="edge-q")) >= len(X), 300,
                          "both nodes' inferences after the loop")
                    acc = {}
                    for name, version in (("edge-p", out["serving_after"]), ("edge-q", "1")):
                        records = [u for u in admin.all_uploads(kind="record", node=name) if (u["device"], u["ts"]) in truth]
                        acc[name] = round(accuracy_at_node(records, truth, version), 4)
                finally:
                    control.stop()
                out["after"] = {"field_windows": len(X), "node_version": out["serving_after"],
                                "node_accuracy": acc["edge-p"], "control_version": "1",
                                "control_accuracy": acc["edge-q"]}
            out["dead_letters_at_node"] = node.dead_letters.total
    finally:
        if pub is not None:
            pub.loop_stop()
            pub.disconnect()
        if node is not None:
            node.stop()
        if own_hub and hub is not None:
            hub.stop()
        ls.stop()
    out["fields"] = fields
    return out
