"""``edgeloop demo``: a hub and two edge nodes on SYNTHETIC devices, with a summary at the end.

Starts a broker (Mosquitto on a free port unless ``--broker`` names one) and a hub
(``edgeloop hub serve`` on a free port, SQLite in a temporary folder), then:

* pumps (node ``edge-1``, apps/pump_monitoring): a Modbus TCP simulator for pump-3
  and two simulated MQTT pumps. pump-1 overheats and shakes after a few seconds
  (the overheat pipeline alerts); pump-3 runs away past 110 degC (the emergency-stop
  pipeline calls its stop service, a Modbus coil write, and the simulator sees its
  running coil drop);
* cameras (node ``edge-cameras``, apps/sewage_dumping): generated street-camera
  videos played as live cameras through the paper's pipeline; alerts with JPEGs
  arrive at the hub and are scored against the videos' ground truth.

Everything it started is stopped at the end and its temporary folder removed.
"""

from __future__ import annotations

import math
import random
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from edge_runtime import jsonio

APP = Path(__file__).resolve().parent.parent / "apps" / "pump_monitoring"


def _pump_reading(rng: random.Random, t: float, phase: float, fault: bool) -> dict[str, Any]:
    """Synthetic pump telemetry: daily drift, noise, and a fault that heats and shakes the pump."""
    temp = 62 + 4 * math.sin(t / 30 + phase) + rng.gauss(0, 0.6) + (30 if fault else 0)
    vib = abs(1.8 + 0.3 * math.sin(t / 7 + phase) + rng.gauss(0, 0.15) + (3.5 if fault else 0))
    amps = 11 + rng.gauss(0, 0.3) + (4 if fault else 0)
    return {"time": t, "temp_c": round(temp, 2), "vib": {"rms": round(vib, 3)}, "motor": {"amps": round(amps, 2)},
            "power": True}


