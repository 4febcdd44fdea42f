"""HTTP devices into the Device Bus: readings/s pushed over kept-alive connections to a node process.

    .venv/bin/python -m bench.http_push [--seconds 5]

SYNTHETIC meter readings. A node process (``edgeloop node run``, its local store on, a pipeline taking every
record) binds 10 HTTP devices; a client process POSTs to ``/devices/<id>/telemetry`` over one kept-alive
connection per sender, one reading a request and then 100 a request, as fast as the node answers (202
after each reading is checked and on the bus). Readings/s = records the node counted on its bus (its
/metrics) / seconds. Compare with the MQTT figure (bench/results/mqtt_e2e.json). Results:
bench/results/http_push.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.common import machine_facts, write_results
from edge_runtime.ports import free_port
from edgeloop.devkit.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 10


def _sender(port: int, batch: int, seconds: float, senders: int, index: int, conn: Any) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench-token"}
    sent, i, t0 = 0, 0, time.time()
    while time.time() - t0 < seconds:
        dev = f"m{(i * senders + index) % DEVICES}"
        body = [{"p": (i % 500) + 0.5, "t": t0 + i * 0.001}] * batch if batch > 1 else {"p": (i % 500) + 0.5}
        c.request("POST", f"/devices/{dev}/telemetry", body=json.dumps(body), headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 202:
            raise RuntimeError(f"node answered {r.status}")
        sent += batch
        i += 1
    conn.send(sent)


def records(mport: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    for ln in text.splitlines():
        if ln.startswith("edgeloop_node_records_total{"):
            return float(ln.rsplit(" ", 1)[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.http_push", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeloop-http-") as tmp, Mosquitto() as broker:
        work = Path(tmp)
        (work / "products.yaml").write_text(yaml.safe_dump({"products": [
            {"name": "meter", "properties": {"power": {"type": "number"}}}]}))
        (work / "devices.yaml").write_text(yaml.safe_dump({"devices": [
            {"id": f"m{i}", "product": "meter", "connector": "http", "mapping": {"power": "p"}} for i in range(DEVICES)]}))
        (work / "p.yaml").write_text(yaml.safe_dump({"name": "all", "product": "meter", "steps": [
            {"device_input": {}}, {"filter": "power > 0"}]}))
        hport, mport = free_port(), free_port()
        (work / "node.yaml").write_text(yaml.safe_dump({
            "node": "edge-http", "broker": {"host": "127.0.0.1", "port": broker.port}, "store": {"path": "n.db"},
            "products": ["products.yaml"], "devices": ["devices.yaml"], "pipelines": [{"instance": "all", "pipeline": "p.yaml"}],
            "publish_telemetry": False, "http": {"port": hport, "token_env": "BENCH_HTTP_TOKEN"},
            "metrics": {"port": mport}}))
        node = subprocess.Popen([sys.executable, "-m", "edgeloop", "node", "run", "--config", str(work / "node.yaml")],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_HTTP_TOKEN": "bench-token"},
                                stdout=subprocess.DEVNULL, stderr=open(work / "node.log", "wb"))  # noqa: SIM115
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    records(mport)
                    break
                except OSError:
                    if time.monotonic() > deadline or node.poll() is not None:
                        raise RuntimeError((work / "node.log").read_text()[-2000:]) from None
                    time.sleep(0.2)
            ctx = mp.get_context("fork")
            for batch, senders in ((1, 1), (1, 4), (100, 1), (100, 4)):
                before = records(mport)
                pipes, procs = [], []
                t0 = time.monotonic()
                for k in range(senders):
                    a, b = ctx.Pipe()
                    p = ctx.Process(target=_sender, args=(hport, batch, args.seconds, senders, k, b), daemon=True)
                    p.start()
                    pipes.append(a)
                    procs.append(p)
                sent = sum(a.recv() for a in pipes)
                for p in procs:
                    p.join(10)
                took = time.monotonic() - t0
                while records(mport) - before < sent and time.monotonic() - t0 < took + 10:
                    time.sleep(0.05)
                got = records(mport) - before
                row = {"readings_per_request": batch, "connections": senders, "sent": sent, "on_the_bus": int(got),
                       "readings_per_s": round(got / took), "requests_per_s": round(sent / batch / took)}
                results.append(row)
                print(f"  {batch:>3} a request, {senders} kept-alive connection(s): {row['readings_per_s']:>8,} "
                      f"readings/s ({row['requests_per_s']:,} requests/s), {int(got):,}/{sent:,} on the bus", flush=True)
        finally:
            node.terminate()
            node.wait(30)
    write_results("http_push", {"note": "SYNTHETIC meter readings generated in bench/http_push.py",
                                "machine": machine_facts(), "seconds": args.seconds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
