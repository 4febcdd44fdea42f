"""One full iteration of the agile loop on the pump scenario, every part real: a Prefect server, a hub
process, Mosquitto, an edge node scoring SYNTHETIC drifted pump windows with the champion and uploading
its inferences, Label Studio (a SIMULATED annotator labels from the generator's ground truth), MLflow,
BentoML packaging into the hub's warehouse. The retrained model must beat the champion on the drifted
holdout without losing on the clean one, having labelled at most 10% of the uploads; the loop rolls it out to
the node's group through the hub (canary, then all), and the accuracy measured at the node on drifted data
rises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_runtime.node import Node, load_node_config
from edgeloop.devkit.scenarios import pumps as sc
from tests.kit.hub import ADMIN, HubProcess, wait_for
from tests.kit.mqtt import publisher

pytestmark = [pytest.mark.broker, pytest.mark.labelstudio, pytest.mark.timeout(900)]


def test_one_iteration_recovers_drifted_accuracy(prefect_api: str, label_studio: Any, mosquitto: Any,
                                                 tmp_path: Path) -> None:
    from edgeloop.devkit.annotator import simulated_annotator
    from flows import steps
    from flows.loop import agile_loop
    from models import tracking

    ws = tmp_path / "ws"
    sc.workspace(ws)
    X, y = sc.field_windows(tmp_path / "field", 1234)
    X2, y2 = sc.field_windows(tmp_path / "field-2", 4321)  # after the rollout: drifted windows never labelled
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = None
    try:
        admin = hub.admin()
        config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": ADMIN,
                  "label_studio_url": label_studio.url, "label_studio_token": label_studio.token,
                  "models": ["pump_anomaly"], "min_labels": 10, "keys_dir": str(tmp_path / "keys"),
                  "group": "pumps", "canary": 1, "watch_s": 1.0}
        # the champion reaches the node the way every version does: signed, from the hub's warehouse
        assert steps.package(steps.LoopConfig(**config), "pump_anomaly", "1")["packaged"] is True
        admin.put("/api/v1/models/pump_anomaly/deployments/group:pumps", {"version": "1"})
        token = admin.post("/api/v1/nodes", {"name": "edge-p", "group": "pumps"})["token"]
        node = Node(load_node_config(sc.write_node(tmp_path / "node", mosquitto.port, hub.url, token,
                                                   tmp_path / "keys")))
        node.start()
        wait_for(lambda: sc.serving(admin) == "1", 60, "the node to serve version 1")
        pub = publisher(mosquitto.port)
        truth = sc.send(pub, X, y, 1.7e9)
        wait_for(lambda: len(admin.all_uploads(kind="record")) >= len(X), 300, "every inference at the hub")
        records = admin.all_uploads(kind="record")
        uploads = {u["id"]: (u["device"], u["ts"]) for u in records}
        node_before = sc.accuracy_at_node(records, truth, "1")

        first = agile_loop(config)["models"]["pump_anomaly"]
        sent = first["label"]["sent"]
        assert 10 <= sent <= 0.10 * len(X), first["collect"]
        assert first["retrain"]["retrained"] is False  # nobody labelled yet: nothing to train on

        again = agile_loop(config)["models"]["pump_anomaly"]  # a re-run sends nothing twice
        assert again["label"]["sent"] == 0 and again["label"]["total_sent"] == sent

        made = simulated_annotator(label_studio.labelling(), first["label"]["project"],
                                   lambda data: sc.LABELS[truth[uploads[data["edgeloop_id"]]]])
        assert made == sent

        champion_before = tracking.version_info("pump_anomaly", "1", ws)["metrics"]
        second = agile_loop(config)["models"]["pump_anomaly"]
        assert second["rollout"]["rolled_out"] is True, second["rollout"]
        assert second["rollout"]["state"] == "done" and second["rollout"]["waiting"] == []
        wait_for(lambda: sc.serving(admin) == "2", 30, "the node to serve version 2")

        truth2 = sc.send(pub, X2, y2, 1.8e9)
        wait_for(lambda: len(admin.all_uploads(kind="record")) >= len(X) + len(X2), 300, "the new inferences")
        assert len(admin.all_uploads(kind="record")) == len(X) + len(X2)  # none lost, none twice, across the swap
        node_after = sc.accuracy_at_node([u for u in admin.all_uploads(kind="record") if u["ts"] >= 1.8e9], truth2, "2")
        assert node.dead_letters.total == 0
    finally:
        if node is not None:
            node.stop()
        hub.stop()
    assert second["harvest"]["new_labels"] == sent and second["harvest"]["problems"] == []
    assert second["retrain"]["retrained"] and second["retrain"]["candidate"] == "2"
    gate = second["gate"]
    print(f"agile loop (SYNTHETIC pumps): {sent} labels of {len(X)} uploads; drifted holdout accuracy "
          f"{gate['champion_drifted']:.3f} -> {gate['candidate_drifted']:.3f}, clean {gate['champion_clean']:.3f} "
          f"-> {gate['candidate_clean']:.3f}; at the node on drifted field data: version 1 {node_before:.3f}, "
          f"version 2 {node_after:.3f}; steps {second['times_s']}")
    assert gate["champion_drifted"] == pytest.approx(champion_before["drifted.accuracy"])
    assert gate["promoted"], gate
    assert gate["candidate_drifted"] > gate["champion_drifted"]
    assert second["package"]["packaged"] is True
    assert tracking.alias_version("pump_anomaly", "champion", ws) == "2"
    assert node_after > node_before + 0.05, (node_before, node_after)

