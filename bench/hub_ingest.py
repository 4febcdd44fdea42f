"""Hub ingest throughput: records/s the hub stores from 100 simulated nodes through Mosquitto.

    .venv/bin/python -m bench.hub_ingest [--quick] [--records 200000] [--batches 100,500]
                                         [--dbs sqlite,postgres] [--profile]

SYNTHETIC records (seeded simulated pumps; not recorded from real devices).

Set-up per run: a fresh hub database (``hub.db.make_engine`` + ``migrate``; SQLite in a temporary
folder, or a fresh PostgreSQL database at 127.0.0.1:5432, dropped after) holding the 100 nodes,
one Mosquitto (``edgeloop.devkit.broker.Mosquitto``), the ingest as its own process
(``python -m edgeloop hub ingest --db URL --broker 127.0.0.1:PORT``), and a load generator
process that plays the 100 nodes' uplinks with the real protocol: one MQTT connection per node
(client id ``<node>-uplink``), subscribed to ``edgeloop/<node>/uplink/ack`` (QoS 1); each node
publishes ``{"first", "last", "items": [...]}`` to ``edgeloop/<node>/uplink`` at QoS 1 and waits for
the ack of that batch before it sends the next (stop-and-wait, like ``edge_runtime.uplink.Uplink``;
resent after ``--ack-timeout`` without an ack). Items are what the ``upload`` operator puts in a
node's outbox (id, kind, device, seq, ts, instance, pipeline, step, record with three floats).

The generator is a single asyncio process with a minimal MQTT 3.1.1 client on raw streams and
pre-encoded payloads, so it takes as little of the 2-core machine as possible.

Figure: records/s = records stored / (last ack received - first batch sent), and the check: the
``uploads`` table holds exactly every record once (count, distinct ids, per node) and the acks say
the same. ``--profile`` adds one run per batch size with the ingest under cProfile (every thread)
and puts the hot spots in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import SEED, T0, print_table, write_results
from edge_runtime.mqtt.raw import _utf8, _varint
from edgeloop.devkit.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
DATA_NOTE = ("SYNTHETIC data: seeded simulated pump records generated in bench/hub_ingest.py "
             "(the upload operator's item format), not real devices")
TARGET_SQLITE = 20_000
N_NODES = 100
N_RECORDS = 200_000
DEVICES_PER_NODE = 10


# -- a minimal asyncio MQTT 3.1.1 client (QoS 1 publish, QoS 1 subscribe) ------------------------------
class AsyncMqtt:
    """One MQTT connection on asyncio streams: CONNECT, SUBSCRIBE, PUBLISH QoS 1, PUBACK what arrives."""

    def __init__(self, client_id: str, on_publish: Any = None) -> None:
        self.client_id = client_id
        self.on_publish = on_publish
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._pid = 0
        self.pubacks = 0
        self._task: asyncio.Task[None] | None = None

    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _read(self) -> tuple[int, bytes]:
        assert self.reader is not None
        hdr = (await self.reader.readexactly(1))[0]
        n, mult = 0, 1
        while True:
            c = (await self.reader.readexactly(1))[0]
            n += (c & 127) * mult
            mult *= 128
            if c < 128:
                break
        return hdr, (await self.reader.readexactly(n) if n else b"")

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port, limit=1 << 22)
        vh = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 0)  # 3.1.1, clean session, no keepalive
        payload = _utf8(self.client_id)
        self.writer.write(b"\x10" + _varint(len(vh) + len(payload)) + vh + payload)
        hdr, body = await self._read()
        if hdr >> 4 != 2 or body[1] != 0:
            raise RuntimeError(f"{self.client_id}: CONNACK {body!r}")

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        assert self.writer is not None
        body = struct.pack(">H", self._next_pid()) + _utf8(topic) + bytes([qos])
        self.writer.write(b"\x82" + _varint(len(body)) + body)
        hdr, sub = await self._read()
        if hdr >> 4 != 9 or sub[-1] & 0x80:
            raise RuntimeError(f"{self.client_id}: SUBACK {sub!r}")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self.writer is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            while True:
                hdr, body = await self._read()
                kind = hdr >> 4
                if kind == 3:  # PUBLISH
                    qos = (hdr >> 1) & 3
                    tl = struct.unpack_from(">H", body)[0]
                    topic, pos = body[2:2 + tl], 2 + tl
                    if qos:
                        self.writer.write(b"\x40\x02" + body[pos:pos + 2])
                        pos += 2
                    if self.on_publish is not None:
                        self.on_publish(topic, body[pos:])
                elif kind == 4:  # PUBACK of our QoS 1 publish
                    self.pubacks += 1

    async def publish(self, topic: bytes, payload: bytes) -> None:
        assert self.writer is not None
        head = _utf8(topic) + struct.pack(">H", self._next_pid())
        self.writer.write(b"\x32" + _varint(len(head) + len(payload)) + head)
        self.writer.write(payload)
        await self.writer.drain()

    async def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.write(b"\xe0\x00")
                await self.writer.drain()
                self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


# -- the simulated nodes -------------------------------------------------------------------------------
def node_names(n: int) -> list[str]:
    return [f"edge-{i:03d}" for i in range(n)]


def make_batches(node: str, n_records: int, batch: int, devices: int, rng: random.Random) -> list[tuple[int, int, bytes]]:
    """A node's outbox as uplink messages: (first, last, payload); items as the upload operator makes them."""
    seqs = [0] * devices
    level = [rng.uniform(72.0, 86.0) for _ in range(devices)]
    out = []
    outbox_seq = 0
    for start in range(0, n_records, batch):
        items = []
        for k in range(start, min(n_records, start + batch)):
            d = k % devices
            seqs[d] += 1
            device = f"pump-{d:02d}"
            ts = round(T0 + k * 0.01, 6)
            rec = {"device": device, "product": "pump", "ts": ts,
                   "values": {"temperature": round(level[d] + rng.gauss(0, 3), 3),
                              "vibration": round(rng.random(), 4), "pressure": round(rng.uniform(2.0, 6.0), 3)}}
            items.append({"kind": "record", "pipeline": "upload-all", "instance": "all", "step": "2:upload",
                          "device": device, "ts": ts, "record": rec, "id": f"{rng.getrandbits(128):032x}",
                          "seq": seqs[d]})
        first, last = outbox_seq + 1, outbox_seq + len(items)
        outbox_seq = last
        out.append((first, last, orjson.dumps({"first": first, "last": last, "items": items})))
    return out


