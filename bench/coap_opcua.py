"""CoAP and OPC UA devices into the Device Bus: readings/s taken by a node on one core.

    .venv/bin/python -m bench.coap_opcua [--seconds 5]

SYNTHETIC meter readings. The node runs in this process, pinned to CPU 0 (its local store on, a pipeline
taking every record); the devices run in a child process pinned to CPU 1, so the node's figure is what one
core takes:

- CoAP push: the child POSTs confirmable requests to the node's ``/devices/<id>/telemetry`` (10 devices,
  32 requests in flight), 1 reading a request, then 10 (a payload within one CoAP block: aiocoap's server
  refuses concurrent blockwise uploads from one client to one resource).
- CoAP observe: the child serves 10 observable resources and notifies as fast as it can; the node
  observes them.
- OPC UA subscription: the child is an asyncua server writing 100 Double variables of 10 devices as fast
  as it can; the node subscribes (publishing interval 50 ms, queue 100 per item).
- OPC UA poll: the node reads the same 100 variables every 10 ms (one Read of 100 nodes = 10 records).

Readings/s = records the node counted on its bus / seconds of the measured window; the node's CPU seconds
in the window (all its threads) give its utilisation and readings per CPU-second: where the node is not
busy, the device side is the limit. Compare with MQTT
(bench/results/mqtt_e2e.json), HTTP (http_push.json) and AMQP (amqp_ingest.json). Results:
bench/results/coap_opcua.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import machine_facts, write_results
from edge_runtime.ports import free_port
from edgeloop.devkit.broker import Mosquitto

DEVICES = 10
VARS = 10  # OPC UA variables per device


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {cpu})


# -- the device side (child process) -----------------------------------------------------------------------
def _coap_push_client(port: int, batch: int, seconds: float, out: Any) -> None:
    _pin(1)

    async def run() -> int:
        import aiocoap

        ctx = await aiocoap.Context.create_client_context()
        sent = 0
        stop = time.monotonic() + seconds

        async def worker(w: int) -> None:
            nonlocal sent
            i = 0
            while time.monotonic() < stop:
                dev = f"c{(w + i) % DEVICES}"
                body = [{"p": float((i + k) % 900)} for k in range(batch)] if batch > 1 else {"p": float(i % 900)}
                msg = aiocoap.Message(code=aiocoap.POST, payload=json.dumps(body).encode(), content_format=50,
                                      uri=f"coap://127.0.0.1:{port}/devices/{dev}/telemetry?token=bench")
                r = await ctx.request(msg).response
                if r.code.is_successful():
                    sent += batch
                i += 1

        await asyncio.gather(*(worker(w) for w in range(32)))
        await ctx.shutdown()
        return sent

    out.send(asyncio.run(run()))


def _coap_observe_server(port: int, ready: Any, stop: Any) -> None:
    _pin(1)

    async def run() -> None:
        import aiocoap
        from aiocoap import resource

        class Meter(resource.ObservableResource):
            def __init__(self) -> None:
                super().__init__()
                self.i = 0

            async def render_get(self, request: Any) -> Any:
                return aiocoap.Message(payload=b'{"p": %d}' % (self.i % 900), content_format=50)

        site = resource.Site()
        meters = [Meter() for _ in range(DEVICES)]
        for k, m in enumerate(meters):
            site.add_resource(["m", str(k)], m)
        ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        ready.set()
        while not stop.is_set():
            for m in meters:
                m.i += 1
                m.updated_state()
            await asyncio.sleep(0)
        await ctx.shutdown()

    asyncio.run(run())


def _opcua_server(port: int, ready: Any, stop: Any, writes: Any) -> None:
    _pin(1)

    async def run() -> None:
        from asyncua import Server, ua

        srv = Server()
        await srv.init()
        srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
        srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await srv.register_namespace("urn:edgeloop:bench")
        nodes = []
        for d in range(DEVICES):
            obj = await srv.nodes.objects.add_object(ua.NodeId(f"M{d}", idx), f"{idx}:M{d}")
            for v in range(VARS):
                nodes.append(await obj.add_variable(ua.NodeId(f"M{d}.V{v}", idx), f"{idx}:V{v}", 0.0))
        async with srv:
            ready.set()
            n = 0
            while not stop.is_set():
                n += 1
                for node in nodes:  # a local write: the server's own fast path
                    await srv.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(float(n % 900))))
                writes.value = n * len(nodes)
                await asyncio.sleep(0)

    asyncio.run(run())


# -- the node side ---------------------------------------------------------------------------------------
def _node(work: Path, broker: int, devices: list[dict[str, Any]], **extra: Any) -> Any:
    from edge_runtime.node import Node, load_node_config

    (work / "products.yaml").write_text(yaml.safe_dump({"products": [
        {"name": "meter", "properties": {"p": {"type": "number"}, **{f"v{v}": {"type": "number"}
                                                                     for v in range(VARS)}}}]}))
    (work / "devices.yaml").write_text(yaml.safe_dump({"devices": devices}))
    (work / "p.yaml").write_text(yaml.safe_dump({"name": "all", "product": "meter", "steps": [{"device_input": {}}]}))
    (work / "node.yaml").write_text(yaml.safe_dump({
        "node": "edge-bench", "broker": {"host": "127.0.0.1", "port": broker}, "store": {"path": "n.db"},
        "products": ["products.yaml"], "devices": ["devices.yaml"],
        "pipelines": [{"instance": "all", "pipeline": "p.yaml"}], "publish_telemetry": False, **extra}))
    return Node(load_node_config(work / "node.yaml"))


def _window(node: Any, seconds: float, warmup: float = 1.0) -> tuple[int, float, float]:
    """Records on the bus, seconds, and the node process's CPU seconds (every thread) in the window."""
    time.sleep(warmup)  # a benchmark's measuring window, not synchronisation
    n0, t0, c0 = node.bus.records_in, time.monotonic(), time.process_time()
    time.sleep(seconds)
    return node.bus.records_in - n0, time.monotonic() - t0, time.process_time() - c0


