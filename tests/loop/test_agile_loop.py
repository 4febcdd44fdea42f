"""One full iteration of the agile loop on the pump scenario, every part real: a Prefect server, a hub
process, Mosquitto, an edge node scoring SYNTHETIC drifted pump windows with the champion and uploading
its inferences, Label Studio (a SIMULATED annotator labels from the generator's ground truth), MLflow,
BentoML packaging into the hub's warehouse. The retrained model must beat the champion on the drifted
holdout without losing on the clean one, having labelled at most 10% of the uploads. The loop signs with a key
the node does not trust yet: the node refuses the version, the rollout rolls back, and the Prefect run must
fail saying so, with the champion unchanged and every view saying the node serves version 1. Once the node
trusts the key, the rollout goes through the hub (canary, then all), the champion moves, and the accuracy
measured at the node on drifted data rises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.node import Node, load_node_config
from edge_runtime.signing import init_keys
from edgeloop.devkit.scenarios import pumps as sc
from tests.kit.cli import edgeloop_here
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
        init_keys(tmp_path / "keys-loop")  # the loop's key: the node does not trust it at first
        config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": ADMIN,
                  "label_studio_url": label_studio.url, "label_studio_token": label_studio.token,
                  "models": ["pump_anomaly"], "min_labels": 10, "keys_dir": str(tmp_path / "keys-loop"),
                  "group": "pumps", "canary": 1, "watch_s": 1.0}
        # the champion reaches the node the way every version does: signed, from the hub's warehouse
        assert steps.package(steps.LoopConfig(**{**config, "keys_dir": str(tmp_path / "keys")}), "pump_anomaly",
                             "1")["packaged"] is True
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
        refused = agile_loop(config, return_state=True)  # retrained, gated, packaged: the node refuses the key
        second = _refused_rollout_tells_the_truth(refused, ws, admin, hub.url)

        node.stop()  # the node now trusts the loop's key as well; the version rolls out as the loop would
        node_yaml = tmp_path / "node" / "node.yaml"
        doc = yaml.safe_load(node_yaml.read_text())
        doc["models"]["trusted_keys"].append(str(tmp_path / "keys-loop" / "signing.pub"))
        node_yaml.write_text(yaml.safe_dump(doc))
        node = Node(load_node_config(node_yaml))
        node.start()
        # the hub must hear from the restarted node first: the old one's last heartbeat names the refusal, and a
        # rollout started on it rolls back at once (the controller reads the newest heartbeat it has)
        wait_for(lambda: _model_status(admin).get("error") is None and sc.serving(admin) == "1", 60,
                 "the restarted node to report version 1 without the refusal")
        second["rollout"] = steps.rollout(steps.LoopConfig(**config), "pump_anomaly", "2")
        assert second["rollout"]["rolled_out"] is True, second["rollout"]
        assert second["rollout"]["state"] == "done" and second["rollout"]["waiting"] == []
        wait_for(lambda: sc.serving(admin) == "2", 30, "the node to serve version 2")
        assert tracking.alias_version("pump_anomaly", "serving-pumps", ws) == "2"

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



def _refused_rollout_tells_the_truth(state: Any, ws: Path, admin: Any, hub_url: str) -> dict[str, Any]:
    """The run whose rollout the node refused: failed with the reason, its rollout task failed once (a refusal
    is not retried), the report an artifact of the run, the champion unchanged, and the hub's rollout, the
    node list and `edgeloop model ls` saying the node serves version 1. Returns the run's report entry."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.state import LoopState
    from models import tracking

    assert state.is_failed(), state
    error = state.result(raise_on_failure=False)
    assert "rollout" in str(error) and "not a trusted key" in str(error) and "champion stays 1" in str(error), error
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        rollout = [t for t in tasks if t.name.startswith("roll out")]
        assert [(t.state.type.value, t.run_count) for t in rollout] == [("FAILED", 1)], rollout
        artifacts = client.read_artifacts()
    assert [a for a in artifacts if a.flow_run_id == run_id and a.key == "agile-loop-report"
            and "pump_anomaly" in (a.data or "")], [(a.key, a.flow_run_id) for a in artifacts]
    assert tracking.alias_version("pump_anomaly", "champion", ws) == "1"
    assert tracking.alias_version("pump_anomaly", "serving-pumps", ws) is None
    with LoopState(ws / "var" / "loop" / "state.db") as st:
        report = st.iterations()[-1]["report"]["models"]["pump_anomaly"]
    assert report["gate"]["promoted"] and report["package"]["packaged"], report
    rolled = admin.get("/api/v1/rollouts?model=pump_anomaly")[0]
    assert rolled["state"] == "rolled_back" and "not a trusted key" in rolled["reason"], rolled
    assert not [n for n in rolled["nodes"] if n["status"] == "serving"], rolled["nodes"]
    assert sc.serving(admin) == "1"
    listed = edgeloop_here("model", "ls", "--root", str(ws), "--hub", hub_url, "--token", ADMIN).stdout
    row = next(line for line in listed.splitlines() if "pump_anomaly" in line and "champion" in line)
    assert " 1 " in row and "edge-p" in row, listed
    return dict(report)


def _model_status(admin: Any) -> dict[str, Any]:
    """What edge-p's newest heartbeat says about pump_anomaly (active version, error)."""
    view = next((n for n in admin.get("/api/v1/nodes") if n["name"] == "edge-p"), {})
    return dict(((view.get("models") or {}).get("models") or {}).get("pump_anomaly") or {})
