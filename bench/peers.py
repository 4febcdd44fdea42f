"""Peers side by side: Node-RED and an EdgeLoop node running the same two flows, on this machine, in one run.

    .venv/bin/python -m bench.peers [--seconds 4] [--rates 5000,10000,...] [--flows a,b] [--systems ...]

Flows (SYNTHETIC pump telemetry: 100 devices ``bench/pumps/<i>``, ``{"t", "temp", "vib"}``, QoS 0):
(a) MQTT in -> filter (temp > 75) -> MQTT out;
(b) MQTT in -> filter (temp > 75) -> tumbling 1 s event-time window per device -> mean/max of temperature
    and vibration -> model score (a linear model, ``0.3 * (temperature_mean - 80) + 2 * vibration_max - 1``)
    -> MQTT out.
Node-RED 4 (npm ``node-red@4.1.15``, installed under var/node-red on first use; 5.x needs Node 22): an
``mqtt in`` node (JSON), a ``switch`` node, for (b) a ``function`` node keeping per-device windows in its
context and a ``function`` node for the score, and an ``mqtt out`` node. EdgeLoop: ``edgeloop node run`` with
the devices bound to their topics and the pipeline ``device_input -> filter [-> time_window -> aggregate ->
custom_function]``, its outputs on ``edgeloop/<node>/pipelines/<instance>/out``. Both publish their outputs
at the same QoS (``--qos``, default 0: Node-RED's ``mqtt out`` default; EdgeLoop ``outputs: {qos: 0}``) and
each runs as its own process; the broker (Mosquitto), the paced publisher (a separate process
writing pre-encoded packets) and the output subscriber are the same for both.

A step publishes ``rate`` messages/s for ``--seconds``; each message's ``t`` is its scheduled send time (wall
clock), so latency = arrival of the output at the subscriber - ``t`` (flow b: - the window's end). It passes
when nothing is lost (a: every passing message came out; b: every (device, window) with passing messages came
out and their counts add up to the passing messages) within a drain of 10 s, and the publisher kept >= 95% of
the rate. Reported per system and flow: the highest passing (zero-loss) rate and p50/p99 latency at it, the
highest rate that also kept p99 <= 100 ms ("kept up"), and every step.
Results: bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import SEED, machine_facts, print_table, write_results
from edge_runtime import jsonio
from edge_runtime.mqtt.raw import RawPublisher, publish_packet
from edge_runtime.ports import free_port
from edgeloop.devkit.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
NODE_RED_VERSION = "4.1.15"
N_DEVICES = 100
RATES = [5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000]
KEEP_UP = 0.95
KEPT_UP_P99_MS = 100.0  # the "kept up" rate: zero loss and p99 latency at most this
DRAIN_S = 10.0
QOS = 0  # outputs: --qos
SCORE = "0.3 * (temperature_mean - 80) + 2 * vibration_max - 1"
DATA_NOTE = "SYNTHETIC data: seeded simulated pump telemetry generated in bench/peers.py, not real devices"


# -- the paced publisher (a separate process) ----------------------------------------------------------
def _publisher_main(port: int, n_devices: int, conn: Any) -> None:
    pub = RawPublisher("127.0.0.1", port, client_id=f"peers-pub-{os.getpid()}", keepalive=60)
    if not pub._connect():
        raise RuntimeError(f"publisher cannot connect: {pub.last_error}")
    sock = pub.sock
    rng = random.Random(SEED)
    level = [rng.uniform(72.0, 86.0) for _ in range(n_devices)]
    topics = [f"bench/pumps/{i}" for i in range(n_devices)]
    while True:
        cmd = conn.recv()
        if cmd is None:
            pub.close()
            return
        rate, seconds, start_at = cmd
        n = int(rate * seconds)
        packets, passing, windows = [], 0, {}
        for i in range(n):
            d = i % n_devices
            t = round(start_at + i / rate, 6)
            temp = round(level[d] + rng.gauss(0, 3), 3)
            packets.append(publish_packet(topics[d], jsonio.dumps({"t": t, "temp": temp, "vib": round(rng.random(), 4)})))
            if temp > 75:
                passing += 1
                key = (d, math.floor(t))
                windows[key] = windows.get(key, 0) + 1
        t_end = start_at + n / rate
        # one passing reading per device well after the step closes every device's last window (its own window
        # is closed by the next step's first readings)
        flush = [publish_packet(topics[d], jsonio.dumps({"t": round(t_end + 1.5, 6), "temp": 99.0, "vib": 0.5}))
                 for d in range(n_devices)]
        conn.send(("ready", passing, len(windows)))
        while time.time() < start_at:
            time.sleep(0.0005)
        sent = 0
        t0 = time.perf_counter()
        while sent < n:
            due = min(n, int((time.perf_counter() - t0) * rate) + 1)
            if due > sent:
                sock.sendall(b"".join(packets[sent:due]))
                sent = due
            else:
                time.sleep(0.001)
        elapsed = time.perf_counter() - t0
        while time.time() < t_end + 0.05:
            time.sleep(0.001)
        sock.sendall(b"".join(flush))
        conn.send((sent, elapsed, t_end))


class Publisher:
    def __init__(self, port: int) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_publisher_main, args=(port, N_DEVICES, child), daemon=True)
        self.proc.start()
        self.last_end = 0.0

    def step(self, rate: int, seconds: float) -> tuple[float, int, int]:
        # time to pre-encode; and past the windows the last step's flush readings opened (they end by t_end + 2.5)
        start_at = max(time.time() + 1.0 + rate * seconds / 200_000, self.last_end + 4.0)
        self.conn.send((rate, seconds, start_at))
        if not self.conn.poll(120):
            raise RuntimeError("publisher did not get ready")
        _, passing, windows = self.conn.recv()
        return start_at, passing, windows

    def result(self, timeout: float) -> tuple[int, float, float]:
        if not self.conn.poll(timeout):
            raise RuntimeError("publisher did not finish")
        sent, elapsed, self.last_end = self.conn.recv()
        return sent, elapsed, self.last_end

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()


# -- the output subscriber (this process) ----------------------------------------------------------------
class Outputs:
    """Counts what a system publishes and how late: outputs of flow (a) carry the reading's ``t``, outputs of
    flow (b) the window's end (``ts``) and how many readings it held (``count``)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        from edge_runtime.mqtt import BufferedClient

        self.lock = threading.Lock()
        self.items: list[tuple[float, float, int]] = []  # (arrival, event time, count)
        self.bad = 0
        ready = threading.Event()
        c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=f"peers-out-{os.getpid()}",
                           protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, *_: (cl.subscribe(topic, 0), ready.set())
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        if not ready.wait(10):
            raise RuntimeError("output subscriber did not connect")
        time.sleep(0.3)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        now = time.time()
        try:
            doc = json.loads(msg.payload)
            vals = doc.get("values", doc)
            ts = doc.get("ts", doc.get("t"))
            count = int(vals.get("count", vals.get("temperature_count", 1)))
        except (ValueError, AttributeError, TypeError):
            self.bad += 1
            return
        with self.lock:
            self.items.append((now, float(ts), count))

    def take(self) -> list[tuple[float, float, int]]:
        with self.lock:
            out, self.items = self.items, []
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the systems ---------------------------------------------------------------------------------------
def node_red_flows(flow: str, port: int) -> list[dict[str, Any]]:
    broker = {"id": "broker", "type": "mqtt-broker", "name": "local", "broker": "127.0.0.1", "port": str(port),
              "clientid": "", "autoConnect": True, "usetls": False, "protocolVersion": "4", "keepalive": "60",
              "cleansession": True}
    nodes: list[dict[str, Any]] = [
        {"id": "tab", "type": "tab", "label": f"flow {flow}"}, broker,
        {"id": "in", "type": "mqtt in", "z": "tab", "topic": "bench/pumps/+", "qos": "0", "datatype": "json",
         "broker": "broker", "nl": False, "rap": True, "rh": 0, "inputs": 0, "wires": [["filter"]]},
        {"id": "filter", "type": "switch", "z": "tab", "property": "payload.temp", "propertyType": "msg",
         "rules": [{"t": "gt", "v": "75", "vt": "num"}], "checkall": "true", "repair": False, "outputs": 1,
         "wires": [["window" if flow == "b" else "out"]]},
        {"id": "out", "type": "mqtt out", "z": "tab", "topic": f"bench/out/{flow}", "qos": str(QOS), "retain": "false",
         "broker": "broker", "wires": []},
    ]
    if flow == "b":
        window = """
const size = 1.0;
const open = context.get('open') || {};
const p = msg.payload, dev = msg.topic;
const k = Math.floor(p.t / size);
let w = open[dev];
let out = null;
if (w && k > w.k) {
    out = {payload: {device: dev, ts: (w.k + 1) * size, count: w.n,
                     temperature_mean: w.tsum / w.n, temperature_max: w.tmax,
                     vibration_mean: w.vsum / w.n, vibration_max: w.vmax}};
    w = null;
}
if (!w) { w = {k: k, n: 0, tsum: 0, tmax: -Infinity, vsum: 0, vmax: -Infinity}; }
w.n += 1; w.tsum += p.temp; w.tmax = Math.max(w.tmax, p.temp); w.vsum += p.vib; w.vmax = Math.max(w.vmax, p.vib);
open[dev] = w;
context.set('open', open);
return out;
"""
        score = ("msg.payload.score = 0.3 * (msg.payload.temperature_mean - 80) + 2 * msg.payload.vibration_max - 1;\n"
                 "return msg;")
        nodes += [
            {"id": "window", "type": "function", "z": "tab", "name": "1 s window mean/max", "func": window,
             "outputs": 1, "wires": [["score"]]},
            {"id": "score", "type": "function", "z": "tab", "name": "model score", "func": score, "outputs": 1,
             "wires": [["out"]]},
        ]
    return nodes


