"""Node configurations the tests share: the pump-monitoring app on a broker and a Modbus server, and a node
whose Modbus pumps upload every record to a hub."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml

from tests.kit import ROOT

APP = ROOT / "apps" / "pump_monitoring"


def write_config(tmp_path: Path, broker_port: int, modbus_port: int, **extra) -> Path:
    devices = yaml.safe_load((APP / "devices.yaml").read_text())
    for d in devices["devices"]:
        if d["connector"] == "modbus":
            d["port"] = modbus_port
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump(devices))
    (tmp_path / "pipelines").mkdir()
    for p in (APP / "pipelines").glob("*.yaml"):
        (tmp_path / "pipelines" / p.name).write_text(p.read_text())
    (tmp_path / "products.yaml").write_text((APP / "products.yaml").read_text())
    cfg = {"node": "edge-t", "broker": {"host": "127.0.0.1", "port": broker_port},
           "store": {"path": "node.db"}, "products": ["products.yaml"], "devices": ["devices.yaml"],
           "pipelines": [{"instance": "overheat", "pipeline": "pipelines/overheat.yaml"},
                         {"instance": "estop", "pipeline": "pipelines/stop_on_fault.yaml"}],
           "stats_interval": 0.5, **extra}
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def reading(t: float, temp: float, vib: float, amps: float = 12.0, power: bool = True) -> bytes:
    return json.dumps({"time": t, "temp_c": temp, "vib": {"rms": vib}, "motor": {"amps": amps},
                       "power": power}).encode()


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
