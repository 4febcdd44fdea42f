"""OPC UA devices on a real node against a real asyncua server started by the test: data-change
subscriptions (and a server that restarts), reads on an interval, writes with the node's own data type,
method calls for product services, and the failures: an unknown node id, a refused login, an unreachable
server that delays no other."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_runtime.devices.catalog import load_catalog
from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.ports import free_port
from edge_runtime.testing import wait_for
from tests.kit.nodes import dead_letter_reasons, write_catalog, write_node
from tests.kit.opcua import OpcuaServer

pytestmark = pytest.mark.broker

PRODUCTS = [{"name": "pump",
             "properties": {"temperature": {"type": "number", "min": -40, "max": 200},
                            "running": {"type": "boolean"}, "speed": {"type": "integer"}},
             "services": {"stop": {}, "set_speed": {"args": {"rpm": {"type": "integer"}}}}}]


def pump(n: int, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"pump-{n}", "product": "pump", "connector": "opcua", "endpoint": endpoint,
            "nodes": {"temperature": f"ns=2;s=Pump{n}.Temperature", "running": f"ns=2;s=Pump{n}.Running"},
            "interval": "50ms", **extra}


def write(tmp: Path, broker: int, devices: list[dict[str, Any]], steps: list[Any] | None = None) -> Path:
    """Node edge-o with the pumps ``devices``, running ``steps`` (default: their readings) as instance all."""
    return write_node(tmp, "edge-o", broker_port=broker, products=PRODUCTS, devices=devices, pipelines={
        "all": {"name": "all", "product": "pump", "steps": steps or [{"device_input": {}}]}})


@pytest.fixture
def plc() -> Iterator[OpcuaServer]:
    s = OpcuaServer().start()
    yield s
    s.close()


def temps(node: Node, device: str) -> list[float]:
    return [r["values"]["temperature"] for r in node.store.query(devices=[device]) if "temperature" in r["values"]]


def test_subscribed_values_arrive_and_the_subscription_comes_back_after_a_server_restart(
        tmp_path: Path, mosquitto: Any, plc: OpcuaServer) -> None:
    node = Node(load_node_config(write(tmp_path, mosquitto.port, [pump(1, plc.endpoint), pump(2, plc.endpoint)])))
    node.start()
    try:
        wait_for(lambda: temps(node, "pump-1") == [20.0] and temps(node, "pump-2") == [20.0],
                 what="the initial values of both pumps")
        for v in (21.5, 22.5, 23.5):
            plc.set("Pump1.Temperature", v)
            wait_for(lambda v=v: temps(node, "pump-1")[-1] == v, what=f"temperature {v}")
        assert temps(node, "pump-1") == [20.0, 21.5, 22.5, 23.5]
        plc.set("Pump2.Running", False)
        wait_for(lambda: any(r["values"].get("running") is False for r in node.store.query(devices=["pump-2"])),
                 what="pump-2 stopping")
        # a value the product refuses is a dead letter naming the node; the subscription goes on
        plc.set("Pump1.Temperature", 500.0)
        wait_for(lambda: any("Pump1.Temperature" in r and "outside" in r for r in dead_letter_reasons(node)),
                 what="the refused value")
        (ep,) = node.connectors["opcua"].endpoints.values()
        assert ep.connected and ep.reconnects == 0
        # the server restarts on the same port: the node notices, reconnects and subscribes again
        plc.stop()
        wait_for(lambda: not ep.connected, timeout=15, what="the lost connection noticed")
        plc.start()
        wait_for(lambda: ep.connected, timeout=30, what="the node connected again")
        plc.set("Pump1.Temperature", 30.0)
        wait_for(lambda: temps(node, "pump-1")[-1] == 30.0, timeout=15, what="a value after the restart")
        st = node.stats()["opcua"][0]
        assert st["reconnects"] >= 1 and st["errors"] >= 2 and st["accepted"] >= 6
        text = node.metrics_text()
        assert f'edgeloop_node_connector_connected{{node="edge-o",connector="opcua",source="{plc.endpoint}"}} 1' in text
        assert f'edgeloop_node_connector_accepted_total{{node="edge-o",connector="opcua",source="{plc.endpoint}"}}' in text
    finally:
        node.stop()


def test_polled_reads_writes_and_method_calls(tmp_path: Path, mosquitto: Any, plc: OpcuaServer) -> None:
    dev = pump(1, plc.endpoint, mode="poll", interval="100ms",
               services={"stop": {"object": "ns=2;s=Pump1", "method": "ns=2;s=Pump1.Stop"},
                         "set_speed": {"object": "ns=2;s=Pump1", "method": "ns=2;s=Pump1.SetSpeed", "args": ["$rpm"]}})
    dev["nodes"]["speed"] = "ns=2;s=Pump1.Speed"
    steps = [{"device_input": {}}, {"filter": "temperature > 80"},
             {"device_output": {"service": "set_speed", "args": {"rpm": "1200"}}},
             {"device_output": {"service": "stop"}},
             {"device_output": {"set": {"speed": "7"}}}]
    node = Node(load_node_config(write(tmp_path, mosquitto.port, [dev], steps)))
    node.start()
    try:
        wait_for(lambda: len(temps(node, "pump-1")) >= 5, timeout=10, what="five polled reads")
        first = node.store.query(devices=["pump-1"])[0]["values"]
        assert first == {"temperature": 20.0, "running": True, "speed": 0}
        assert plc.calls == []
        plc.set("Pump1.Temperature", 95.0)
        wait_for(lambda: len(plc.calls) >= 2 and plc.get("Pump1.Speed") == 7, what="the methods called, the write")
        assert plc.calls[:2] == [("Pump1.SetSpeed", (1200,)), ("Pump1.Stop", ())]
        # the write kept the node's data type (Int32), which the next polled read shows
        wait_for(lambda: node.store.query(devices=["pump-1"])[-1]["values"].get("speed") == 7, what="speed 7 read back")
    finally:
        node.stop()


def test_unknown_nodes_refused_logins_and_an_unreachable_server_are_reported_and_delay_no_other(
        tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch, plc: OpcuaServer) -> None:
    locked = OpcuaServer(users={"operator": "right"}, pumps=1).start()
    monkeypatch.setenv("PLC_USER", "operator")
    monkeypatch.setenv("PLC_PASSWORD", "wrong")
    bad_node = pump(1, plc.endpoint)
    bad_node["nodes"]["temperature"] = "ns=2;s=Pump1.NoSuchThing"
    devices = [bad_node, pump(2, plc.endpoint, mode="poll"),
               pump(1, locked.endpoint, id="locked-1", username_env="PLC_USER", password_env="PLC_PASSWORD"),
               pump(1, f"opc.tcp://127.0.0.1:{free_port()}/none", id="gone-1", timeout="1s")]
    devices[2]["id"], devices[3]["id"] = "locked-1", "gone-1"
    node = Node(load_node_config(write(tmp_path, mosquitto.port, devices)))
    node.start()
    try:
        # the healthy device keeps its pace while the others fail
        wait_for(lambda: len(temps(node, "pump-2")) >= 10, timeout=10, what="ten reads of the healthy pump")
        wait_for(lambda: any("NoSuchThing" in r and "BadNodeIdUnknown" in r for r in dead_letter_reasons(node)),
                 what="the unknown node id named")
        wait_for(lambda: any(r.startswith("the server refused the session") for r in dead_letter_reasons(node)),
                 timeout=15, what="the refused login")
        wait_for(lambda: any(r.startswith("the server is unreachable") for r in dead_letter_reasons(node)),
                 timeout=15, what="the unreachable server")
        by_url = {s["endpoint"]: s for s in node.stats()["opcua"]}
        assert by_url[locked.endpoint]["accepted"] == 0 and not by_url[locked.endpoint]["connected"]
        assert "wrong" not in str(node.stats()["opcua"])  # the password never shows
        # pump-1's running node still arrives although its temperature node is unknown
        assert any(r["values"].get("running") is True for r in node.store.query(devices=["pump-1"]))
    finally:
        node.stop()
        locked.close()


def test_a_secure_only_server_refuses_a_plain_session_and_takes_a_signed_and_encrypted_one(
        tmp_path: Path, mosquitto: Any) -> None:
    import asyncio

    from tests.kit.opcua import make_certificate

    keys = tmp_path / "pki"
    keys.mkdir()
    secure = OpcuaServer(pumps=1, secure_dir=keys).start()
    asyncio.run(make_certificate(keys, "client"))
    security = f"Basic256Sha256,SignAndEncrypt,{keys / 'client-cert.der'},{keys / 'client-key.pem'}"
    devices = [pump(1, secure.endpoint, id="plain-1"), pump(1, secure.endpoint, id="sealed-1", security=security)]
    for d, name in zip(devices, ("plain-1", "sealed-1")):
        d["id"] = name
    node = Node(load_node_config(write(tmp_path, mosquitto.port, devices)))
    node.start()
    try:
        wait_for(lambda: temps(node, "sealed-1") == [20.0], 30, "a value over the encrypted session")
        secure.set("Pump1.Temperature", 41.0)
        wait_for(lambda: temps(node, "sealed-1")[-1] == 41.0, 15, "a change over the encrypted session")
        plain = next(s for s in node.stats()["opcua"] if s["devices"] == ["plain-1"])
        wait_for(lambda: plain["errors"] >= 1 or next(
            s for s in node.stats()["opcua"] if s["devices"] == ["plain-1"])["errors"] >= 1, 15, "the refusal")
        plain = next(s for s in node.stats()["opcua"] if s["devices"] == ["plain-1"])
        assert not plain["connected"] and plain["accepted"] == 0, plain
        assert plain["last_error"].startswith("the server offers no endpoint with security None"), plain
        assert temps(node, "plain-1") == []
    finally:
        node.stop()
        secure.close()


@pytest.mark.parametrize(("change", "field"), [
    ({"endpoint": "tcp://plc:4840"}, "endpoint"),
    ({"nodes": {"temperature": "Pump1.Temperature"}}, "nodes.temperature"),
    ({"nodes": {"pressure": "ns=2;s=P"}}, "nodes.pressure"),
    ({"mode": "stream"}, "mode"),
    ({"password_env": "X"}, "password_env"),
    ({"services": {"stop": {"method": "ns=2;s=Pump1.Stop"}}}, "services.stop.object"),
    ({"services": {"stop": {"object": "ns=2;s=P", "method": "Stop"}}}, "services.stop.method"),
    ({"services": {"set_speed": {"object": "ns=2;s=P", "method": "ns=2;s=S", "args": ["$speed"]}}},
     "services.set_speed"),
])
def test_bad_opcua_bindings_are_refused_naming_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    products, devices = write_catalog(tmp_path, PRODUCTS, [{**pump(1, "opc.tcp://plc:4840"), **change}])
    with pytest.raises(SpecError) as err:
        load_catalog([products], [devices])
    assert err.value.field == field, str(err.value)
    assert "devices.yaml" in str(err.value)