async def _generate(port: int, plan: dict[str, Any], conn: Any) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(SEED)
    names = node_names(plan["nodes"])
    per_node = plan["records"] // plan["nodes"]
    batches = {n: make_batches(n, per_node, plan["batch"], plan["devices"], rng) for n in names}
    payload_bytes = sum(len(p) for b in batches.values() for _, _, p in b)
    waiting: dict[str, tuple[tuple[int, int], asyncio.Future[dict[str, Any]]]] = {}

    def on_ack(topic: bytes, payload: bytes) -> None:
        node = topic.decode().split("/")[1]
        w = waiting.get(node)
        if w is None:
            return
        ack = orjson.loads(payload)
        if (ack.get("first"), ack.get("last")) == w[0] and not w[1].done():
            w[1].set_result(ack)

    clients = {n: AsyncMqtt(f"{n}-uplink", on_ack) for n in names}
    for n, c in clients.items():
        await c.connect("127.0.0.1", port)
        await c.subscribe(f"edgeloop/{n}/uplink/ack", 1)
        c.start()
    conn.send(("ready", payload_bytes))
    await loop.run_in_executor(None, conn.recv)  # go

    latencies: list[float] = []
    resent = 0
    stored = rejected = 0
    last_ack = 0.0

    async def run_node(node: str) -> None:
        nonlocal resent, stored, rejected, last_ack
        c = clients[node]
        topic = f"edgeloop/{node}/uplink".encode()
        for first, last, payload in batches[node]:
            t_send = time.perf_counter()
            while True:
                fut: asyncio.Future[dict[str, Any]] = loop.create_future()
                waiting[node] = ((first, last), fut)
                await c.publish(topic, payload)
                try:
                    ack = await asyncio.wait_for(fut, plan["ack_timeout"])
                    break
                except TimeoutError:
                    resent += 1
            now = time.perf_counter()
            latencies.append(now - t_send)
            stored += ack.get("stored", 0)
            rejected += len(ack.get("rejected") or [])
            last_ack = max(last_ack, now)

    t0 = time.perf_counter()
    await asyncio.gather(*(run_node(n) for n in names))
    elapsed = last_ack - t0
    for c in clients.values():
        await c.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else 0.0

    conn.send({"elapsed": elapsed, "batches": len(latencies), "resent": resent, "acked_stored": stored,
               "acked_rejected": rejected, "batch_latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
                                                                "max": round(latencies[-1] * 1000, 2) if latencies else 0},
               "payload_bytes": payload_bytes})