def _rates(got: int, took: float, cpu: float) -> dict[str, Any]:
    return {"readings_per_s": round(got / took), "node_cpu_share": round(cpu / took, 2),
            "readings_per_node_cpu_s": round(got / cpu) if cpu > 0 else None}


def coap_push(work: Path, broker: int, seconds: float, batch: int) -> dict[str, Any]:
    os.environ["BENCH_COAP_TOKEN"] = "bench"  # noqa: S105 - a token for this run only
    port = free_port()
    node = _node(work, broker, [{"id": f"c{d}", "product": "meter", "connector": "coap", "mode": "push"}
                                for d in range(DEVICES)], coap={"port": port, "token_env": "BENCH_COAP_TOKEN"})
    node.start()
    try:
        rx, tx = mp.Pipe(duplex=False)
        p = mp.Process(target=_coap_push_client, args=(port, batch, seconds + 1.0, tx))
        p.start()
        got, took, cpu = _window(node, seconds)
        sent = rx.recv()
        p.join(30)
    finally:
        node.stop()
    return {"connector": "coap", "mode": "push", "readings_per_request": batch, "in_flight": 32,
            "client_acknowledged": sent, **_rates(got, took, cpu)}


def coap_observe(work: Path, broker: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    ready, stop = mp.Event(), mp.Event()
    p = mp.Process(target=_coap_observe_server, args=(port, ready, stop))
    p.start()
    ready.wait(30)
    node = _node(work, broker, [{"id": f"c{d}", "product": "meter", "connector": "coap",
                                 "uri": f"coap://127.0.0.1:{port}/m/{d}"} for d in range(DEVICES)])
    node.start()
    try:
        got, took, cpu = _window(node, seconds)
    finally:
        node.stop()
        stop.set()
        p.join(30)
    return {"connector": "coap", "mode": "observe", "devices": DEVICES, **_rates(got, took, cpu)}


def opcua(work: Path, broker: int, seconds: float, mode: str) -> dict[str, Any]:
    port = free_port()
    ready, stop, writes = mp.Event(), mp.Event(), mp.Value("q", 0)
    p = mp.Process(target=_opcua_server, args=(port, ready, stop, writes))
    p.start()
    ready.wait(60)
    endpoint = f"opc.tcp://127.0.0.1:{port}/bench/"
    node = _node(work, broker, [{"id": f"m{d}", "product": "meter", "connector": "opcua", "endpoint": endpoint,
                                 "mode": mode, "interval": "50ms" if mode == "subscribe" else "10ms",
                                 "nodes": {f"v{v}": f"ns=2;s=M{d}.V{v}" for v in range(VARS)}}
                                for d in range(DEVICES)])
    node.start()
    try:
        deadline = time.monotonic() + 30
        while node.bus.records_in == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        w0 = writes.value
        got, took, cpu = _window(node, seconds)
        written = writes.value - w0
        errors = node.connectors["opcua"].stats()[0]["errors"]
    finally:
        node.stop()
        stop.set()
        p.join(30)
    return {"connector": "opcua", "mode": mode, "devices": DEVICES, "variables": DEVICES * VARS,
            **_rates(got, took, cpu), "values_per_record": 1 if mode == "subscribe" else VARS,
            "values_per_s": round(got / took) * (1 if mode == "subscribe" else VARS),
            "server_writes_per_s": round(written / took), "errors": errors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.coap_opcua", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    mp.set_start_method("spawn", force=True)
    _pin(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeloop-proto-") as tmp, Mosquitto() as broker:
        for name, run in [("coap push 1", lambda w: coap_push(w, broker.port, args.seconds, 1)),
                          ("coap push 10", lambda w: coap_push(w, broker.port, args.seconds, 10)),
                          ("coap observe", lambda w: coap_observe(w, broker.port, args.seconds)),
                          ("opcua subscribe", lambda w: opcua(w, broker.port, args.seconds, "subscribe")),
                          ("opcua poll", lambda w: opcua(w, broker.port, args.seconds, "poll"))]:
            work = Path(tmp) / name.replace(" ", "-")
            work.mkdir()
            r = run(work)
            results.append(r)
            print(f"{name:16s} {r['readings_per_s']:>8,} readings/s  {json.dumps(r)}", flush=True)
    write_results("coap_opcua", {"note": "SYNTHETIC meter readings generated in bench/coap_opcua.py; node on CPU 0, "
                                         "devices on CPU 1", "machine": machine_facts(), "seconds": args.seconds,
                                 "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
