"""End-to-end MQTT benchmark: publisher process -> Mosquitto -> subscriber, one reading per message.

    .venv/bin/python -m bench.mqtt_e2e [--quick]

SYNTHETIC pump telemetry (seeded, simulated pumps; not recorded from real devices):
N devices ``bench/pumps/<i>`` each publishing ``{"t": <event time>, "temp": .., "vib": ..}``
round-robin, QoS 0, one reading per MQTT message.

(a) baseline: a bare paho-mqtt 2.x subscriber (QoS 0, ``bench/pumps/+``) that only counts.
(b) EdgeLoop: an ``edge_runtime.node.Node`` in this process with the N devices bound to their
    topics (QoS 0) and the pipeline device_input -> filter -> time_window(1s) -> aggregate(mean,max)
    -> custom_function -> filter; run with publish_telemetry true and false.

The publisher is a separate process (multiprocessing, fork) that writes pre-encoded MQTT 3.1.1
QoS 0 PUBLISH packets on a plain socket, paced in 2 ms ticks, so it costs the 2-core machine
as little CPU as possible; it is the same publisher for (a) and (b). Each step publishes at a
fixed rate for a few seconds; the ramp stops at the first failing step.

A step passes when no message is lost (received == sent, counted after a drain) and the
subscriber kept up (its receive rate, first to last message, >= 95% of the target rate, and the
publisher achieved >= 95% of the target). Loss = sent - received (b: sent - mqtt.accepted; bus
records and dead letters are reported too).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from edge_runtime import jsonio
from edge_runtime.mqtt.raw import RawPublisher, publish_packet
from edgeloop.devkit.broker import Mosquitto

try:
    from bench.common import SEED, T0, machine_facts, print_table, write_results
except Exception:  # pragma: no cover - common.py is written by another helper
    T0, SEED = 1_732_272_000.0, 20241122
    machine_facts = print_table = write_results = None  # type: ignore[assignment]

DATA_NOTE = "SYNTHETIC data: seeded simulated pump telemetry generated in bench/mqtt_e2e.py, not real devices"
N_DEVICES = 100
RATES = [5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000]
TARGET_RPS = 15_000
TARGET_RATIO = 0.60
KEEP_UP = 0.95
PIPELINE = {"name": "bench-mqtt", "product": "pump", "steps": [
    {"device_input": {}},
    {"filter": "temperature > 75"},
    {"time_window": {"size": "1s"}},
    {"aggregate": {"temperature": ["mean", "max"], "vibration": ["mean", "max"]}},
    {"custom_function": {"set": {"temp_f": "temperature_mean * 9 / 5 + 32"}}},
    {"filter": "vibration_max > 0.5"},
]}


# -- publisher process -------------------------------------------------------------------------
def _publisher_main(port: int, n_devices: int, conn: Any) -> None:
    """Child process: on (rate, seconds, t_event) pre-encode the messages, say ready, publish on 'go'."""
    pub = RawPublisher("127.0.0.1", port, client_id=f"bench-pub-{os.getpid()}", keepalive=60)
    if not pub._connect():
        raise RuntimeError(f"publisher cannot connect: {pub.last_error}")
    sock = pub.sock
    assert sock is not None
    rng = random.Random(SEED)
    level = [rng.uniform(72.0, 86.0) for _ in range(n_devices)]
    topics = [f"bench/pumps/{i}" for i in range(n_devices)]
    while True:
        cmd = conn.recv()
        if cmd is None:
            pub.close()
            return
        rate, seconds, t_event = cmd
        n = int(rate * seconds)
        packets = []
        for i in range(n):
            d = i % n_devices
            payload = jsonio.dumps({"t": round(t_event + i / rate, 6), "temp": round(level[d] + rng.gauss(0, 3), 3),
                                    "vib": round(rng.random(), 4)})
            packets.append(publish_packet(topics[d], payload))
        conn.send("ready")
        conn.recv()  # go
        sent = 0
        tick = 0.002
        t0 = time.perf_counter()
        while sent < n:
            due = min(n, int((time.perf_counter() - t0) * rate) + 1)
            if due > sent:
                sock.sendall(b"".join(packets[sent:due]))
                sent = due
            else:
                time.sleep(tick)
        elapsed = time.perf_counter() - t0
        conn.send((sent, elapsed))


class Publisher:
    def __init__(self, port: int, n_devices: int) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_publisher_main, args=(port, n_devices, child), daemon=True)
        self.proc.start()

    def prepare(self, rate: int, seconds: float, t_event: float) -> None:
        self.conn.send((rate, seconds, t_event))
        if not self.conn.poll(60) or self.conn.recv() != "ready":
            raise RuntimeError("publisher did not get ready")

    def go(self) -> None:
        self.conn.send("go")

    def result(self, timeout: float) -> tuple[int, float]:
        if not self.conn.poll(timeout):
            raise RuntimeError("publisher did not finish")
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()


# -- subscribers ---------------------------------------------------------------------------------
class BareCounter:
    """(a) paho 2.x subscriber that only counts (and notes first/last arrival)."""

    name = "baseline (bare paho counter)"

    def __init__(self, port: int) -> None:
        self.count = 0
        self.first = self.last = 0.0
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter", protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, *_: (cl.subscribe("bench/pumps/+", 0), self.ready.set())
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        if not self.ready.wait(10):
            raise RuntimeError("counter did not connect")
        time.sleep(0.3)  # let SUBACK land

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        if self.first == 0.0:
            self.first = now
        self.count += 1
        self.last = now

    def counters(self) -> dict[str, int]:
        return {"received": self.count, "accepted": self.count, "records": self.count}

    def reset_clock(self) -> None:
        self.first = self.last = 0.0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class EdgeNode:
    """(b) an EdgeLoop node; records/s is taken from node.bus.records_in, sampled every 5 ms."""

    def __init__(self, port: int, workdir: Path, publish_telemetry: bool, n_devices: int) -> None:
        from edge_runtime.node import Node, load_node_config
        self.name = f"EdgeLoop node (publish_telemetry={str(publish_telemetry).lower()})"
        cfg_path = write_node_config(workdir, port, publish_telemetry, n_devices)
        self.node = Node(load_node_config(cfg_path))
        self.node.start()
        if not (self.node.publisher.wait_connected(10) and self.node.connectors["mqtt"].link.wait_connected(10)):
            raise RuntimeError("node did not connect")
        time.sleep(0.5)  # subscriptions acknowledged
        self.first = self.last = 0.0
        self._base = 0
        self._stop = threading.Event()
        self._seen = self.node.bus.records_in
        self._mon = threading.Thread(target=self._monitor, daemon=True)
        self._mon.start()

    def _monitor(self) -> None:
        while not self._stop.wait(0.005):
            n = self.node.bus.records_in
            if n != self._seen:
                now = time.perf_counter()
                if self.first == 0.0:
                    self.first = now
                self.last = now
                self._seen = n

    def counters(self) -> dict[str, int]:
        n = self.node
        return {"received": n.connectors["mqtt"].received, "accepted": n.connectors["mqtt"].accepted, "records": n.bus.records_in,
                "dead_letters": n.dead_letters.total, "outputs": n.outputs_published}

    def reset_clock(self) -> None:
        self.first = self.last = 0.0

    def close(self) -> dict[str, Any]:
        self._stop.set()
        self._mon.join(2)
        stats = self.node.stats()
        self.node.stop()
        return stats


def write_node_config(tmp: Path, port: int, publish_telemetry: bool, n_devices: int) -> Path:
    """Like tests/edge/test_node.py write_config: products, devices bound to MQTT topics, one pipeline."""
    tmp.mkdir(parents=True, exist_ok=True)
    products = {"products": [{"name": "pump", "description": "synthetic benchmark pump",
                              "properties": {"temperature": {"type": "number", "unit": "degC", "min": -40, "max": 250},
                                             "vibration": {"type": "number", "unit": "mm/s", "min": 0, "max": 100}}}]}
    devices = {"devices": [{"id": f"pump-{i:03d}", "product": "pump", "connector": "mqtt",
                            "topic": f"bench/pumps/{i}", "qos": 0,
                            "mapping": {"temperature": "temp", "vibration": "vib"}, "ts_field": "t"}
                           for i in range(n_devices)]}
    (tmp / "products.yaml").write_text(yaml.safe_dump(products))
    (tmp / "devices.yaml").write_text(yaml.safe_dump(devices))
    (tmp / "pipelines").mkdir(exist_ok=True)
    (tmp / "pipelines" / "bench.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    cfg = {"node": "edge-bench", "broker": {"host": "127.0.0.1", "port": port},
           "store": {"path": "node.db"}, "products": ["products.yaml"], "devices": ["devices.yaml"],
           "pipelines": [{"instance": "bench", "pipeline": "pipelines/bench.yaml"}],
           "publish_telemetry": publish_telemetry, "stats_interval": 1}
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# -- the ramp --------------------------------------------------------------------------------------
def run_ramp(sub: Any, pub: Publisher, rates: list[int], seconds: float, t_event: float,
             deadline: float) -> tuple[list[dict[str, Any]], float]:
    steps = []
    for rate in rates:
        if time.monotonic() + seconds + 6 > deadline:
            print(f"  (stopping the ramp before {rate}/s: runtime bound)", flush=True)
            break
        pub.prepare(rate, seconds, t_event)
        before = sub.counters()
        sub.reset_clock()
        pub.go()
        sent, pub_elapsed = pub.result(seconds * 4 + 30)
        t_event += sent / rate + 2.0  # next step's event time starts later (closes the last windows)
        # drain: wait until the counters stop moving (or everything arrived)
        last_val, still_since = None, time.monotonic()
        drain_end = time.monotonic() + 15
        while time.monotonic() < drain_end:
            c = sub.counters()
            done = c["records"] - before["records"]
            if c["accepted"] - before["accepted"] >= sent and done >= c["accepted"] - before["accepted"]:
                break
            if c["records"] != last_val:
                last_val, still_since = c["records"], time.monotonic()
            elif time.monotonic() - still_since > 1.0:
                break
            time.sleep(0.02)
        time.sleep(0.05)
        after = sub.counters()
        delta = {k: after[k] - before.get(k, 0) for k in after}
        span = max(sub.last - sub.first, 1e-9)
        got = delta["records"]
        recv_rate = (got - 1) / span if got > 1 else 0.0
        loss = sent - delta["accepted"]
        pub_rate = sent / pub_elapsed
        ok = loss == 0 and delta["records"] == sent and recv_rate >= KEEP_UP * rate and pub_rate >= KEEP_UP * rate
        step = {"target_rate": rate, "sent": sent, "publish_rate": round(pub_rate), **delta, "loss": loss,
                "records_per_s": round(recv_rate), "seconds_first_to_last": round(span, 3),
                "lag_after_publisher_s": round(max(0.0, span - pub_elapsed), 3), "pass": ok}
        steps.append(step)
        print(f"  {rate:>6}/s  sent {sent:>7}  got {delta['records']:>7}  loss {loss:>6}  "
              f"{recv_rate:>8,.0f} rec/s  publisher {pub_rate:>8,.0f}/s  {'PASS' if ok else 'FAIL'}", flush=True)
        if not ok:
            break
    return steps, t_event


def best(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    passed = [s for s in steps if s["pass"]]
    return max(passed, key=lambda s: s["target_rate"]) if passed else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short steps (1.5 s each)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per rate step (default 4, quick 1.5)")
    ap.add_argument("--devices", type=int, default=N_DEVICES)
    ap.add_argument("--rates", type=str, default=None, help="comma-separated msg/s ladder")
    ap.add_argument("--budget", type=float, default=170.0, help="overall runtime bound, seconds")
    args = ap.parse_args(argv)
    seconds = args.seconds or (1.5 if args.quick else 4.0)
    rates = [int(r) for r in args.rates.split(",")] if args.rates else RATES
    deadline = time.monotonic() + args.budget - 10
    print(f"mqtt_e2e: {DATA_NOTE}; {args.devices} devices, QoS 0, {seconds:g} s per step, nproc {os.cpu_count()}",
          flush=True)
    results: dict[str, Any] = {}
    t_event = T0
    with Mosquitto() as broker, tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        broker_conf = broker.conf.read_text()
        pub = Publisher(broker.port, args.devices)
        try:
            runs = [("baseline", None), ("edgeloop_telemetry_on", True), ("edgeloop_telemetry_off", False)]
            for key, pt in runs:
                if pt is None:
                    sub: Any = BareCounter(broker.port)
                    name = sub.name
                else:
                    sub = EdgeNode(broker.port, Path(tmp) / key, pt, args.devices)
                    name = sub.name
                print(f"{name}:", flush=True)
                steps, t_event = run_ramp(sub, pub, rates, seconds, t_event, deadline)
                extra = sub.close()
                results[key] = {"subscriber": name, "steps": steps, "best": best(steps)}
                if isinstance(extra, dict):
                    results[key]["node_stats"] = {k: extra[k] for k in ("records", "mqtt", "dead_letters", "outputs")}
        finally:
            pub.close()

    base = results["baseline"]["best"]
    base_rate = base["records_per_s"] if base else 0
    base_ceiling = not results["baseline"]["steps"][-1]["pass"] if results["baseline"]["steps"] else False
    summary = []
    rows = []
    for key in ("baseline", "edgeloop_telemetry_on", "edgeloop_telemetry_off"):
        b = results[key]["best"]
        rate = b["records_per_s"] if b else 0
        ratio = rate / base_rate if base_rate and key != "baseline" else None
        steps_ = results[key]["steps"]
        zl = [s["target_rate"] for s in steps_ if s["loss"] == 0]
        entry = {"run": key, "highest_zero_loss_target": b["target_rate"] if b else 0, "records_per_s": rate,
                 "ratio_to_baseline": round(ratio, 3) if ratio is not None else None,
                 "highest_target_with_zero_loss_only": max(zl) if zl else 0,
                 "max_measured_records_per_s": max((s["records_per_s"] for s in steps_), default=0),
                 "total_loss": sum(s["loss"] for s in steps_)}
        if key != "baseline":
            entry["meets_15k"] = rate >= TARGET_RPS and bool(b)
            entry["meets_60pct"] = ratio is not None and ratio >= TARGET_RATIO
        summary.append(entry)
        first_fail = next((s for s in results[key]["steps"] if not s["pass"]), None)
        rows.append([results[key]["subscriber"], entry["highest_zero_loss_target"], rate,
                     entry["max_measured_records_per_s"], entry["total_loss"],
                     f"{ratio:.2f}" if ratio is not None else "-",
                     f"{first_fail['target_rate']}/s ({'loss' if first_fail['loss'] else 'fell behind'})"
                     if first_fail else "none (ladder top)"])
    payload = {
        "data_note": DATA_NOTE,
        "setup": {"devices": args.devices, "qos": 0, "one_reading_per_message": True, "seconds_per_step": seconds,
                  "rates": rates, "quick": args.quick, "pipeline": PIPELINE,
                  "publisher": "separate process (multiprocessing fork), pre-encoded MQTT 3.1.1 QoS 0 PUBLISH "
                               "packets on a raw socket, paced in 2 ms ticks",
                  "pass_rule": f"zero loss and receive rate >= {KEEP_UP:.0%} of target and publisher >= "
                               f"{KEEP_UP:.0%} of target",
                  "node_in_process": "the EdgeLoop node runs in the benchmark process (paho network thread, parser, "
                                     "bus, engine threads); telemetry republished at QoS 0 with no subscriber",
                  "baseline_ceiling_reached": base_ceiling},
        "broker": {"server": "mosquitto (edgeloop.devkit.broker.Mosquitto)", "max_queued_messages": 1_000_000,
                   "max_queued_bytes": 0, "max_inflight_messages": 1000, "persistence": False,
                   "config": broker_conf},
        "targets": {"records_per_s": TARGET_RPS, "ratio_to_baseline": TARGET_RATIO},
        "load_average_at_end": os.getloadavg(),
        "summary": summary, "runs": results,
    }
    if write_results is not None:
        path = write_results("mqtt_e2e", payload)
    else:
        import json
        path = Path(__file__).resolve().parent / "results" / "mqtt_e2e.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": "mqtt_e2e", "machine": {"nproc": os.cpu_count()}, **payload},
                                   indent=2) + "\n")
    print()
    headers = ["subscriber", "best passing target msg/s", "records/s", "max rec/s seen", "loss", "ratio to (a)",
               "first failing step"]
    if print_table is not None:
        print_table(rows, headers)
    else:
        for r in rows:
            print(r)
    if base_ceiling is False and results["baseline"]["steps"]:
        print("note: the baseline passed the whole ladder; its figure is a lower bound (ratios are upper bounds)")
    print(f"targets: EdgeLoop >= {TARGET_RPS:,} records/s with zero loss and >= {TARGET_RATIO:.0%} of the baseline")
    for e in summary[1:]:
        print(f"  {e['run']}: 15k {'met' if e['meets_15k'] else 'NOT met'}, "
              f"60% {'met' if e['meets_60pct'] else 'NOT met'}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
