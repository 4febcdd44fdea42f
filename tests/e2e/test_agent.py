"""The node agent against a real hub: desired state reconciled live, and kept while the hub is away."""

from __future__ import annotations

import pytest

from edge_runtime.hubclient import HubError
from edge_runtime.node import Node, load_node_config
from tests.kit.hub import HubProcess, wait_for
from tests.kit.nodes import modbus_upload_node

HOT = {"name": "hot", "product": "pump", "steps": [{"device_input": {}}, {"filter": "temperature > 20"}]}
COLD = {"name": "cold", "product": "pump", "steps": [{"device_input": {}}, {"filter": "temperature < 20"}]}


@pytest.mark.broker
@pytest.mark.modbus
def test_agent_reconciles_without_disturbing_others(tmp_path, mosquitto, modbus_server):
    modbus_server.set_holding(0, [250, 100])  # 25.0 degC: the hot filter passes
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = node2 = None
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-r", "group": "line-1"})["token"]
        cfg = modbus_upload_node(tmp_path, "edge-r", broker_port=mosquitto.port, hub_url=hub.url, token=token,
                                 modbus_port=modbus_server.port, interval="50ms")
        node = Node(load_node_config(cfg))
        node.start()
        local = node.instances["all"]  # from node.yaml: must run undisturbed throughout

        admin.post("/api/v1/pipelines", HOT)
        admin.put("/api/v1/assignments/node:edge-r/hot", {"pipeline": "hot"})
        wait_for(lambda: "hot" in node.instances, 15, "the hot instance to start")
        hot1 = node.instances["hot"]
        wait_for(lambda: hot1.outputs > 5, 10, "hot to produce")

        admin.post("/api/v1/pipelines", COLD)
        admin.put("/api/v1/assignments/group:line-1/cold", {"pipeline": "cold", "devices": ["pump-0"]})
        wait_for(lambda: "cold" in node.instances, 15, "the group's cold instance to start")
        assert node.instances["hot"] is hot1 and node.instances["all"] is local
        assert node.instances["cold"].devices == frozenset({"pump-0"})
        cold1 = node.instances["cold"]

        admin.post("/api/v1/pipelines", {**HOT, "steps": [{"device_input": {}}, {"filter": "temperature > 21"}]})
        wait_for(lambda: node.instances.get("hot") not in (None, hot1), 15, "hot v2 to replace v1")
        assert node.instances["cold"] is cold1 and node.instances["all"] is local

        admin.put("/api/v1/assignments/node:edge-r/bad", {"pipeline": "cold", "devices": ["pump-9"]})
        errors = wait_for(lambda: admin.get("/api/v1/nodes/edge-r")["errors"], 15, "the bad instance reported")
        assert errors == [{"instance": "bad", "pipeline": "cold", "version": 1,
                           "error": "device 'pump-9' is not bound on this node"}]
        assert "bad" not in node.instances

        # one template, two instances with their own values; a value of the wrong kind is refused by the hub
        admin.post("/api/v1/pipelines", {"name": "limit", "product": "pump", "params": {"limit": 20},
                                         "steps": [{"device_input": {}}, {"filter": "temperature > ${limit}"}]})
        with pytest.raises(HubError) as err:
            admin.put("/api/v1/assignments/node:edge-r/warm", {"pipeline": "limit", "params": {"limit": "warm"}})
        assert err.value.status == 422 and "parameter 'limit': expected a number like its default 20, got 'warm'" \
            in err.value.detail, err.value.detail
        admin.put("/api/v1/assignments/node:edge-r/warm", {"pipeline": "limit", "params": {"limit": 30}})
        admin.put("/api/v1/assignments/node:edge-r/cool", {"pipeline": "limit", "params": {"limit": 24.5}})
        wait_for(lambda: {"warm", "cool"} <= set(node.instances), 15, "two instances of one template")
        assert node.instances["warm"].plan.steps[1].params == "temperature > 30"
        wait_for(lambda: node.instances["cool"].outputs > 5, 10, "cool (over 24.5) to pass the 25.0 degC readings")
        assert node.instances["warm"].outputs == 0  # 25.0 is not over 30
        for inst in ("warm", "cool"):
            admin.delete(f"/api/v1/assignments/node:edge-r/{inst}")

        admin.delete("/api/v1/assignments/group:line-1/cold")
        wait_for(lambda: "cold" not in node.instances, 15, "cold to stop")
        view = wait_for(lambda: (v := admin.get("/api/v1/nodes/edge-r"))["online"] and
                        {i["instance"] for i in v["instances"]} == {"all", "hot"} and v, 15, "the hub to see it")
        assert {i["instance"]: i["source"] for i in view["instances"]} == {"all": "local", "hot": "hub"}
        assert {i["instance"]: i.get("version") for i in view["instances"]} == {"all": None, "hot": 2}
        before = local.outputs
        wait_for(lambda: local.outputs > before + 5, 10, "the local instance to keep running")

        hub.stop()  # the hub goes away: the node runs on
        hot2 = node.instances["hot"]
        n0 = hot2.outputs
        wait_for(lambda: hot2.outputs > n0 + 10 and node.agent.hub_reachable is False, 20, "running without the hub")
        node.stop()
        node = None
        node2 = Node(load_node_config(cfg))  # a restart while the hub is still away: the cached desired state
        node2.start()
        assert set(node2.instances) == {"all", "hot"}
        wait_for(lambda: node2.instances["hot"].outputs > 5, 10, "the cached instance to run")
    finally:
        for n in (node, node2):
            if n is not None:
                n.stop()
        hub.stop()