def install_node_red(prefix: Path) -> Path:
    red = prefix / "node_modules" / "node-red" / "red.js"
    if not red.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed: Node-RED needs Node.js 18+ and npm")
        print(f"installing node-red@{NODE_RED_VERSION} under {prefix} (npm)...", flush=True)
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
                        f"node-red@{NODE_RED_VERSION}"], check=True)
    return red


class System:
    name = ""
    out_topic = ""
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the system's process so far (Linux /proc)."""
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NodeRed(System):
    def __init__(self, red: Path, work: Path, flow: str, port: int) -> None:
        self.name, self.out_topic = f"Node-RED {NODE_RED_VERSION}", f"bench/out/{flow}"
        user = work / f"node-red-{flow}"
        user.mkdir(parents=True, exist_ok=True)
        (user / "flows.json").write_text(json.dumps(node_red_flows(flow, port)))
        (user / "settings.js").write_text("module.exports = { flowFile: 'flows.json', uiHost: '127.0.0.1', "
                                          "logging: { console: { level: 'info' } } };\n")
        self.log = user / "node-red.log"
        self.proc = subprocess.Popen(["node", str(red), "-u", str(user), "-p", str(free_port()), "-s",
                                      str(user / "settings.js")], stdout=open(self.log, "wb"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT)


class EdgeLoopNode(System):
    def __init__(self, work: Path, flow: str, port: int) -> None:
        self.name, self.out_topic = "EdgeLoop node", f"edgeloop/edge-peers/pipelines/{flow}/out"
        tmp = work / f"edgeloop-{flow}"
        tmp.mkdir(parents=True, exist_ok=True)
        products = {"products": [{"name": "pump", "properties": {"temperature": {"type": "number"},
                                                                 "vibration": {"type": "number"}}}]}
        devices = {"devices": [{"id": f"pump-{i:03d}", "product": "pump", "connector": "mqtt",
                                "topic": f"bench/pumps/{i}", "qos": 0,
                                "mapping": {"temperature": "temp", "vibration": "vib"}, "ts_field": "t"}
                               for i in range(N_DEVICES)]}
        steps: list[Any] = [{"device_input": {}}, {"filter": "temperature > 75"}]
        if flow == "b":
            steps += [{"time_window": {"size": "1s"}},
                      {"aggregate": {"temperature": ["mean", "max"], "vibration": ["mean", "max"]}},
                      {"custom_function": {"set": {"score": SCORE}}}]
        (tmp / "products.yaml").write_text(yaml.safe_dump(products))
        (tmp / "devices.yaml").write_text(yaml.safe_dump(devices))
        (tmp / "pipeline.yaml").write_text(yaml.safe_dump({"name": f"flow-{flow}", "product": "pump", "steps": steps},
                                                          sort_keys=False))
        (tmp / "node.yaml").write_text(yaml.safe_dump({
            "node": "edge-peers", "broker": {"host": "127.0.0.1", "port": port}, "store": {"path": "node.db"},
            "products": ["products.yaml"], "devices": ["devices.yaml"],
            "pipelines": [{"instance": flow, "pipeline": "pipeline.yaml"}], "publish_telemetry": False,
            "outputs": {"qos": QOS}}))
        self.log = tmp / "node.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeloop", "node", "run", "--config",
                                      str(tmp / "node.yaml")], cwd=ROOT, env=env,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