class PumpDemo:
    """Simulated pumps on node ``edge-1``; its alerts and notifications are printed as they come."""

    def __init__(self, console: Any, work: Path, *, host: str, port: int, duration: float,
                 hub: Any = None) -> None:
        self.console, self.work, self.host, self.port, self.duration = console, work, host, port, duration
        self.hub = hub
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.stop_event = threading.Event()
        self.started: list[Any] = []
        self.node: Any = None
        self.stopped = False

    def start(self) -> None:
        import paho.mqtt.client as mqtt

        from edge_runtime.node import Node, load_node_config
        from edgeloop.devkit.modbus import ModbusServer

        modbus = self.modbus = ModbusServer().start()
        self.started.append(modbus)
        modbus.set_holding(0, [700, 150])
        modbus.set_coil(0, True)
        self.console.print(f"[bold]devices[/]: pump-1, pump-2 over MQTT, pump-3 a Modbus simulator on "
                           f":{modbus.port} (all synthetic)")
        work = self.work / "pumps"
        work.mkdir(parents=True, exist_ok=True)
        devices = yaml.safe_load((APP / "devices.yaml").read_text())
        for d in devices["devices"]:
            if d["connector"] == "modbus":
                d["port"] = modbus.port
        (work / "devices.yaml").write_text(yaml.safe_dump(devices))
        shutil.copy(APP / "products.yaml", work / "products.yaml")
        shutil.copytree(APP / "pipelines", work / "pipelines")
        node_cfg = yaml.safe_load((APP / "node.yaml").read_text())
        node_cfg.update(broker={"host": self.host, "port": self.port}, store={"path": "edge-1.db"},
                        devices=["devices.yaml"])
        if self.hub is not None:
            token = self.hub.admin().post("/api/v1/nodes", {"name": node_cfg["node"]})["token"]
            node_cfg.update(hub={"url": self.hub.url, "token": token, "heartbeat": 2.0},
                            outbox={"path": "edge-1-outbox.db"})
        (work / "node.yaml").write_text(yaml.safe_dump(node_cfg))
        node = self.node = Node(load_node_config(work / "node.yaml"))

        watcher = self.watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-watch-{self.port}")

        def on_message(c: Any, u: Any, msg: Any) -> None:
            kind = msg.topic.rsplit("/", 1)[-1]
            item = jsonio.loads(msg.payload)
            self.seen.append((kind, item))
            colour = "red" if item.get("level") == "ERROR" else "yellow"
            self.console.print(f"[{colour}]{kind[:-1].upper():12}[/] {item.get('level', ''):5} {item.get('message')}")

        watcher.on_connect = lambda c, u, f, rc, p: c.subscribe([(f"edgeloop/{node.cfg.node}/alerts", 1),
                                                                 (f"edgeloop/{node.cfg.node}/notifications", 1)])
        watcher.on_message = on_message
        watcher.connect(self.host, self.port)
        watcher.loop_start()
        node.start()
        self.console.print(f"[bold]node[/] {node.cfg.node}: pipelines {', '.join(node.instances)}; "
                           f"pumps run {self.duration:g} s")
        self.sim = threading.Thread(target=self._simulate, name="simulated-pumps", daemon=True)
        self.t_start = time.monotonic()
        self.sim.start()

    def _simulate(self) -> None:
        import paho.mqtt.client as mqtt

        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-sim-{self.port}")
        pub.connect(self.host, self.port)
        pub.loop_start()
        rng = random.Random(7)
        t_start = time.time()
        temp3 = 70.0
        modbus = self.modbus
        while not self.stop_event.wait(0.1):
            now = time.time()
            age = now - t_start
            for i, phase in ((1, 0.0), (2, 1.3)):
                fault = i == 1 and 4 < age < self.duration * 0.6
                pub.publish(f"plant/pumps/{i}/state", jsonio.dumps(_pump_reading(rng, now, phase, fault)), qos=1)
            if modbus.coil(0):  # pump-3 heats up while it runs, cools once stopped
                temp3 = min(temp3 + (2.5 if age > 6 else 0.0), 130.0)
            else:
                temp3 = max(temp3 - 1.5, 60.0)
            modbus.set_holding(0, [int(temp3 * 10), int(150 + rng.gauss(0, 5))])
        pub.loop_stop()
        pub.disconnect()

    def finished(self) -> bool:
        return time.monotonic() - self.t_start >= self.duration

    def stop(self) -> None:
        if self.stopped or self.node is None:
            return
        self.stopped = True
        self.stop_event.set()
        self.sim.join(5)
        self.stats = self.node.stats()
        self.running_after = self.modbus.coil(0)
        self.node.stop(keep_state=False)  # the demo's end: windows still open are emitted (an alert may be in one)
        self.watcher.loop_stop()
        self.watcher.disconnect()
        for s in reversed(self.started):
            s.stop()

    def report(self) -> tuple[Any, bool]:
        from rich.table import Table

        stats, seen = self.stats, self.seen
        table = Table(title="pump monitoring (SYNTHETIC devices) on edge-1")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("records on the Device Bus", str(stats["records"]))
        for dev, n in sorted(self.node.bus.per_device.items()):
            table.add_row(f"  from {dev}", str(n))
        table.add_row("alerts", str(sum(1 for k, _ in seen if k == "alerts")))
        table.add_row("notifications", str(sum(1 for k, _ in seen if k == "notifications")))
        table.add_row("device actions (pump.stop)", str(stats["actions"]))
        table.add_row("pump-3 running after the demo", str(self.running_after))
        table.add_row("dead letters", str(stats["dead_letters"]["total"]))
        ok = any(k == "alerts" for k, _ in seen) and stats["actions"] >= 1
        return table, ok


SCENARIOS = ("all", "pumps", "cameras", "loop")


