"""Soak: an EdgeLoop node at 5,000 records/s for 10 minutes; its memory over time, and nothing lost.

    .venv/bin/python -m bench.soak [--seconds 600] [--rate 5000]

SYNTHETIC pump telemetry (100 devices, ``{"t", "temp", "vib"}``, QoS 0) from a publisher process that
encodes and paces messages as it goes, into a real Mosquitto and ``edgeloop node run`` (its own process),
which stores every record locally (SQLite, bounded to 1,000,000 rows: the bound is reached and kept
during the run) and runs device_input -> filter -> 1 s window -> mean/max -> custom_function, publishing
its outputs. The node's RSS (/proc/<pid>/status) is sampled every 10 s; growth is measured from the
sample at 60 s (imports, caches and the store's first pages done) to the last. Its counters come from
its own /metrics endpoint. Target (issue 7): RSS growth < 10% over the 10 minutes, nothing lost.
Results: bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.common import SEED, machine_facts, write_results
from edge_runtime import jsonio
from edge_runtime.mqtt.raw import RawPublisher, publish_packet
from edge_runtime.ports import free_port
from edgeloop.devkit.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
N_DEVICES = 100


def _publisher(port: int, rate: int, seconds: float, conn: Any) -> None:
    pub = RawPublisher("127.0.0.1", port, client_id=f"soak-pub-{os.getpid()}", keepalive=60)
    if not pub._connect():
        raise RuntimeError(f"publisher cannot connect: {pub.last_error}")
    rng = random.Random(SEED)
    level = [rng.uniform(72.0, 86.0) for _ in range(N_DEVICES)]
    topics = [f"bench/pumps/{i}" for i in range(N_DEVICES)]
    sent, t0 = 0, time.time()
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.time() - t0) * rate) + 1)
        if due > sent:
            pub.sock.sendall(b"".join(
                publish_packet(topics[i % N_DEVICES], jsonio.dumps({
                    "t": round(t0 + i / rate, 6), "temp": round(level[i % N_DEVICES] + rng.gauss(0, 3), 3),
                    "vib": round(rng.random(), 4)})) for i in range(sent, due)))
            sent = due
        else:
            time.sleep(0.002)
    conn.send((sent, time.time() - t0))
    pub.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln and ln[0] != "#"}


def main(argv: list[str] | None = None) -> int:
    import subprocess

    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=int, default=5000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeloop-soak-") as tmp, Mosquitto() as broker:
        work = Path(tmp)
        (work / "products.yaml").write_text(yaml.safe_dump({"products": [{"name": "pump", "properties": {
            "temperature": {"type": "number"}, "vibration": {"type": "number"}}}]}))
        (work / "devices.yaml").write_text(yaml.safe_dump({"devices": [
            {"id": f"pump-{i:03d}", "product": "pump", "connector": "mqtt", "topic": f"bench/pumps/{i}", "qos": 0,
             "mapping": {"temperature": "temp", "vibration": "vib"}, "ts_field": "t"} for i in range(N_DEVICES)]}))
        (work / "p.yaml").write_text(yaml.safe_dump({"name": "soak", "product": "pump", "steps": [
            {"device_input": {}}, {"filter": "temperature > 75"}, {"time_window": {"size": "1s"}},
            {"aggregate": {"temperature": ["mean", "max"], "vibration": ["mean", "max"]}},
            {"custom_function": {"set": {"score": "0.3 * (temperature_mean - 80) + 2 * vibration_max - 1"}}}]}))
        mport = free_port()
        (work / "node.yaml").write_text(yaml.safe_dump({
            "node": "edge-soak", "broker": {"host": "127.0.0.1", "port": broker.port},
            "store": {"path": "node.db", "max_rows": 1_000_000}, "products": ["products.yaml"],
            "devices": ["devices.yaml"], "pipelines": [{"instance": "soak", "pipeline": "p.yaml"}],
            "publish_telemetry": False, "metrics": {"port": mport}}))
        log = open(work / "node.log", "wb")  # noqa: SIM115
        node = subprocess.Popen([sys.executable, "-m", "edgeloop", "node", "run", "--config",
                                 str(work / "node.yaml")], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if metrics(mport).get('edgeloop_node_mqtt_connected{node="edge-soak"}') == 1:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or node.poll() is not None:
                    raise RuntimeError("the node did not start: " + (work / "node.log").read_text()[-2000:])
                time.sleep(0.2)
            time.sleep(1.0)
            ctx = mp.get_context("fork")
            a, b = ctx.Pipe()
            pub = ctx.Process(target=_publisher, args=(broker.port, args.rate, args.seconds, b), daemon=True)
            t0 = time.monotonic()
            pub.start()
            samples = []
            while pub.is_alive() or not a.poll():
                el = time.monotonic() - t0
                m = metrics(mport)
                samples.append({"t_s": round(el, 1), "rss_kib": rss_kib(node.pid),
                                "records": m.get('edgeloop_node_records_total{node="edge-soak"}'),
                                "queue": sum(v for k, v in m.items() if k.startswith("edgeloop_node_queue_depth"))})
                print(f"  {el:6.0f} s  rss {samples[-1]['rss_kib'] / 1024:7.1f} MiB  records {samples[-1]['records']:,.0f}",
                      flush=True)
                if a.poll(10):
                    break
            sent, pub_s = a.recv()
            end = time.monotonic() + 30
            while time.monotonic() < end:
                m = metrics(mport)
                if m.get('edgeloop_node_mqtt_received_total{node="edge-soak"}', 0) >= sent:
                    break
                time.sleep(0.5)
            m = metrics(mport)
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_kib": rss_kib(node.pid),
                            "records": m.get('edgeloop_node_records_total{node="edge-soak"}'), "queue": 0})
        finally:
            node.terminate()
            node.wait(30)
    base = next((s for s in samples if s["t_s"] >= 60), samples[0])
    last = samples[-1]
    growth = (last["rss_kib"] - base["rss_kib"]) / base["rss_kib"]
    received = m.get('edgeloop_node_mqtt_received_total{node="edge-soak"}', 0)
    records = m.get('edgeloop_node_records_total{node="edge-soak"}', 0)
    dead = sum(v for k, v in m.items() if k.startswith("edgeloop_node_dead_letters_total"))
    summary = {"seconds": args.seconds, "rate": args.rate, "sent": sent, "publisher_rate": round(sent / pub_s),
               "received": received, "records": records, "dead_letters": dead, "lost": sent - received,
               "rss_mib_at_60s": round(base["rss_kib"] / 1024, 1), "rss_mib_end": round(last["rss_kib"] / 1024, 1),
               "rss_mib_max": round(max(s["rss_kib"] for s in samples) / 1024, 1),
               "rss_growth": round(growth, 4), "target": "RSS growth < 10% over the run, lost 0"}
    print(f"soak: {summary}")
    write_results("soak", {"note": "SYNTHETIC pump telemetry generated in bench/soak.py", "machine": machine_facts(),
                           "summary": summary, "samples": samples})
    return 0


if __name__ == "__main__":
    sys.exit(main())
