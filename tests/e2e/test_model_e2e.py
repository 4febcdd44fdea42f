"""Train -> register -> package -> warehouse -> node -> inference, with every part real: MLflow (SQLite), the
`edgeloop model package` and `deploy` commands, a hub process, Mosquitto, a node whose agent installs the
verified bundle, and MQTT devices. The node's predictions must equal the training process's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.modelkit import Predictor
from edge_runtime.node import Node, load_node_config
from models.common import load_split
from models.pump_anomaly.features import FEATURES
from tests.kit.cli import edgeloop
from tests.kit.hub import ADMIN, HubProcess, wait_for
from tests.kit.mqtt import Collector, publisher
from tests.kit.nodes import write_node

pytestmark = [pytest.mark.broker]


def write_scoring_node(tmp: Path, *, broker: int, hub: str, token: str, keys: Path) -> Path:
    """Node edge-m scoring the windows of pumps 1 and 2 with the pump_anomaly model its agent installs."""
    return write_node(
        tmp, "edge-m", broker_port=broker,
        products=[{"name": "pump_window", "properties": {f: {"type": "number"} for f in FEATURES}}],
        devices=[{"id": f"pump-{i}", "product": "pump_window", "connector": "mqtt", "topic": f"plant/pumps/{i}/window",
                  "ts_field": "ts"} for i in (1, 2)],
        pipelines={"score": {"name": "score", "product": "pump_window", "steps": [
            {"device_input": {}},
            {"apply_model": {"model": "pump_anomaly", "inputs": FEATURES, "output": "anomaly",
                             "select": {"low_confidence": 0.7}}}]}},
        hub={"url": hub, "token": token, "heartbeat": 0.5},
        models={"store": "models", "trusted_keys": str(keys / "signing.pub")})


def test_train_register_package_warehouse_node_inference(workspace: Any, tmp_path: Path, mosquitto: Any) -> None:
    root = workspace.root
    # trained and registered: version 1 is champion (the first candidate) in the workspace's MLflow store
    shown = edgeloop("model", "show", "pump_anomaly", "champion", "--root", str(root))
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert "champion" in info["aliases"] and info["tags"]["data"].startswith("synthetic") and "clean.f1" in info["metrics"]
    version = info["version"]

    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = out = None
    try:
        packaged = edgeloop("model", "package", "pump_anomaly", "--version", "champion", "--root", str(root),
                            "--keys", str(workspace.keys), "--out", str(tmp_path / "bundles"),
                            "--hub", hub.url, "--token", ADMIN)
        assert packaged.returncode == 0, packaged.stderr + packaged.stdout
        assert "in the warehouse" in packaged.stdout
        admin = hub.admin()
        meta = admin.get(f"/api/v1/models/pump_anomaly/versions/{version}")
        assert meta["metrics"]["clean.f1"] == pytest.approx(info["metrics"]["clean.f1"], abs=1e-6)
        again = edgeloop("model", "package", "pump_anomaly", "--version", version, "--root", str(root),
                         "--keys", str(workspace.keys), "--out", str(tmp_path / "bundles2"),
                         "--hub", hub.url, "--token", ADMIN)
        assert again.returncode == 2 and "immutable" in again.stderr  # a rebuilt archive is another bundle

        token = admin.post("/api/v1/nodes", {"name": "edge-m", "group": "pumps"})["token"]
        cfg = write_scoring_node(tmp_path / "node", broker=mosquitto.port, hub=hub.url, token=token,
                                 keys=workspace.keys)
        node = Node(load_node_config(cfg))
        out = Collector(mosquitto.port, "edgeloop/edge-m/pipelines/score/out")
        node.start()
        assert node.models.get("pump_anomaly") is None
        deployed = edgeloop("model", "deploy", f"pump_anomaly:{version}", "--to", "group:pumps", "--hub", hub.url,
                            "--token", ADMIN)
        assert deployed.returncode == 0, deployed.stderr
        active = wait_for(lambda: node.models.get("pump_anomaly"), 60, "the node to install the model")
        assert active.version == version

        X = load_split(root / "data" / "prepared" / "pump_anomaly" / "holdout_drifted.npz")["X"][:300]
        want_pred, want_conf = Predictor(workspace.artifact("pump_anomaly"))(X)
        pub = publisher(mosquitto.port)
        for i, row in enumerate(X.tolist()):
            payload = {"ts": 1_800_000_000.0 + i, **dict(zip(FEATURES, row))}
            pub.publish(f"plant/pumps/{1 + i % 2}/window", json.dumps(payload), qos=1)
        pub.loop_stop()
        def all_out() -> Any:
            o = out.payloads()
            return o if len(o) >= len(X) else None

        got = wait_for(all_out, 60, "every prediction")
        by_ts = {int(o["ts"] - 1_800_000_000.0): o["values"] for o in got}
        assert sorted(by_ts) == list(range(len(X)))
        pred = np.array([by_ts[i]["anomaly"] for i in range(len(X))])
        conf = np.array([by_ts[i]["anomaly_confidence"] for i in range(len(X))])
        assert np.array_equal(pred, want_pred)
        assert np.allclose(conf, want_conf, rtol=0, atol=1e-9)  # JSON round trip of float64
        assert {v["anomaly_model"] for v in by_ts.values()} == {f"pump_anomaly:{version}"}
        low = {i for i in range(len(X)) if want_conf[i] < 0.7}
        assert {i for i, v in by_ts.items() if v.get("select") == "low_confidence"} == low

        # the hub sees what the node serves
        def reported() -> Any:
            served = admin.get("/api/v1/nodes/edge-m")["models"]  # the node's model store status
            r = served.get("models", {}).get("pump_anomaly")
            return r if r and r["active"] == version else None

        seen = wait_for(reported, 20, "the heartbeat")
        assert seen["installed"] == [version] and seen["error"] is None

        # a version signed with a key the node does not trust: refused, counted, reported; v1 keeps serving
        from edge_runtime.signing import init_keys
        from models import bento

        rogue = tmp_path / "rogue-keys"
        init_keys(rogue)
        bento.build("pump_anomaly", "66", workspace.artifact("pump_anomaly"))
        archive = bento.export("pump_anomaly", "66", tmp_path / "rogue")
        bento.upload(admin, archive, *bento.sign(archive, "pump_anomaly", "66", {}, rogue))
        assert edgeloop("model", "deploy", "pump_anomaly:66", "--to", "node:edge-m", "--hub", hub.url,
                        "--token", ADMIN).returncode == 0

        def refused() -> Any:
            status = admin.get("/api/v1/nodes/edge-m")["models"]
            return status if status.get("refused", {}).get("unknown key id") else None

        status = wait_for(refused, 30, "the refusal in a heartbeat")
        assert status["models"]["pump_anomaly"]["active"] == version
        assert "unknown key id" in status["models"]["pump_anomaly"]["error"]
        assert node.models.get("pump_anomaly").version == version and node.models.installed("pump_anomaly") == [
            version]
    finally:
        if node is not None:
            node.stop()
        if out is not None:
            out.close()
        hub.stop()


def test_containerize_needs_a_docker_engine(request: pytest.FixtureRequest) -> None:
    """`bentoml containerize <name>:<version>` builds an OCI image from the same Bento where a Docker (or
    BuildKit) engine exists. These machines have none, so this path is documented and skipped here."""
    import shutil

    if shutil.which("docker") is None:
        pytest.skip("no Docker engine on this machine: `bentoml containerize` cannot run (see README, Models)")
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("docker is installed but no engine answers")
    from models import bento

    ws = request.getfixturevalue("workspace")
    bento.build("pump_anomaly", "99", ws.artifact("pump_anomaly"))
    done = subprocess.run([sys.executable, "-m", "bentoml", "containerize", "pump_anomaly:99", "-t",
                           "edgeloop-pump-anomaly:99"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