def _run_loop(console: Any, work: Path, hub: Any, broker_port: int, figures: dict[str, Any]) -> bool:
    """One agile-loop iteration on the pump scenario (edgeloop.devkit.scenarios.pumps.run_loop) against the demo's hub and
    broker: drift, collect, label (SIMULATED annotator) in Label Studio, retrain, gate, package, roll out; then
    the node scores new drifted data with the new version. Skipped, with the reason, without Label Studio."""
    import os

    try:
        from edgeloop.devkit.labelstudio import LabelStudioServer

        LabelStudioServer.executable()
    except (ImportError, FileNotFoundError) as e:
        console.print(f"[yellow]the agile loop is skipped[/]: {e} (`make label-studio` installs Label Studio)")
        figures["loop"] = None
        return True
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))  # a throwaway Prefect database
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the demo prints each step itself
    from edgeloop.devkit.scenarios import pumps as sc

    console.print("[bold]agile loop[/]: pumps drift after version 1 ships; one iteration (Prefect, Label Studio "
                  "with a SIMULATED annotator, MLflow, BentoML), then a canary rollout")
    with console.status("agile loop") as status:
        def step(name: str) -> None:
            status.update(f"agile loop: {name}")
            console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/] {name}")

        out = sc.run_loop(work / "loop", params=sc.project_params(), iterations=1, admin_token=hub.admin_token, hub=hub,
                          broker_port=broker_port, measure_after=True, say=lambda _m: None, on_step=step)
    out.pop("fields", None)
    figures["loop"] = out
    figures["drift"] = _drift(console, hub)
    it = out["iterations"][0]
    after = (out.get("after") or {}).get("node_accuracy")
    from rich.table import Table

    t = Table(title="agile loop, one iteration (SYNTHETIC pump drift; labels by a SIMULATED annotator)")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("uploads scored by version 1 / sent to labelling", f"{it['field_windows']} / {it['labels_sent']} "
              f"({it['label_share']:.1%})")
    t.add_row("drifted holdout accuracy, v1 -> candidate", f"{it['champion_drifted']:.3f} -> {it['candidate_drifted']:.3f}")
    t.add_row("clean holdout accuracy, v1 -> candidate", f"{it['champion_clean']:.3f} -> {it['candidate_clean']:.3f}")
    t.add_row("gate", "promoted" if it["promoted"] else f"kept v1: {it['why']}")
    t.add_row("rollout (canary 1, then the group)", str((it["rollout"] or {}).get("state")))
    t.add_row("accuracy at the node on the drifted data it scored", f"{it['node_accuracy']:.3f} (v1)")
    if after is not None:
        t.add_row("new drifted data, same windows on both nodes", f"edge-q (v1) {out['after']['control_accuracy']:.3f}"
                  f" | edge-p (v{out['after']['node_version']}) {after:.3f}")
    t.add_row("loop runs (collect; retrain..rollout), s", f"{it['run_1_s']}; {it['run_2_s']}")
    console.print(t)
    good = bool(it["promoted"]) and (it["rollout"] or {}).get("state") == "done" and after is not None \
        and after > out["after"]["control_accuracy"]
    if not good:
        console.print("[red]the loop did not promote and roll out a better model[/]")
    return good


def _drift(console: Any, hub: Any) -> dict[str, Any] | None:
    """The pump model's drift as the hub recorded it during the loop (per node and version, from heartbeats):
    printed as a table with a sparkline per line, kept for the report's plot."""
    from models.cli import sparkline

    try:
        view = hub.admin().get("/api/v1/models/pump_anomaly/drift?since=0")
    except Exception as exc:  # noqa: BLE001 - the report goes on without it
        console.print(f"[yellow]drift not read from the hub[/]: {exc}")
        return None
    from rich.table import Table

    t = Table(title=f"drift of pump_anomaly at the edge (PSI, threshold {view['threshold']:g}; SYNTHETIC data)")
    for c in ("node", "version", "points", "first", "highest", "last", "over time"):
        t.add_column(c)
    top = max([view["threshold"] * 2, *(p[1] for s in view["series"] for p in s["points"] if p[1] is not None)])
    for s in view["series"]:
        scores = [p[1] for p in s["points"]]
        known = [x for x in scores if x is not None]
        t.add_row(s["node"], s["version"], str(len(scores)), f"{known[0]:.3f}" if known else "-",
                  f"{max(known):.3f}" if known else "-", f"{known[-1]:.3f}" if known else "-",
                  sparkline(scores[-50:], top))
    console.print(t)
    return {"threshold": view["threshold"], "series": view["series"]}


