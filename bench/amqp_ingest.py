"""AMQP devices into the Device Bus: readings/s consumed from RabbitMQ with manual acks by an in-process node.

    .venv/bin/python -m bench.amqp_ingest [--messages 100000]

SYNTHETIC meter readings, one JSON reading a message, published beforehand into a durable queue of the
machine's RabbitMQ (127.0.0.1:5672, guest/guest). The node (in this process, local store on) consumes with
prefetch 1000 and one multiple-ack per burst, after each burst is on the bus. Readings/s = messages / the
time from the first record on the bus to the queue being empty (every message acknowledged). Compare
with MQTT (bench/results/mqtt_e2e.json) and HTTP (http_push.json). Results: bench/results/amqp_ingest.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from bench.common import machine_facts, write_results
from edgeloop.devkit.broker import Mosquitto

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def main(argv: list[str] | None = None) -> int:
    import pika

    from edge_runtime.node import Node, load_node_config

    ap = argparse.ArgumentParser(prog="python -m bench.amqp_ingest", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    args = ap.parse_args(argv)
    queue = f"edgeloop-bench-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    for i in range(args.messages):
        ch.basic_publish("", queue, json.dumps({"p": (i % 900) + 0.5, "t": 1.8e9 + i * 0.01}).encode())
    with tempfile.TemporaryDirectory(prefix="edgeloop-amqp-") as tmp, Mosquitto() as broker:
        work = Path(tmp)
        (work / "products.yaml").write_text(yaml.safe_dump({"products": [
            {"name": "meter", "properties": {"power": {"type": "number"}}}]}))
        (work / "devices.yaml").write_text(yaml.safe_dump({"devices": [
            {"id": "m1", "product": "meter", "connector": "amqp", "queue": queue, "mapping": {"power": "p"},
             "ts_field": "t"}]}))
        (work / "p.yaml").write_text(yaml.safe_dump({"name": "all", "product": "meter", "steps": [
            {"device_input": {}}, {"filter": "power > 850"}]}))  # a few outputs: the bench is about ingest
        (work / "node.yaml").write_text(yaml.safe_dump({
            "node": "edge-amqp", "broker": {"host": "127.0.0.1", "port": broker.port}, "store": {"path": "n.db"},
            "products": ["products.yaml"], "devices": ["devices.yaml"],
            "pipelines": [{"instance": "all", "pipeline": "p.yaml"}], "publish_telemetry": False}))
        node = Node(load_node_config(work / "node.yaml"))
        node.start()
        try:
            deadline = time.monotonic() + 600
            while node.bus.records_in == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            t0 = time.monotonic()
            while ch.queue_declare(queue, passive=True).method.message_count > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            while node.bus.records_in < args.messages and time.monotonic() < deadline:
                time.sleep(0.01)
            took = time.monotonic() - t0
            got = node.bus.records_in
        finally:
            node.stop()
            ch.queue_delete(queue)
            conn.close()
    rate = round(got / took)
    print(f"AMQP: {got:,} of {args.messages:,} readings on the bus, every message acknowledged, in {took:.2f} s: "
          f"{rate:,} readings/s")
    write_results("amqp_ingest", {"note": "SYNTHETIC meter readings generated in bench/amqp_ingest.py",
                                  "machine": machine_facts(), "messages": args.messages, "on_the_bus": got,
                                  "seconds": round(took, 3), "readings_per_s": rate})
    return 0


if __name__ == "__main__":
    sys.exit(main())
