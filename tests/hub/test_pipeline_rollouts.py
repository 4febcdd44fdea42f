"""Pipeline rollouts against a real hub process and two real nodes (their agents, a real Mosquitto and a real
Modbus pump): a group's instances must be pinned to a version; a version the canary cannot start is rolled
back before the rest of the group sees it; a good one goes canary, then (promoted with the CLI) the whole
group, and the canary follows the group's assignment again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edge_runtime.hubclient import HubError
from edge_runtime.node import Node, load_node_config
from hub.rollout_cli import rollout_app
from tests.kit.hub import ADMIN, HubProcess, wait_for
from tests.kit.nodes import modbus_upload_node as write_node

HOT = {"name": "hot", "product": "pump", "steps": [{"device_input": {}}, {"filter": "temperature > 20"}]}


def hot(threshold: float, product: str = "pump") -> dict[str, Any]:
    return {**HOT, "product": product, "steps": [{"device_input": {}}, {"filter": f"temperature > {threshold}"}]}


def runs(node: Node) -> Any:
    """The hub version of the node's ``hot`` instance (None: not running)."""
    return node.agent.managed_versions.get("hot") if "hot" in node.instances else None


def by_node(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in r["nodes"]}


@pytest.mark.broker
@pytest.mark.modbus
@pytest.mark.timeout(180)
def test_pipeline_versions_roll_out_canary_first_and_a_bad_one_rolls_back(tmp_path: Path, mosquitto: Any,
                                                                          modbus_server: Any) -> None:
    modbus_server.set_holding(0, [250, 100])  # 25.0 degC
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    nodes: list[Node] = []
    try:
        admin = hub.admin()
        for name in ("edge-a", "edge-b"):
            token = admin.post("/api/v1/nodes", {"name": name, "group": "line"})["token"]
            (tmp_path / name).mkdir()
            cfg = write_node(tmp_path / name, name, broker_port=mosquitto.port, hub_url=hub.url, token=token,
                             modbus_port=modbus_server.port, devices=1, interval="50ms")
            nodes.append(Node(load_node_config(cfg)))
            nodes[-1].start()
        a, b = nodes
        admin.post("/api/v1/pipelines", hot(20))  # version 1
        admin.put("/api/v1/assignments/group:line/hot", {"pipeline": "hot", "devices": ["pump-0"]})
        admin.post("/api/v1/pipelines", hot(21))  # version 2: unpinned, every node takes it at once
        wait_for(lambda: runs(a) == runs(b) == 2, 20, "both nodes on version 2 (unpinned: the newest)")
        with pytest.raises(HubError) as refused:
            admin.post("/api/v1/rollouts", {"pipeline": "hot", "version": "1", "group": "line"})
        assert refused.value.status == 409 and "runs pipeline 'hot' unpinned" in refused.value.detail

        admin.put("/api/v1/assignments/group:line/hot", {"pipeline": "hot", "version": 1, "devices": ["pump-0"]})
        wait_for(lambda: runs(a) == runs(b) == 1, 20, "both nodes pinned to version 1")
        a_instance, b_instance = a.instances["hot"], b.instances["hot"]

        # version 3 names another product: the canary cannot start it, the group never gets it
        admin.post("/api/v1/pipelines", hot(22, product="meter"))
        r = admin.post("/api/v1/rollouts", {"pipeline": "hot", "version": "3", "group": "line", "canary": 1,
                                            "watch_s": 60})
        assert (r["kind"], r["pipeline"], r["model"], r["previous"], r["canaries"]) == ("pipeline", "hot", None, "1",
                                                                                        ["edge-a"])
        back = wait_for(lambda: (x := admin.get(f"/api/v1/rollouts/{r['id']}"))["state"] == "rolled_back" and x, 20,
                        "the bad version rolled back")
        assert "canary node edge-a failed: hot:3 instance hot: device 'pump-0' is a pump, the pipeline needs a meter" \
            in back["reason"], back["reason"]
        wait_for(lambda: runs(a) == 1, 20, "the canary back on version 1")
        assert a.instances["hot"] is a_instance  # the canary kept running version 1 while it refused 3
        assert b.instances["hot"] is b_instance  # edge-b was never touched
        assigned = [(x["target"], x["version"]) for x in admin.get("/api/v1/assignments")]
        assert assigned == [("group:line", 1)], assigned  # the canary's node-level assignment is gone

        # version 4 is good: canary first, the rest waits; promoted with the CLI; then the whole group
        admin.post("/api/v1/pipelines", hot(23))
        cli, common = CliRunner(), ["--hub", hub.url, "--token", ADMIN]
        res = cli.invoke(rollout_app, ["start", "--pipeline", "hot:4", "--to", "line", "--watch", "60s", *common])
        assert res.exit_code == 0 and "pipeline hot:4 to group line, canaries edge-a (previous 1)" in res.output, \
            res.output
        rid = admin.get("/api/v1/rollouts?pipeline=hot&limit=1")[0]["id"]
        canary = wait_for(lambda: (x := admin.get(f"/api/v1/rollouts/{rid}"))["state"] == "canary"
                          and by_node(x)["edge-a"]["status"] == "serving" and x, 20, "the canary to run version 4")
        assert by_node(canary)["edge-b"]["status"] == "pending" and runs(a) == 4 and runs(b) == 1
        res = cli.invoke(rollout_app, ["promote", str(rid), *common])
        assert res.exit_code == 0 and "rolling (pipeline hot:4 to group line)" in res.output, res.output
        done = wait_for(lambda: (x := admin.get(f"/api/v1/rollouts/{rid}"))["state"] == "done" and x, 20,
                        "every node on version 4")
        assert done["reason"] == "every node of the group serves 4" and runs(a) == runs(b) == 4
        assert [(x["target"], x["version"]) for x in admin.get("/api/v1/assignments")] == [("group:line", 4)]
        res = cli.invoke(rollout_app, ["history", "--pipeline", "hot", *common], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "pipeline hot" in res.output and "rolled_back" in res.output, res.output
        metrics = httpx.get(f"{hub.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text.splitlines()
        assert 'edgeloop_hub_rollouts{kind="pipeline",state="done"} 1' in metrics
        assert 'edgeloop_hub_rollouts{kind="pipeline",state="rolled_back"} 1' in metrics
        before = b.instances["hot"].outputs
        wait_for(lambda: b.instances["hot"].outputs > before + 3, 10, "version 4 to run on edge-b")
    finally:
        for n in nodes:
            n.stop()
        hub.stop()