def run_demo(*, duration: float = 20.0, broker: str | None = None, quiet: bool = False, scenario: str = "all",
             cameras: int = 2, frames: int = 300, model_cache: Path | None = None,
             summary: Path | None = None, loop: bool = True, report: Path | None = None) -> int:
    """Run the demo; 0 when each scenario showed what it should (an alert and a stop action for the pumps,
    alerts at the hub that match the truth for the cameras, a promoted and rolled-out model that is more
    accurate on drifted data for the loop), else 1. ``summary``: write the figures there as JSON;
    ``report``: the folder for the closing report (markdown, PNG plots, HTML)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .devkit.broker import Mosquitto

    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    console = Console(quiet=quiet)
    t_demo = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-demo-"))
    started: list[Any] = []
    pumps = cams = None
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
        hub = None
        if scenario in ("all", "cameras", "loop"):
            from edgeloop.devkit.hub import HubProcess

            hub = HubProcess(work / "hub", admin_token="ela_" + secrets.token_urlsafe(32), broker_port=port,
                             heartbeat=2.0).start()
            started.append(hub)
            console.print(f"[bold]hub[/]: {hub.url} (SQLite in {work / 'hub'}; EDGELOOP_TOKEN={hub.admin_token})")
        if scenario in ("all", "cameras"):
            from edgeloop.devkit.cameras import CACHE, CameraDemo

            cams = CameraDemo(console, work, broker_port=port, hub=hub, cameras=cameras, frames=frames,
                              cache=model_cache or CACHE)
            cams.prepare()
        if scenario in ("all", "pumps"):
            pumps = PumpDemo(console, work, host=host, port=port, duration=duration, hub=hub)
            pumps.start()
        if cams is not None:
            cams.start()
        total = cameras * frames if cams is not None else 0
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("camera frames" if cams is not None else "pumps", total=total or duration)
            while not ((cams is None or cams.finished()) and (pumps is None or pumps.finished())):
                time.sleep(0.25)
                if cams is not None:
                    cams.poll()
                    progress.update(task, completed=cams.frames_done())
                else:
                    progress.update(task, completed=min(duration, time.monotonic() - pumps.t_start))
        ok = True
        figures: dict[str, Any] = {"data_note": "SYNTHETIC devices and videos"}
        if pumps is not None:
            pumps.stop()
            table, pumps_ok = pumps.report()
            console.print(table)
            figures["pumps"] = {"records": pumps.stats["records"], "actions": pumps.stats["actions"],
                                "records_per_s": round(pumps.stats["records"] / max(pumps.stats["uptime"], 1e-9), 1),
                                "alerts": sum(1 for k, _ in pumps.seen if k == "alerts"),
                                "dead_letters": pumps.stats["dead_letters"]["total"], "ok": pumps_ok}
            if not pumps_ok:
                console.print("[red]the pumps did not show the expected alert and stop action[/]")
            ok = ok and pumps_ok
        if cams is not None:
            from edgeloop.devkit.cameras import table as camera_table

            cams.stop()
            rows = cams.report()
            console.print(camera_table(rows))
            cams_ok = rows["all"]["alerts"] > 0 and (rows["all"]["recall"] or 0) >= 0.5
            figures["cameras"] = {**rows, "ok": cams_ok}
            if not cams_ok:
                console.print("[red]the cameras' alerts did not reach the hub or missed most dumping acts[/]")
            ok = ok and cams_ok
        if loop and scenario in ("all", "loop"):
            loop_ok = _run_loop(console, work, hub, port, figures)
            ok = ok and loop_ok
        figures["seconds"] = round(time.monotonic() - t_demo, 1)
        if report is not None:
            from edgeloop.report import write_report

            files = write_report(report, figures)
            console.print(f"[bold]report[/]: {', '.join(str(f) for f in files)}")
        if summary is not None:
            summary.write_text(jsonio.dumps(figures).decode())
        return 0 if ok else 1
    finally:
        for part in (pumps, cams):
            if part is not None:
                part.stop()
        for s in reversed(started):
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