def warm_up(port: int, system: System, outputs: Outputs, flow: str, timeout: float = 60) -> None:
    """Publish passing readings until an output comes back: the system is connected and subscribed."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"peers-warm-{os.getpid()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + timeout
    t = time.time() - 100
    try:
        while time.monotonic() < deadline:
            if system.proc is not None and system.proc.poll() is not None:
                raise RuntimeError(f"{system.name} exited: {system.log.read_text()[-2000:]}")
            for d in range(N_DEVICES):
                c.publish(f"bench/pumps/{d}", json.dumps({"t": t, "temp": 99.0, "vib": 0.5}), qos=1)
            t += 1.0 if flow == "b" else 0.01
            time.sleep(0.3)
            if outputs.take():
                time.sleep(1.0)
                outputs.take()
                return
        raise RuntimeError(f"{system.name} produced no output in {timeout:.0f} s: {system.log.read_text()[-2000:]}")
    finally:
        c.loop_stop()
        c.disconnect()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def ramp(system: System, outputs: Outputs, pub: Publisher, flow: str, rates: list[int], seconds: float) -> list[dict[str, Any]]:
    steps = []
    for rate in rates:
        start_at, passing, windows = pub.step(rate, seconds)
        cpu0 = system.cpu_seconds()
        sent, elapsed, t_end = pub.result(seconds * 4 + 60)
        expected = passing if flow == "a" else windows
        got: list[tuple[float, float, int]] = []
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            got += [g for g in outputs.take() if start_at - 0.001 <= g[1] <= t_end + 1.0]
            if len(got) >= expected:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        extra = [g for g in outputs.take() if start_at - 0.001 <= g[1] <= t_end + 1.0]
        got += extra
        cpu = system.cpu_seconds() - cpu0
        lat = [(a - ts) * 1000 for a, ts, _ in got]
        counted = sum(c for *_, c in got)
        lost = expected - len(got) if flow == "a" else passing - counted
        pub_rate = sent / elapsed
        ok = len(got) == expected and (flow == "a" or counted == passing) and pub_rate >= KEEP_UP * rate
        step = {"target_rate": rate, "sent": sent, "publish_rate": round(pub_rate), "expected_outputs": expected,
                "outputs": len(got), "readings_in_outputs": counted if flow == "b" else len(got),
                "passing_readings": passing, "lost": lost, "latency_p50_ms": _r(pct(lat, 50)),
                "latency_p99_ms": _r(pct(lat, 99)), "latency_max_ms": _r(max(lat) if lat else None),
                "cpu_s": round(cpu, 2), "pass": ok}
        steps.append(step)
        print(f"  {system.name:18} flow {flow} {rate:>6}/s  outputs {len(got):>7}/{expected:<7} lost {lost:>6}  "
              f"p50 {step['latency_p50_ms']} ms p99 {step['latency_p99_ms']} ms  cpu {cpu:.1f} s  "
              f"{'PASS' if ok else 'FAIL'}", flush=True)
        if not ok:
            break
        time.sleep(1.0)
    return steps


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rates", default=",".join(map(str, RATES)))
    ap.add_argument("--flows", default="a,b")
    ap.add_argument("--systems", default="node-red,edgeloop")
    ap.add_argument("--qos", type=int, choices=[0, 1], default=0, help="QoS of both systems' outputs")
    args = ap.parse_args(argv)
    global QOS
    QOS = args.qos
    rates = [int(r) for r in args.rates.split(",")]
    red = install_node_red(ROOT / "var" / "node-red") if "node-red" in args.systems else None
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeloop-peers-") as tmp, Mosquitto() as broker:
        work = Path(tmp)
        pub = Publisher(broker.port)
        try:
            for flow in args.flows.split(","):
                for sysname in args.systems.split(","):
                    system: System = NodeRed(red, work, flow, broker.port) if sysname == "node-red" \
                        else EdgeLoopNode(work, flow, broker.port)
                    outputs = Outputs(broker.port, system.out_topic)
                    try:
                        warm_up(broker.port, system, outputs, flow)
                        steps = ramp(system, outputs, pub, flow, rates, args.seconds)
                    finally:
                        outputs.close()
                        system.stop()
                    passed = [s for s in steps if s["pass"]]
                    top = max(passed, key=lambda s: s["target_rate"]) if passed else None
                    kept = [s for s in passed if (s["latency_p99_ms"] or 0) <= KEPT_UP_P99_MS]
                    kept_top = max(kept, key=lambda s: s["target_rate"]) if kept else None
                    results.setdefault(flow, {})[sysname] = {
                        "system": system.name, "zero_loss_rate": top and top["target_rate"],
                        "p50_ms_at_it": top and top["latency_p50_ms"], "p99_ms_at_it": top and top["latency_p99_ms"],
                        "kept_up_rate": kept_top and kept_top["target_rate"],
                        "p99_ms_at_kept_up_rate": kept_top and kept_top["latency_p99_ms"], "steps": steps}
        finally:
            pub.close()
    rows = []
    for flow, by in results.items():
        base = (by.get("node-red") or {}).get("zero_loss_rate")
        for r in by.values():
            ratio = r["zero_loss_rate"] / base if base and r["zero_loss_rate"] else None
            r["ratio_to_node_red"] = ratio and round(ratio, 2)
            rows.append([flow, r["system"], r["zero_loss_rate"], r["p50_ms_at_it"], r["p99_ms_at_it"],
                         ratio and f"{ratio:.2f}x", r["kept_up_rate"], r["p99_ms_at_kept_up_rate"]])
    print_table(rows, ["flow", "system", "zero-loss msg/s", "p50 ms", "p99 ms", "vs Node-RED",
                       f"kept up (p99<={KEPT_UP_P99_MS:.0f} ms) msg/s", "p99 ms"])
    write_results("peers" if QOS == 0 else "peers_qos1", {"output_qos": QOS, "note": DATA_NOTE, "machine": machine_facts(), "seconds_per_step": args.seconds,
                            "devices": N_DEVICES, "score": SCORE, "node_red": NODE_RED_VERSION,
                            "targets": {"a": "EdgeLoop >= 1.0x Node-RED's zero-loss rate, lower p99",
                                        "b": "EdgeLoop >= 3x Node-RED's zero-loss rate, lower p99"},
                            "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
