"""The durable uplink's guarantee, with everything really stopped and killed.

With records flowing (Modbus devices polled every 20 ms, every record uploaded):
stop the broker for 30 s, then the hub for 30 s, then SIGKILL the node and restart
it. Every record the node accepted into its outbox reaches the hub exactly once,
in per-device order. (EDGELOOP_OUTAGE_S shortens the outages for local runs.)
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from hubkit import HubProcess, NodeProcess, all_uploads, wait_for

OUTAGE = float(os.environ.get("EDGELOOP_OUTAGE_S", "30"))

PRODUCTS = """
products:
  - name: pump
    properties:
      temperature: {type: number}
      vibration: {type: number}
"""

PIPELINE = """
name: upload-all
product: pump
steps:
  - device_input: {}
  - upload: {}
"""


def write_node(tmp: Path, node: str, *, broker_port: int, hub_url: str, token: str, modbus_port: int,
               devices: int = 3, interval: str = "20ms") -> Path:
    (tmp / "products.yaml").write_text(PRODUCTS)
    lines = ["devices:"]
    for i in range(devices):
        lines += [f"  - id: pump-{i}", "    product: pump", "    connector: modbus", "    host: 127.0.0.1",
                  f"    port: {modbus_port}", "    unit: 1", f"    interval: {interval}", "    timeout: 1s",
                  "    registers:", "      temperature: {table: holding, address: 0, type: int16, scale: 0.1}",
                  "      vibration: {table: holding, address: 1, type: uint16, scale: 0.01}"]
    (tmp / "devices.yaml").write_text("\n".join(lines) + "\n")
    (tmp / "upload.yaml").write_text(PIPELINE)
    cfg = tmp / "node.yaml"
    cfg.write_text(f"""
node: {node}
broker: {{host: 127.0.0.1, port: {broker_port}, keepalive: 5}}
store: {{path: {node}.db}}
products: [products.yaml]
devices: [devices.yaml]
pipelines:
  - {{instance: all, pipeline: upload.yaml}}
publish_telemetry: false
stats_interval: 1
hub: {{url: "{hub_url}", token: "{token}", heartbeat: 1}}
outbox: {{path: {node}-outbox.db, ack_timeout: 2s}}
""")
    return cfg


def outbox_state(path: Path) -> tuple[int, dict[str, int]]:
    """(rows waiting, per-device last sequence number) read from the node's outbox file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        seqs = dict(db.execute("SELECT device, seq FROM device_seq"))
    finally:
        db.close()
    return rows, seqs


def hold(seconds: float) -> None:
    """Keep an outage going for this long (the scenario's duration, not a synchronisation)."""
    threading.Event().wait(seconds)


@pytest.mark.broker
@pytest.mark.modbus
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_record_reaches_the_hub_exactly_once_in_order(tmp_path, mosquitto, modbus_server):
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port).start()
    node = None
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-x"})["token"]
        cfg = write_node(tmp_path, "edge-x", broker_port=mosquitto.port, hub_url=hub.url, token=token,
                         modbus_port=modbus_server.port)
        node = NodeProcess(cfg).start()

        def stored() -> int:
            return len(all_uploads(admin, node="edge-x"))

        def grows(beyond: int, what: str, timeout: float = 60) -> int:
            return wait_for(lambda: (n := stored()) > beyond and n, timeout, what)

        n = grows(100, "records flowing to the hub")
        mosquitto.stop()
        hold(OUTAGE)
        mosquitto.start()
        n = grows(n + 100, "the backlog of the broker outage arriving")
        hub.stop()
        hold(OUTAGE)
        hub.start()
        admin = hub.admin()
        n = grows(n + 100, "the backlog of the hub outage arriving")
        node.kill()
        node.start()
        n = grows(n + 100, "records flowing again after the node was killed")
        modbus_server.stop()  # no more input: let the outbox drain
        outbox = tmp_path / "edge-x-outbox.db"
        for _ in range(3):
            wait_for(lambda: outbox_state(outbox)[0] == 0, 120, "the node's outbox to drain")
            # what the node accepted is only final once it has stopped: a poll answered just before the
            # Modbus server went away can still become a record after the drain
            node.stop()
            rows, last_seq = outbox_state(outbox)
            if rows == 0:
                break
            node.start()  # it came in after the drain: let this node deliver it too
        assert rows == 0, f"{rows} records still in the outbox after three drains"
    finally:
        if node is not None:
            node.stop()
        log = (tmp_path / "node.log").read_text()[-3000:] if (tmp_path / "node.log").exists() else ""
        items = all_uploads(hub.admin(), node="edge-x") if hub.proc else []
        hub.stop()
    assert "Traceback" not in log, log
    by_device: dict[str, list[int]] = {}
    for it in items:
        by_device.setdefault(it["device"], []).append(it["seq"])
    assert set(by_device) == set(last_seq) == {"pump-0", "pump-1", "pump-2"}
    for device, seqs in by_device.items():
        # exactly once and in order: the hub holds 1..N in storage order, N = what the node accepted
        assert seqs == list(range(1, last_seq[device] + 1)), f"{device}: gaps, duplicates or disorder"
    assert len({it["id"] for it in items}) == len(items) == sum(last_seq.values())
    assert len(items) > 400