def _generator_main(port: int, plan: dict[str, Any], conn: Any) -> None:
    asyncio.run(_generate(port, plan, conn))


# -- the ingest under cProfile (every thread) ------------------------------------------------------------
def ingest_worker(db: str, broker: str, profile_out: str) -> None:
    """Like ``edgeloop hub ingest`` (hub.runner.run_ingest), with every thread profiled; stats go to a file."""
    from bench import profiling

    profiling.install(main_thread=False)
    from hub.db import make_engine, migrate
    from hub.ingest import Ingest

    engine = make_engine(db)
    migrate(engine)
    host, _, port = broker.rpartition(":")
    worker = Ingest(engine, host=host, port=int(port)).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    worker.stop()
    Path(profile_out).write_bytes(orjson.dumps(profiling.summary()))


# -- one run -----------------------------------------------------------------------------------------------
class StatusWatch:
    """Subscribed to edgeloop/hub/status: an ingest announces itself there once it has subscribed."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.seen = threading.Event()
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-status-{os.getpid()}")
        c.on_connect = lambda cl, *_: cl.subscribe("edgeloop/hub/status", 1)
        c.on_subscribe = lambda *_: self.ready.set()
        c.on_message = lambda *_: self.seen.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        if not self.ready.wait(10):
            raise RuntimeError("status watcher could not subscribe")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _cpu(pid: int) -> float:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:  # noqa: BLE001 - gone, or no psutil
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0


def make_database(kind: str, tmp: Path, n_nodes: int) -> tuple[str, Any]:
    """A fresh, migrated hub database with the nodes; returns (url, the PgDatabase to drop or None)."""
    import sqlalchemy as sa

    from hub.db import Node, make_engine, migrate

    pg = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp}/hub.db"
    else:
        from edgeloop.devkit.postgres import PgDatabase

        pg = PgDatabase()
        url = pg.url
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as c:
        c.execute(sa.insert(Node), [{"name": n, "group": "default", "created_at": time.time(), "heartbeats": 0}
                                    for n in node_names(n_nodes)])
    engine.dispose()
    return url, pg


def verify(url: str, expected_per_node: int, n_nodes: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from hub.db import Upload, make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as c:
            rows, distinct = c.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(Upload.id)))).one()
            per_node = dict(c.execute(sa.select(Upload.node, sa.func.count()).group_by(Upload.node)).all())
            seq_ok = c.execute(sa.text(
                "SELECT count(*) FROM (SELECT node, device, count(*) AS n, min(seq) AS lo, max(seq) AS hi "
                "FROM uploads GROUP BY node, device) g WHERE n = hi AND lo = 1")).scalar_one()
    finally:
        engine.dispose()
    expected = expected_per_node * n_nodes
    return {"rows": rows, "distinct_ids": distinct, "expected": expected, "lost": expected - distinct,
            "duplicates": rows - distinct, "nodes_complete": sum(1 for v in per_node.values() if v == expected_per_node),
            "device_streams_complete": seq_ok,
            "ok": rows == distinct == expected and len(per_node) == n_nodes
                  and all(v == expected_per_node for v in per_node.values())}


def run_one(broker: Mosquitto, db_kind: str, batch: int, args: argparse.Namespace, *, profile: bool = False) -> dict[str, Any]:
    label = f"{db_kind} batch {batch}" + (" (ingest under cProfile)" if profile else "")
    print(f"-- {label}: {args.records:,} records from {args.nodes} nodes", flush=True)
    plan = {"nodes": args.nodes, "records": args.records, "batch": batch, "devices": args.devices,
            "ack_timeout": args.ack_timeout}
    with tempfile.TemporaryDirectory(prefix="edgeloop-hub-ingest-") as tmpd:
        tmp = Path(tmpd)
        url, pg = make_database(db_kind, tmp, args.nodes)
        ctx = mp.get_context("fork")
        conn, child = ctx.Pipe()
        gen = ctx.Process(target=_generator_main, args=(broker.port, plan, child), daemon=True)
        gen.start()
        watch = StatusWatch(broker.port)
        prof_out = tmp / "profile.json"
        if profile:
            cmd = [sys.executable, "-m", "bench.hub_ingest", "--ingest-worker", "--db", url,
                   "--broker", f"127.0.0.1:{broker.port}", "--profile-out", str(prof_out)]
        else:
            cmd = [sys.executable, "-m", "edgeloop", "hub", "ingest", "--db", url,
                   "--broker", f"127.0.0.1:{broker.port}"]
        log_path = tmp / "ingest.log"
        ingest = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))  # noqa: SIM115
        result: dict[str, Any] = {"label": label, "database": db_kind, "batch_items": batch,
                                  "records": (args.records // args.nodes) * args.nodes, "nodes": args.nodes,
                                  "profiled": profile}
        try:
            if not watch.seen.wait(60):
                raise RuntimeError(f"the ingest did not come up: {log_path.read_text()[-2000:]}")
            if not conn.poll(120):
                raise RuntimeError("the load generator did not get ready")
            _, payload_bytes = conn.recv()
            cpu0 = {k: _cpu(p) for k, p in (("ingest", ingest.pid), ("mosquitto", broker.proc.pid),  # type: ignore[union-attr]
                                             ("generator", gen.pid))}
            w0 = time.perf_counter()
            conn.send("go")
            if not conn.poll(args.timeout):
                raise RuntimeError(f"the load generator did not finish within {args.timeout} s")
            gen_res = conn.recv()
            wall = time.perf_counter() - w0
            cpu1 = {k: _cpu(p) for k, p in (("ingest", ingest.pid), ("mosquitto", broker.proc.pid),  # type: ignore[union-attr]
                                             ("generator", gen.pid))}
            gen.join(10)
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(60)
            check = verify(url, args.records // args.nodes, args.nodes)
            rps = check["distinct_ids"] / gen_res["elapsed"]
            result.update({"records_per_s": round(rps), "seconds": round(gen_res["elapsed"], 3), **gen_res,
                           "payload_mb": round(payload_bytes / 1e6, 1), "check": check,
                           "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in cpu0}})
            if profile and prof_out.exists():
                result["profile"] = orjson.loads(prof_out.read_bytes())
            print(f"   {rps:>9,.0f} records/s  {gen_res['elapsed']:.2f} s  stored {check['distinct_ids']:,}/"
                  f"{check['expected']:,}  dup {check['duplicates']}  resent {gen_res['resent']}  "
                  f"ack p50 {gen_res['batch_latency_ms']['p50']} ms p99 {gen_res['batch_latency_ms']['p99']} ms  "
                  f"cpu% {result['cpu_percent']}", flush=True)
        finally:
            watch.close()
            if ingest.poll() is None:
                ingest.kill()
                ingest.wait()
            if gen.is_alive():
                gen.terminate()
            if pg is not None:
                pg.drop()
    return result


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops what it started
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 records per run, SQLite only")
    ap.add_argument("--records", type=int, default=None, help=f"records per run (default {N_RECORDS:,})")
    ap.add_argument("--nodes", type=int, default=N_NODES)
    ap.add_argument("--devices", type=int, default=DEVICES_PER_NODE, help="devices per node")
    ap.add_argument("--batches", default="100,500", help="items per uplink message, comma-separated")
    ap.add_argument("--dbs", default=None, help="sqlite,postgres (default both; PostgreSQL skipped if absent)")
    ap.add_argument("--ack-timeout", type=float, default=5.0, help="resend a batch after this many s without ack")
    ap.add_argument("--repeat", type=int, default=None, help="runs per database and batch size (default 3, quick 1)")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up on a run after this many s")
    ap.add_argument("--profile", action="store_true", help="add one SQLite run per batch size with the ingest profiled")
    ap.add_argument("--ingest-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--broker", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ingest_worker:
        ingest_worker(args.db, args.broker, args.profile_out)
        return 0
    args.records = args.records or (20_000 if args.quick else N_RECORDS)
    args.repeat = args.repeat or (1 if args.quick else 3)
    batches = [int(b) for b in args.batches.split(",")]
    dbs = args.dbs.split(",") if args.dbs else (["sqlite"] if args.quick else ["sqlite", "postgres"])
    pg_note = None
    if "postgres" in dbs:
        from edgeloop.devkit.postgres import pg_available

        pg_note = pg_available()
        if pg_note:
            print(f"PostgreSQL skipped: {pg_note}", flush=True)
            dbs.remove("postgres")
    print(f"hub_ingest: {DATA_NOTE}; nproc {os.cpu_count()}", flush=True)
    runs: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    with Mosquitto() as broker:
        broker_conf = broker.conf.read_text()
        for db_kind in dbs:
            for b in batches:
                for i in range(args.repeat):
                    r = run_one(broker, db_kind, b, args)
                    r["repeat"] = i + 1
                    runs.append(r)
        if args.profile:
            for b in batches:
                profiles.append(run_one(broker, "sqlite", b, args, profile=True))
    summary = []
    for db_kind in dbs:
        for b in batches:
            same = [r for r in runs if r["database"] == db_kind and r["batch_items"] == b]
            rates = sorted(r["records_per_s"] for r in same)
            median = rates[len(rates) // 2] if len(rates) % 2 else round((rates[len(rates) // 2 - 1] + rates[len(rates) // 2]) / 2)
            target = TARGET_SQLITE if db_kind == "sqlite" else None
            ok = all(r["check"]["ok"] for r in same)
            summary.append({"run": f"{db_kind} batch {b}", "repeats": len(same), "records_per_s_median": median,
                            "records_per_s_min": rates[0], "records_per_s_max": rates[-1],
                            "records_per_s_all": [r["records_per_s"] for r in same], "no_loss_no_dups": ok,
                            "target_records_per_s": target,
                            "meets_target": (median >= target and ok) if target else None})
    payload = {
        "data_note": DATA_NOTE,
        "setup": {"nodes": args.nodes, "devices_per_node": args.devices, "records_per_run": args.records,
                  "batch_items": batches, "databases": dbs, "repeats": args.repeat, "postgres_skipped": pg_note,
                  "ack_timeout_s": args.ack_timeout, "protocol": "MQTT 3.1.1 QoS 1 uplink messages "
                  "{first,last,items} to edgeloop/<node>/uplink, stop-and-wait per node on edgeloop/<node>/uplink/ack",
                  "ingest": "separate process: python -m edgeloop hub ingest --db URL --broker 127.0.0.1:PORT "
                            "(shared subscription $share/edgeloop-ingest/edgeloop/+/uplink)",
                  "generator": "separate process (multiprocessing fork): one asyncio MQTT connection per node, "
                               "pre-encoded payloads",
                  "measure": "records stored (distinct ids in uploads) / (last ack received - first batch sent)",
                  "broker_config": broker_conf},
        "targets": {"sqlite_records_per_s": TARGET_SQLITE, "postgres": "reported, no target"},
        "load_average_at_end": os.getloadavg(),
        "summary": summary, "runs": runs, "profiles": profiles,
    }
    path = write_results("hub_ingest", payload)
    print()
    print_table([[r["label"], r["records_per_s"], r["seconds"], r["check"]["distinct_ids"], r["check"]["duplicates"],
                  r["check"]["lost"], r["resent"], r["batch_latency_ms"]["p99"], r["cpu_percent"]["ingest"]]
                 for r in runs + profiles],
                ["run", "records/s", "seconds", "stored", "dups", "lost", "resent", "ack p99 ms", "ingest cpu%"])
    print()
    print_table([[s["run"], s["repeats"], s["records_per_s_median"], s["records_per_s_min"], s["records_per_s_max"],
                  "yes" if s["no_loss_no_dups"] else "NO"] for s in summary],
                ["database / batch", "runs", "median rec/s", "min", "max", "exactly once"])
    for s in summary:
        if s["target_records_per_s"]:
            print(f"target >= {s['target_records_per_s']:,} records/s ({s['run']}, median): "
                  f"{'met' if s['meets_target'] else 'NOT met'}")
    print(f"results: {path}")
    return 0 if all(r["check"]["ok"] for r in runs + profiles) else 1


if __name__ == "__main__":
    sys.exit(main())
