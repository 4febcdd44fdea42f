"""CoAP devices on a real node against real aiocoap devices started by the test: observe (and a device that
restarts), poll (garbage, error codes, a slow device that delays no other), push to the node's resource
(tokens, refusals), and product services and ``set`` carried out as CoAP requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.testing import wait_for
from tests.kit.coap import CoapDevice, free_udp_port, request
from tests.kit.nodes import dead_letter_reasons, write_catalog, write_node

pytestmark = pytest.mark.broker

PRODUCTS = [{"name": "meter",
             "properties": {"power": {"type": "number", "min": 0, "max": 1000}, "on": {"type": "boolean"}},
             "services": {"stop": {}, "set_level": {"args": {"level": {"type": "integer"}}}}}]


def write(tmp: Path, broker: int, devices: list[dict[str, Any]], steps: list[Any] | None = None, **extra: Any) -> Path:
    """Node edge-c with the meters ``devices``, running ``steps`` (default: their readings) as instance all."""
    return write_node(tmp, "edge-c", broker_port=broker, products=PRODUCTS, devices=devices, pipelines={
        "all": {"name": "all", "product": "meter", "steps": steps or [{"device_input": {}}]}}, **extra)


@pytest.fixture
def device() -> Iterator[CoapDevice]:
    d = CoapDevice().start()
    yield d
    d.close()


def powers(node: Node, device: str) -> list[float]:
    return [r["values"]["power"] for r in node.store.query(devices=[device])]


def test_an_observed_device_notifies_and_is_observed_again_after_a_restart(tmp_path: Path, mosquitto: Any,
                                                                         device: CoapDevice) -> None:
    cfg = write(tmp_path, mosquitto.port, [{"id": "c1", "product": "meter", "connector": "coap",
                                            "uri": f"coap://127.0.0.1:{device.port}/sensors/power",
                                            "mapping": {"power": "p"}, "reobserve": "1s"}])
    node = Node(load_node_config(cfg))
    node.start()
    try:
        wait_for(lambda: device.observers() == 1, what="the node observing the device")
        wait_for(lambda: powers(node, "c1") == [1.5], what="the first answer of the observation")
        for i in range(2, 6):
            device.notify(json.dumps({"p": float(i)}).encode())
            wait_for(lambda i=i: len(powers(node, "c1")) == i, what=f"notification {i}")
        assert powers(node, "c1") == [1.5, 2.0, 3.0, 4.0, 5.0]
        # a notification the product refuses is a dead letter; the observation goes on
        device.notify(b'{"p": 5000}')
        wait_for(lambda: any("power" in r and "outside" in r for r in dead_letter_reasons(node)),
                 what="the refused notification")
        # the device restarts on the same port: it has forgotten its observers; the node registers again
        device.stop()
        device.start()
        assert device.observers() == 0
        wait_for(lambda: device.observers() == 1, timeout=15, what="the node observing the restarted device")
        device.notify(b'{"p": 7.0}')
        wait_for(lambda: powers(node, "c1")[-1] == 7.0, what="a notification after the restart")
        st = node.stats()["coap"]["devices"]["c1"]
        assert st["mode"] == "observe" and st["accepted"] >= 6 and st["errors"] >= 1
    finally:
        node.stop()


def test_polled_devices_count_garbage_and_errors_and_a_slow_one_delays_no_other(tmp_path: Path, mosquitto: Any,
                                                                              device: CoapDevice) -> None:
    import aiocoap

    silent = free_udp_port()  # nothing answers there
    slow = CoapDevice().start()
    slow.slow_s = 30
    cfg = write(tmp_path, mosquitto.port, [
        {"id": "fast", "product": "meter", "connector": "coap", "mode": "poll", "interval": "100ms",
         "uri": f"coap://127.0.0.1:{device.port}/sensors/power", "mapping": {"power": "p"}},
        {"id": "slow", "product": "meter", "connector": "coap", "mode": "poll", "interval": "100ms", "timeout": "1s",
         "uri": f"coap://127.0.0.1:{slow.port}/sensors/slow", "mapping": {"power": "p"}},
        {"id": "gone", "product": "meter", "connector": "coap", "mode": "poll", "interval": "100ms", "timeout": "1s",
         "uri": f"coap://127.0.0.1:{silent}/sensors/power", "mapping": {"power": "p"}}])
    node = Node(load_node_config(cfg))
    node.start()
    try:
        # the fast device is polled every 100 ms while the others time out after 1 s
        wait_for(lambda: len(powers(node, "fast")) >= 15, timeout=5, what="15 polls of the fast device in 5 s")
        device.body = b"{not json"
        wait_for(lambda: any(r.startswith("malformed JSON") for r in dead_letter_reasons(node)),
                 what="garbage as a dead letter")
        device.code = aiocoap.NOT_FOUND
        wait_for(lambda: any("answered 4.04 Not Found" in r for r in dead_letter_reasons(node)), what="an error code")
        wait_for(lambda: sum("unreachable" in r for r in dead_letter_reasons(node)) >= 2, timeout=10,
                 what="the slow and the silent devices reported")
        st = node.stats()["coap"]["devices"]
        assert st["slow"]["errors"] >= 1 and st["gone"]["errors"] >= 1 and "unreachable" in st["gone"]["last_error"]
        assert st["slow"]["accepted"] == 0 and st["gone"]["accepted"] == 0
        # the fast device recovers at once
        device.code, device.body = None, b'{"p": 42.0}'
        wait_for(lambda: powers(node, "fast")[-1] == 42.0, what="the fast device answering again")
    finally:
        node.stop()
        slow.close()


@pytest.fixture
def pushed(tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setenv("NODE_COAP_TOKEN", "node-secret")
    monkeypatch.setenv("C2_TOKEN", "c2-secret")
    cfg = write(tmp_path, mosquitto.port, [
        {"id": "c1", "product": "meter", "connector": "coap", "mapping": {"power": "p", "on": "on"}, "ts_field": "t"},
        {"id": "c2", "product": "meter", "connector": "coap", "mode": "push", "token_env": "C2_TOKEN"}],
        coap={"port": free_udp_port(), "token_env": "NODE_COAP_TOKEN"})
    node = Node(load_node_config(cfg))
    node.start()
    yield node
    node.stop()


def test_pushed_readings_need_a_valid_token_and_bad_ones_are_refused_with_the_reason(pushed: Node) -> None:
    node = pushed
    base = f"coap://127.0.0.1:{node.connectors['coap'].port}/devices"

    def post(device: str, body: Any, token: str | None, content_format: int | None = 50) -> tuple[str, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request("POST", f"{base}/{device}/telemetry" + (f"?token={token}" if token else ""), data,
                       content_format)

    assert post("c1", {"p": 12.5, "on": True, "t": 1.8e9}, "node-secret")[0] == "2.04 Changed"
    assert post("c1", [{"p": 1, "t": 1.8e9 + i} for i in range(1, 4)], "node-secret")[0] == "2.04 Changed"
    assert post("c2", {"power": 3.0}, "c2-secret")[0] == "2.04 Changed"
    assert post("c1", {"p": 1, "t": 1.8e9}, None)[0] == "4.01 Unauthorized"
    assert post("c1", {"p": 1, "t": 1.8e9}, "c2-secret")[0] == "4.01 Unauthorized"
    assert post("c2", {"power": 1}, "node-secret")[0] == "4.01 Unauthorized"
    assert post("ghost", {"p": 1}, "node-secret")[0] == "4.04 Not Found"
    code, why = post("c1", [{"p": 2, "t": 1.8e9}, {"p": 5000, "t": 1.8e9}], "node-secret")
    assert code == "4.00 Bad Request" and why.startswith(b"[1]: ") and b"power" in why
    assert post("c1", b"{not json", "node-secret")[0] == "4.00 Bad Request"
    assert post("c1", b"<p>1</p>", "node-secret", content_format=41)[0] == "4.15 Unsupported Content Format"
    wait_for(lambda: node.bus.records_in == 5, what="the 5 accepted readings on the bus")
    assert [r["values"] for r in node.store.query(devices=["c1"])] == [
        {"power": 12.5, "on": True}, {"power": 1}, {"power": 1}, {"power": 1}]
    assert sum("power" in r and "outside" in r for r in dead_letter_reasons(node)) == 1


def test_services_and_set_become_coap_requests(tmp_path: Path, mosquitto: Any, device: CoapDevice) -> None:
    cfg = write(tmp_path, mosquitto.port, [
        {"id": "c1", "product": "meter", "connector": "coap", "uri": f"coap://127.0.0.1:{device.port}/sensors/power",
         "mapping": {"power": "p"},
         "services": {"stop": {"path": "/stop"}, "set_level": {"path": "/stop", "payload": {"lvl": "$level"}}}}],
        steps=[{"device_input": {}}, {"filter": "power > 100"},
               {"device_output": {"service": "set_level", "args": {"level": "power"}}},
               {"device_output": {"service": "stop"}}, {"device_output": {"set": {"on": "power < 0"}}}])
    node = Node(load_node_config(cfg))
    node.start()
    try:
        wait_for(lambda: device.observers() == 1, what="the node observing the device")
        device.notify(b'{"p": 250}')
        wait_for(lambda: len(device.calls) == 3, what="three requests at the device")
        assert sorted(device.calls, key=repr) == sorted([("stop", "POST", {"lvl": 250}), ("stop", "POST", {}),
                                                         ("power", "PUT", {"on": False})], key=repr)
    finally:
        node.stop()


def test_bad_coap_bindings_are_refused_naming_the_field(tmp_path: Path) -> None:
    for spec, field in [
        ({"mode": "poll"}, "uri"),
        ({"uri": "http://x/y"}, "uri"),
        ({"mode": "push", "uri": "coap://x/y"}, "uri"),
        ({"mode": "listen"}, "mode"),
        ({"uri": "coap://x/y", "interval": "soon"}, "interval"),
        ({"uri": "coap://x/y", "services": {"stop": {"method": "POST"}}}, "services.stop.path"),
        ({"uri": "coap://x/y", "services": {"set_level": {"path": "/l", "payload": {"x": "$speed"}}}},
         "services.set_level"),
    ]:
        products, devices = write_catalog(tmp_path, PRODUCTS,
                                          [{"id": "c1", "product": "meter", "connector": "coap", **spec}])
        from edge_runtime.devices.catalog import load_catalog

        with pytest.raises(SpecError) as err:
            load_catalog([products], [devices])
        assert err.value.field == field, (spec, str(err.value))
        assert "devices.yaml" in str(err.value)
