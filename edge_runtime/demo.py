"""``edgeloop demo``: pump monitoring on simulated devices (synthetic data), printing the node's alerts.

Starts a broker (Mosquitto on a free port unless ``--broker`` names one), a
Modbus TCP simulator for pump-3, two simulated MQTT pumps, and an edge node
running apps/pump_monitoring. pump-1 overheats and shakes after a few seconds
(the overheat pipeline alerts); pump-3 runs away past 110 degC (the
emergency-stop pipeline calls its stop service, a Modbus coil write, and the
simulator sees its running coil drop). Everything it started is stopped at the end.
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from . import jsonio

APP = Path(__file__).resolve().parent.parent / "apps" / "pump_monitoring"


def _pump_reading(rng: random.Random, t: float, phase: float, fault: bool) -> dict[str, Any]:
    """Synthetic pump telemetry: daily drift, noise, and a fault that heats and shakes the pump."""
    temp = 62 + 4 * math.sin(t / 30 + phase) + rng.gauss(0, 0.6) + (30 if fault else 0)
    vib = abs(1.8 + 0.3 * math.sin(t / 7 + phase) + rng.gauss(0, 0.15) + (3.5 if fault else 0))
    amps = 11 + rng.gauss(0, 0.3) + (4 if fault else 0)
    return {"time": t, "temp_c": round(temp, 2), "vib": {"rms": round(vib, 3)}, "motor": {"amps": round(amps, 2)},
            "power": True}


def run_demo(*, duration: float = 20.0, broker: str | None = None, quiet: bool = False) -> int:
    import paho.mqtt.client as mqtt
    from rich.console import Console
    from rich.table import Table

    from .broker import Mosquitto
    from .node import Node, load_node_config
    from .testing import ModbusServer

    console = Console(quiet=quiet)
    work = Path(tempfile.mkdtemp(prefix="edgeloop-demo-"))
    started: list[Any] = []
    try:
        if broker:
            host, _, port_s = broker.partition(":")
            port = int(port_s or 1883)
            console.print(f"[bold]broker[/]: using {host}:{port}")
        else:
            mq = Mosquitto().start()
            started.append(mq)
            host, port = "127.0.0.1", mq.port
            console.print(f"[bold]broker[/]: started mosquitto on 127.0.0.1:{port}")
        modbus = ModbusServer().start()
        started.append(modbus)
        modbus.set_holding(0, [700, 150])
        modbus.set_coil(0, True)
        console.print(f"[bold]devices[/]: pump-1, pump-2 over MQTT, pump-3 a Modbus simulator on :{modbus.port} "
                      "(all synthetic)")

        devices = yaml.safe_load((APP / "devices.yaml").read_text())
        for d in devices["devices"]:
            if d["connector"] == "modbus":
                d["port"] = modbus.port
        (work / "devices.yaml").write_text(yaml.safe_dump(devices))
        shutil.copy(APP / "products.yaml", work / "products.yaml")
        shutil.copytree(APP / "pipelines", work / "pipelines")
        node_cfg = yaml.safe_load((APP / "node.yaml").read_text())
        node_cfg.update(broker={"host": host, "port": port}, store={"path": "edge-1.db"}, devices=["devices.yaml"])
        (work / "node.yaml").write_text(yaml.safe_dump(node_cfg))
        node = Node(load_node_config(work / "node.yaml"))

        seen: list[tuple[str, dict[str, Any]]] = []
        watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-watch-{port}")

        def on_message(c: Any, u: Any, msg: Any) -> None:
            kind = msg.topic.rsplit("/", 1)[-1]
            item = jsonio.loads(msg.payload)
            seen.append((kind, item))
            colour = "red" if item.get("level") == "ERROR" else "yellow"
            console.print(f"[{colour}]{kind[:-1].upper():12}[/] {item.get('level', ''):5} {item.get('message')}")

        watcher.on_connect = lambda c, u, f, rc, p: c.subscribe([(f"edgeloop/{node.cfg.node}/alerts", 1),
                                                                 (f"edgeloop/{node.cfg.node}/notifications", 1)])
        watcher.on_message = on_message
        watcher.connect(host, port)
        watcher.loop_start()
        node.start()
        console.print(f"[bold]node[/] {node.cfg.node}: pipelines {', '.join(node.instances)}; running {duration:g} s")

        stop = threading.Event()
        rng = random.Random(7)

        def simulate() -> None:
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-sim-{port}")
            pub.connect(host, port)
            pub.loop_start()
            t_start = time.time()
            temp3 = 70.0
            while not stop.wait(0.1):
                now = time.time()
                age = now - t_start
                for i, phase in ((1, 0.0), (2, 1.3)):
                    fault = i == 1 and 4 < age < duration * 0.6
                    pub.publish(f"plant/pumps/{i}/state", jsonio.dumps(_pump_reading(rng, now, phase, fault)), qos=1)
                if modbus.coil(0):  # pump-3 heats up while it runs, cools once stopped
                    temp3 = min(temp3 + (2.5 if age > 6 else 0.0), 130.0)
                else:
                    temp3 = max(temp3 - 1.5, 60.0)
                modbus.set_holding(0, [int(temp3 * 10), int(150 + rng.gauss(0, 5))])
            pub.loop_stop()
            pub.disconnect()

        sim = threading.Thread(target=simulate, name="simulated-pumps", daemon=True)
        sim.start()
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        sim.join(5)
        stats = node.stats()
        node.stop()
        watcher.loop_stop()
        watcher.disconnect()

        table = Table(title="EdgeLoop demo: pump monitoring (synthetic devices)")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("records on the Device Bus", str(stats["records"]))
        for dev, n in sorted(node.bus.per_device.items()):
            table.add_row(f"  from {dev}", str(n))
        table.add_row("alerts", str(sum(1 for k, _ in seen if k == "alerts")))
        table.add_row("notifications", str(sum(1 for k, _ in seen if k == "notifications")))
        table.add_row("device actions (pump.stop)", str(stats["actions"]))
        table.add_row("pump-3 running after the demo", str(modbus.coil(0)))
        table.add_row("dead letters", str(stats["dead_letters"]["total"]))
        console.print(table)
        ok = any(k == "alerts" for k, _ in seen) and stats["actions"] >= 1
        if not ok:
            console.print("[red]the demo did not see the expected alert and stop action[/]")
        return 0 if ok else 1
    finally:
        for s in reversed(started):
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
