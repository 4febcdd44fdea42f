"""The cold start on REAL sensor data: NASA space shuttle sensor readings (UCI Statlog Shuttle as the ODDS
benchmark casts it, shipped in river 0.26.1's wheel on PyPI and fetched by pip at set-up: edgeloop.devkit.realdata)
replayed over MQTT as four sensor units of a product declared here, through a real node whose pipeline has no
model: it uploads its inputs. The agile loop runs from iteration zero: it sends a random 10% of the uploads to
Label Studio (a SIMULATED annotator answers from the dataset's own anomaly labels, which are real), harvests them
into the model's field data (DVC-versioned), and trains the first model from field data alone, its holdouts split
from those labels by time and by unit; then gates, packages and rolls it out to the node. Every part is real:
Prefect, a hub process, Mosquitto, Label Studio, MLflow, BentoML, DVC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.kit.hub import ADMIN, HubProcess, wait_for
from tests.kit.modelpkg import install_model

pytestmark = [pytest.mark.broker, pytest.mark.labelstudio, pytest.mark.timeout(900)]

MODEL = "shuttle_anomaly"
ROWS = 2000  # the file's first rows: 4 units x 500 readings, a second apart (the file's order)


def edgeloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "160"})


def test_a_first_model_from_real_field_data_alone(prefect_api: str, label_studio: Any, mosquitto: Any,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_runtime import jsonio
    from edge_runtime.modelkit import Predictor
    from edge_runtime.node import Node, load_node_config
    from edgeloop.devkit import nodes, realdata
    from edgeloop.devkit.annotator import simulated_annotator
    from flows import dvc as fdvc
    from flows import steps
    from flows.loop import agile_loop
    from models import plugins, tracking
    from models.common import binary_metrics
    from tests.kit.mqtt import publisher

    features, X, y = realdata.shuttle(ROWS)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    assert 0 < y.sum() < len(y) * 0.2  # the file's real anomalies are among them

    # a workspace under DVC with the model scaffolded into it: no data, no model yet
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text("seed: 0\nloop:\n  labelled_repeat: 1\n")
    install_model(tmp_path, ws, MODEL, "--kind", "tabular", "--features", ",".join(features), "--labels",
                  "normal,anomaly", "--uploads", "sensors", monkeypatch=monkeypatch)
    assert plugins.get(MODEL).features == features
    cfg = steps.LoopConfig(workspace=str(ws))
    for args in (("init", "--no-scm", "-q"), ("remote", "add", "-d", "local", "var/dvc-remote"),
                 ("config", "core.analytics", "false")):
        assert fdvc.run(cfg, *args).returncode == 0, args

    from edge_runtime.signing import init_keys

    init_keys(tmp_path / "keys")  # the loop signs what it packages with them; the node trusts their public half
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = None
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-s", "group": "shuttle"})["token"]
        node = Node(load_node_config(nodes.write_node(
            tmp_path / "node", "edge-s", broker_port=mosquitto.port,
            products=[{"name": "shuttle_unit", "properties": {f: {"type": "number"} for f in features}}],
            devices=[{"id": f"unit-{i}", "product": "shuttle_unit", "connector": "mqtt", "topic": f"shuttle/{i}",
                      "ts_field": "ts"} for i in range(4)],
            pipelines={"sensors": {"name": "sensors", "product": "shuttle_unit",
                                   "steps": [{"device_input": {}}, {"upload": {}}]}},
            models={"store": "models", "trusted_keys": [str(tmp_path / "keys" / "signing.pub")]},
            hub={"url": hub.url, "token": token, "heartbeat": 0.5}, outbox={"path": "outbox.db"})))
        node.start()
        assert node.connectors["mqtt"].link.wait_connected(30), "the node's MQTT devices did not subscribe"
        pub = publisher(mosquitto.port)
        truth: dict[tuple[str, float], int] = {}
        for i, row in enumerate(X):
            dev, ts = f"unit-{i % 4}", 1.7e9 + float(i // 4)
            truth[(dev, ts)] = int(y[i])
            pub.publish(f"shuttle/{i % 4}", jsonio.dumps({"ts": ts, **dict(zip(features, row.tolist()))}), qos=1)
        wait_for(lambda: len(admin.all_uploads(kind="record")) >= ROWS, 300, "every reading at the hub")
        uploads = {u["id"]: (u["device"], u["ts"]) for u in admin.all_uploads(kind="record")}
        assert len(uploads) == ROWS

        config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": ADMIN,
                  "label_studio_url": label_studio.url, "label_studio_token": label_studio.token,
                  "min_labels": 20, "keys_dir": str(tmp_path / "keys"), "group": "shuttle",
                  "canary": 1, "watch_s": 1.0}
        zero = agile_loop(config)["models"][MODEL]  # iteration zero: no model; its inputs go to labelling
        sent = zero["label"]["sent"]
        assert 0.09 * ROWS <= sent <= 0.10 * ROWS, zero["collect"]
        assert zero["retrain"]["retrained"] is False
        labelled = simulated_annotator(label_studio.labelling(), zero["label"]["project"],
                                       lambda data: ["normal", "anomaly"][truth[uploads[data["edgeloop_id"]]]])
        assert labelled == sent

        first = agile_loop(config)["models"][MODEL]
        print("iteration 1 steps (s):", first.get("times_s"), "iteration 0:", zero.get("times_s"))
        assert first["harvest"]["new_labels"] == sent and first["harvest"]["field"] == f"data/field/{MODEL}"
        assert (ws / "data" / "field" / f"{MODEL}.dvc").is_file()  # the field data is a DVC version
        assert first["retrain"]["retrained"] and first["retrain"]["candidate"] == "1", first["retrain"]
        assert first["gate"]["promoted"], first["gate"]  # the first model has no champion to beat
        assert first["package"]["packaged"] and first["rollout"]["rolled_out"], first["rollout"]
        wait_for(lambda: ((next(n for n in admin.get("/api/v1/nodes") if n["name"] == "edge-s").get("models") or {})
                          .get("models") or {}).get(MODEL, {}).get("active") == "1", 60, "the node to serve v1")
        assert node.dead_letters.total == 0
    finally:
        if node is not None:
            node.stop()
        hub.stop()

    info = tracking.version_info(MODEL, "1", ws)
    assert info["tags"]["data"].startswith("field data") and info["tags"]["labelled_data_version"]
    shown = edgeloop("data", "show", MODEL, "-w", str(ws))
    assert shown.returncode == 0 and "holdout_drifted" in shown.stdout, shown.stderr
    print(shown.stdout)
    # every replayed reading, scored by the model trained on 10% of them: against the file's own labels
    model = Predictor(ws / "artifacts" / MODEL)
    pred, _ = model(X.astype(np.float32))
    on_all = binary_metrics(y, model.proba(X.astype(np.float32))[:, 1], pred)
    m = info["metrics"]
    print(f"cold start on REAL shuttle sensors: {sent} of {ROWS} readings labelled ({int(y.sum())} anomalies in "
          f"all); holdouts from field labels: recent F1 {m['drifted.f1']:.3f}, held-out unit F1 "
          f"{m['clean.f1']:.3f}; on all {ROWS} readings: F1 {on_all['f1']:.3f}, precision {on_all['precision']:.3f},"
          f" recall {on_all['recall']:.3f}")
    assert on_all["f1"] >= 0.8, on_all
