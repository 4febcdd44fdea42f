"""Nodes under test: their configuration (:func:`write_node`, from edgeloop.devkit.nodes, and the two nodes
several tests share: the pump-monitoring app on a broker and a Modbus server, and Modbus pumps uploading
every record to a hub), what a node wrote (dead letters, its outbox) and delivered to the hub, and the
outages tests hold."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edge_runtime.testing import wait_for
from edgeloop.devkit.nodes import Spec, write_catalog, write_node
from tests.kit import ROOT

if TYPE_CHECKING:
    from edge_runtime.node import Node
    from edgeloop.devkit.hub import HubProcess, NodeProcess

__all__ = ["Spec", "dead_letter_reasons", "drain_outbox", "hold", "modbus_upload_node", "outbox_state",
           "pump_app_node", "reading", "uploads_beyond", "write_catalog", "write_node"]

APP = ROOT / "apps" / "pump_monitoring"


def pump_app_node(folder: Path, broker_port: int, modbus_port: int, **sections: Any) -> Path:
    """The pump-monitoring app as node ``edge-t``: its products, its devices (the Modbus pump on
    ``modbus_port``), its pipelines as instances ``overheat`` and ``estop``, telemetry republished."""
    def app(name: str) -> Any:
        return yaml.safe_load((APP / name).read_text())

    devices = app("devices.yaml")["devices"]
    for d in devices:
        if d["connector"] == "modbus":
            d["port"] = modbus_port
    return write_node(folder, "edge-t", broker_port=broker_port, products=app("products.yaml")["products"],
                      devices=devices, pipelines={"overheat": app("pipelines/overheat.yaml"),
                                                  "estop": app("pipelines/stop_on_fault.yaml")},
                      publish_telemetry=True, stats_interval=0.5, **sections)


def reading(t: float, temp: float, vib: float, amps: float = 12.0, power: bool = True) -> bytes:
    """A pump-monitoring app's MQTT pump reading (pump-1, pump-2)."""
    return json.dumps({"time": t, "temp_c": temp, "vib": {"rms": vib}, "motor": {"amps": amps},
                       "power": power}).encode()


PUMP = {"name": "pump", "properties": {"temperature": {"type": "number"}, "vibration": {"type": "number"}}}
UPLOAD_ALL = {"name": "upload-all", "product": "pump", "steps": [{"device_input": {}}, {"upload": {}}]}


def modbus_upload_node(folder: Path, node: str, *, broker_port: int, hub_url: str, token: str, modbus_port: int,
                       devices: int = 3, interval: str = "20ms") -> Path:
    """Node ``node`` polling ``devices`` Modbus pumps (``pump-0``...) every ``interval`` and uploading every
    record (instance ``all``) to the hub through its outbox ``<node>-outbox.db``."""
    registers = {"temperature": {"table": "holding", "address": 0, "type": "int16", "scale": 0.1},
                 "vibration": {"table": "holding", "address": 1, "type": "uint16", "scale": 0.01}}
    pumps = [{"id": f"pump-{i}", "product": "pump", "connector": "modbus", "host": "127.0.0.1", "port": modbus_port,
              "unit": 1, "interval": interval, "timeout": "1s", "registers": registers} for i in range(devices)]
    return write_node(folder, node, broker_port=broker_port, products=[PUMP], devices=pumps,
                      pipelines={"all": UPLOAD_ALL}, broker={"keepalive": 5}, store={"path": f"{node}.db"},
                      stats_interval=1, hub={"url": hub_url, "token": token, "heartbeat": 1},
                      outbox={"path": f"{node}-outbox.db", "ack_timeout": "2s"})


def dead_letter_reasons(node: Node) -> list[str]:
    """The reasons of the node's dead letters in its store (the newest 100, newest first)."""
    node.dead_letters.flush()
    return [d["reason"] for d in node.store.dead_letters()]


def outbox_state(path: Path) -> tuple[int, dict[str, int]]:
    """(rows waiting, per-device last sequence number) read from the node's outbox file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        seqs = dict(db.execute("SELECT device, seq FROM device_seq"))
    finally:
        db.close()
    return rows, seqs


def drain_outbox(node: NodeProcess, outbox: Path, tries: int = 3) -> dict[str, int]:
    """Once a node's input has stopped: wait for its outbox to drain, stop it, and return the per-device last
    sequence number it accepted. What the node accepted is only final once it has stopped (a poll answered
    just before the input went away can still become a record after the drain): then the node is started
    again to deliver that too, up to ``tries`` times."""
    for _ in range(tries):
        wait_for(lambda: outbox_state(outbox)[0] == 0, 120, "the node's outbox to drain")
        node.stop()
        rows, last_seq = outbox_state(outbox)
        if rows == 0:
            break
        node.start()
    assert rows == 0, f"{rows} records still in the outbox after {tries} drains"
    return last_seq


def uploads_beyond(hub: HubProcess, node: str, beyond: int, what: str, timeout: float = 60) -> int:
    """Wait until the hub stores more than ``beyond`` uploads from ``node``; how many it stores then."""
    stored: int = wait_for(lambda: (n := len(hub.admin().all_uploads(node=node))) > beyond and n, timeout, what)
    return stored


def hold(seconds: float) -> None:
    """Keep an outage or a fault going for this long (the scenario's duration, not a synchronisation)."""
    threading.Event().wait(seconds)
