"""Modbus register decoding: types, scale, byte and word order (checked against a real server too)."""

from __future__ import annotations

import struct

import pytest

from edge_runtime.connectors.modbus import Register, decode, encode
from edge_runtime.devices.bus import DeviceBus


@pytest.fixture
def bus():
    """The real Device Bus (no store or engine), keeping what reaches it."""
    b = DeviceBus("t")
    b.seen = []
    b.listeners.append(b.seen.extend)
    b.start()
    yield b
    b.stop()


def received(bus):
    assert bus.wait_idle(5), "the bus did not drain"
    return bus.seen


def reasons(bus):
    return [d["reason"] for d in bus.dead_letters.recent]


@pytest.mark.parametrize(("rtype", "value"), [("int16", -1234), ("uint16", 65000), ("int32", -70000),
                                              ("uint32", 4_000_000_000), ("float32", 3.5), ("float64", -2.25e10),
                                              ("int64", -(2 ** 40)), ("uint64", 2 ** 63)])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_encode_decode_round_trip(rtype, value, byte_order, word_order):
    reg = Register("x", "holding", 0, rtype, byte_order=byte_order, word_order=word_order)
    assert decode(reg, encode(reg, value)) == value


def test_word_and_byte_order_follow_the_wire():
    words = list(struct.unpack(">HH", struct.pack(">f", 1.5)))  # ABCD
    assert decode(Register("x", "holding", 0, "float32"), words) == 1.5
    assert decode(Register("x", "holding", 0, "float32", word_order="little"), words[::-1]) == 1.5  # CDAB
    swapped = [int.from_bytes(w.to_bytes(2, "big")[::-1], "big") for w in words]  # BADC
    assert decode(Register("x", "holding", 0, "float32", byte_order="little"), swapped) == 1.5


@pytest.mark.modbus
def test_read_types_from_a_real_server(modbus_server, bus):
    from edge_runtime.connectors.modbus import ModbusDevice
    from edge_runtime.devices.catalog import load_catalog


    products = {"products": [{"name": "m", "properties": {"a": {"type": "number"}, "b": {"type": "number"},
                                                          "c": {"type": "integer"}, "d": {"type": "boolean"},
                                                          "e": {"type": "number"}}}]}
    devices = {"devices": [{"id": "m1", "product": "m", "connector": "modbus", "host": "127.0.0.1",
                            "port": modbus_server.port, "timeout": 0.5, "registers": {
                                "a": {"table": "holding", "address": 0, "type": "int16", "scale": 0.1},
                                "b": {"table": "holding", "address": 1, "type": "float32", "word_order": "little"},
                                "c": {"table": "input", "address": 3, "type": "uint32"},
                                "d": {"table": "coil", "address": 4},
                                "e": {"table": "holding", "address": 150, "type": "uint16"}}}]}
    cat = load_catalog([], [], products_data=[("p", products)], devices_data=[("d", devices)])
    b_words = list(struct.unpack(">HH", struct.pack(">f", -7.25)))[::-1]
    modbus_server.set_holding(0, [(-215) & 0xFFFF, *b_words])
    modbus_server.set_input(3, [1, 2])
    modbus_server.set_coil(4, True)
    dev = ModbusDevice(cat.devices["m1"], cat.products["m"], bus)
    try:
        assert dev.poll_once()
        values = received(bus)[0]["values"]
        assert values["a"] == pytest.approx(-21.5) and values["b"] == -7.25
        assert values["c"] == 65538 and values["d"] is True
        dev.write("a", 12.3)
        assert modbus_server.holding(0) == [123]
        with pytest.raises(Exception, match="read-only"):
            dev.write("c", 1)
    finally:
        dev.stop() if dev._thread.is_alive() else dev.client.close()


@pytest.mark.modbus
def test_exception_response_is_a_dead_letter_and_other_registers_still_arrive(modbus_server, bus):
    from edge_runtime.connectors.modbus import ModbusDevice
    from edge_runtime.devices.catalog import load_catalog


    products = {"products": [{"name": "m", "properties": {"a": {"type": "number"}, "z": {"type": "number"}}}]}
    devices = {"devices": [{"id": "m1", "product": "m", "connector": "modbus", "host": "127.0.0.1",
                            "port": modbus_server.port, "timeout": 0.5, "registers": {
                                "a": {"table": "holding", "address": 0},
                                "z": {"table": "holding", "address": 5000}}}]}
    cat = load_catalog([], [], products_data=[("p", products)], devices_data=[("d", devices)])
    dev = ModbusDevice(cat.devices["m1"], cat.products["m"], bus)
    dev.poll_once()
    dev.client.close()
    assert received(bus) and received(bus)[0]["values"] == {"a": 0}  # the good register still arrives
    assert any("z (holding 5000)" in r and "IllegalDataAddress" in r for r in reasons(bus)), reasons(bus)


@pytest.mark.modbus
def test_a_silent_device_times_out_into_a_dead_letter(bus):
    """A TCP peer that accepts and never answers (a hung PLC): a timeout dead letter, not a hang."""
    import socket
    import threading
    import time

    from edge_runtime.connectors.modbus import ModbusDevice
    from edge_runtime.devices.catalog import load_catalog

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()


    products = {"products": [{"name": "m", "properties": {"a": {"type": "number"}}}]}
    devices = {"devices": [{"id": "hung", "product": "m", "connector": "modbus", "host": "127.0.0.1",
                            "port": srv.getsockname()[1], "timeout": 0.3,
                            "registers": {"a": {"table": "holding", "address": 0}}}]}
    cat = load_catalog([], [], products_data=[("p", products)], devices_data=[("d", devices)])
    dev = ModbusDevice(cat.devices["hung"], cat.products["m"], bus)
    try:
        started = time.monotonic()
        assert dev.poll_once() is False
        assert time.monotonic() - started < 3
        assert received(bus) == []
        assert any("timeout" in r for r in reasons(bus)), reasons(bus)
    finally:
        dev.client.close()
        stop.set()
        t.join(2)
        for c in conns:
            c.close()
        srv.close()
