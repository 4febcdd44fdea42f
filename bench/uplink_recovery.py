"""Uplink recovery: seconds until a node's backlog reaches the hub after a hub outage.

    .venv/bin/python -m bench.uplink_recovery [--outage 60] [--rate 1000] [--quick] [--no-live]

SYNTHETIC records (seeded simulated pumps; not recorded from real devices).

A real node (``edgeloop node run`` subprocess, ``tests.kit.hub.NodeProcess``) with 10 pumps bound
as MQTT devices and one pipeline ``device_input -> upload`` (every record goes to the hub through
the durable outbox and the MQTT uplink, stop-and-wait QoS 1, default batch and ack timeout);
the hub is ``edgeloop hub serve`` with the MQTT ingest (``tests.kit.hub.HubProcess``, SQLite);
one Mosquitto for both. A producer thread publishes ready-made records ``{"device", "ts",
"values"}`` to the node's ingest topic ``edgeloop/<node>/ingest`` at ``--rate`` records/s (QoS 0,
10 ms ticks).

Once records flow to the hub (``--warmup`` s), the hub is stopped for ``--outage`` s while the
records keep coming (the node buffers them), then started again. "Back" is when the restarted
hub accepts connections. Figures, from back:

* ``drain_s``: until the hub holds every record the node had accepted by the time the hub was
  back (the whole backlog; new records keep arriving meanwhile unless ``--no-live``);
* ``caught_up_s``: until the outbox is down to at most 0.2 s of input (live) or empty (``--no-live``);
* the drain rate (records/s stored while draining) and the launch time of the hub process.

Then the input stops, the outbox must empty, and the hub must hold every record the node
accepted exactly once, in per-device order (count, distinct ids, per-device seq 1..N). Progress is
read straight from the two SQLite files (the node's outbox counters, the hub's ``uploads``) every
50 ms with point lookups, so watching costs next to nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import SEED, T0, print_table, write_results
from edge_runtime.mqtt.raw import RawPublisher
from edgeloop.devkit.broker import Mosquitto
from tests.kit.hub import HubProcess, NodeProcess

DATA_NOTE = "SYNTHETIC data: seeded simulated pump records generated in bench/uplink_recovery.py, not real devices"
TARGET_DRAIN_S = 20.0
NODE = "edge-recovery"

PRODUCTS = """
products:
  - name: pump
    properties:
      temperature: {type: number, unit: degC}
      vibration: {type: number, unit: mm/s}
      pressure: {type: number, unit: bar}
"""

PIPELINE = """
name: upload-all
product: pump
steps:
  - device_input: {}
  - upload: {}
"""


def write_node(tmp: Path, *, broker_port: int, hub_url: str, token: str, devices: int) -> Path:
    (tmp / "products.yaml").write_text(PRODUCTS)
    lines = ["devices:"]
    for i in range(devices):
        lines += [f"  - id: pump-{i:02d}", "    product: pump", "    connector: mqtt",
                  f"    topic: bench/recovery/pump-{i:02d}", "    qos: 0"]
    (tmp / "devices.yaml").write_text("\n".join(lines) + "\n")
    (tmp / "upload.yaml").write_text(PIPELINE)
    cfg = tmp / "node.yaml"
    cfg.write_text(f"""
node: {NODE}
broker: {{host: 127.0.0.1, port: {broker_port}}}
store: {{path: {NODE}.db}}
products: [products.yaml]
devices: [devices.yaml]
pipelines:
  - {{instance: all, pipeline: upload.yaml}}
publish_telemetry: false
stats_interval: 5
hub: {{url: "{hub_url}", token: "{token}", heartbeat: 5}}
outbox: {{path: {NODE}-outbox.db}}
""")
    return cfg


class Producer(threading.Thread):
    """Ready-made records to the node's ingest topic at a steady rate (QoS 0, 10 ms ticks)."""

    def __init__(self, port: int, rate: float, devices: int) -> None:
        super().__init__(name="producer", daemon=True)
        self.pub = RawPublisher("127.0.0.1", port, client_id=f"bench-producer-{os.getpid()}")
        self.rate, self.devices = rate, devices
        self.topic = f"edgeloop/{NODE}/ingest"
        self.rng = random.Random(SEED)
        self.level = [self.rng.uniform(72.0, 86.0) for _ in range(devices)]
        self.sent = 0
        self.streaming = threading.Event()
        self.stop_flag = threading.Event()
        self.probe = 0
        self.stream_base = 0  # records sent before the stream (probes; the first may come before the node listens)

    def _record(self) -> bytes:
        i = self.sent
        d = i % self.devices
        return orjson.dumps({"device": f"pump-{d:02d}", "ts": round(T0 + i / self.rate, 6),
                             "values": {"temperature": round(self.level[d] + self.rng.gauss(0, 3), 3),
                                        "vibration": round(self.rng.random(), 4),
                                        "pressure": round(self.rng.uniform(2.0, 6.0), 3)}})

    def _send(self, n: int) -> None:
        items = []
        for _ in range(n):
            items.append((self.topic, self._record()))
            self.sent += 1
        self.pub.publish_many(items)

    def run(self) -> None:
        while not self.streaming.is_set() and not self.stop_flag.is_set():  # probe until the node listens
            self._send(1)
            self.probe += 1
            self.stop_flag.wait(0.05)
        t0 = time.monotonic()
        base = self.stream_base = self.sent
        while not self.stop_flag.is_set():
            due = base + int((time.monotonic() - t0) * self.rate)
            if due > self.sent:
                self._send(due - self.sent)
            self.stop_flag.wait(0.01)
        self.pub.close()


class Watch:
    """Cheap reads of the node's outbox counters and the hub's uploads (read-only SQLite connections)."""

    def __init__(self, outbox: Path, hub_db: Path) -> None:
        self.outbox_path, self.hub_path = outbox, hub_db
        self._ob: sqlite3.Connection | None = None
        self._hub: sqlite3.Connection | None = None

    def _conn(self, path: Path) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)

    def outbox(self) -> tuple[int, int]:
        """(accepted, rows waiting) from the outbox's counters."""
        if self._ob is None:
            if not self.outbox_path.exists():
                return 0, 0
            self._ob = self._conn(self.outbox_path)
        try:
            c = dict(self._ob.execute("SELECT name, value FROM counters"))
        except sqlite3.OperationalError:
            return 0, 0
        accepted = c.get("accepted", 0)
        gone = sum(v for k, v in c.items() if k == "delivered" or k.startswith(("dropped.", "expired.")))
        return accepted, accepted - gone

    def hub(self) -> int:
        """Records the hub holds (max rowid: uploads are never deleted here and conflicts take no rowid)."""
        if self._hub is None:
            self._hub = self._conn(self.hub_path)
        return self._hub.execute("SELECT coalesce(max(pk), 0) FROM uploads").fetchone()[0]

    def close(self) -> None:
        for c in (self._ob, self._hub):
            if c is not None:
                c.close()


def final_check(outbox: Path, hub_db: Path, probe_ts_below: float) -> dict[str, Any]:
    ob = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        rows = ob.execute("SELECT count(*) FROM outbox").fetchone()[0]
        last_seq = dict(ob.execute("SELECT device, seq FROM device_seq"))
        counters = dict(ob.execute("SELECT name, value FROM counters"))
    finally:
        ob.close()
    hub = sqlite3.connect(f"file:{hub_db}?mode=ro", uri=True, timeout=10)
    try:
        total, distinct = hub.execute("SELECT count(*), count(DISTINCT id) FROM uploads WHERE node = ?",
                                      (NODE,)).fetchone()
        per_device = {d: (n, lo, hi) for d, n, lo, hi in hub.execute(
            "SELECT device, count(*), min(seq), max(seq) FROM uploads WHERE node = ? GROUP BY device", (NODE,))}
        probes_stored = hub.execute("SELECT count(*) FROM uploads WHERE node = ? AND ts < ?",
                                    (NODE, probe_ts_below)).fetchone()[0]
        in_order = all(
            seqs == sorted(seqs) for seqs in (
                [s for (s,) in hub.execute("SELECT seq FROM uploads WHERE node = ? AND device = ? ORDER BY pk",
                                           (NODE, d))] for d in per_device))
    finally:
        hub.close()
    accepted = counters.get("accepted", 0)
    complete = all(per_device.get(d) == (n, 1, n) for d, n in last_seq.items()) and set(per_device) == set(last_seq)
    return {"outbox_rows": rows, "accepted": accepted, "hub_records": total, "hub_distinct_ids": distinct,
            "duplicates": total - distinct, "missing": accepted - distinct,
            "dropped_by_outbox": sum(v for k, v in counters.items() if k.startswith(("dropped.", "expired."))),
            "per_device_seq_1_to_n": complete, "per_device_order": in_order, "probe_records_stored": probes_stored,
            "ok": rows == 0 and total == distinct == accepted and complete and in_order}


def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: list[tuple[float, int, int, int]] = []  # (t from back, hub records, outbox rows, accepted)
    res: dict[str, Any] = {}
    with Mosquitto() as broker, tempfile.TemporaryDirectory(prefix="edgeloop-uplink-recovery-") as tmpd:
        tmp = Path(tmpd)
        hub = HubProcess(tmp / "hub", broker_port=broker.port, heartbeat=5.0).start()
        node = producer = None
        watch = Watch(tmp / f"{NODE}-outbox.db", tmp / "hub" / "hub.db")
        try:
            token = hub.admin().post("/api/v1/nodes", {"name": NODE})["token"]
            cfg = write_node(tmp, broker_port=broker.port, hub_url=hub.url, token=token, devices=args.devices)
            node = NodeProcess(cfg).start()
            producer = Producer(broker.port, args.rate, args.devices)
            producer.start()
            deadline = time.monotonic() + 60
            while watch.outbox()[0] == 0:  # probe records until the node has subscribed its ingest topic
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the node accepts nothing: {(tmp / 'node.log').read_text()[-2000:]}")
                time.sleep(0.05)
            producer.streaming.set()
            print(f"   node accepting ({producer.probe} probe records); warm-up {args.warmup:g} s at "
                  f"{args.rate:,.0f} records/s", flush=True)
            time.sleep(args.warmup)
            acc, rows = watch.outbox()
            res["steady_state"] = {"accepted": acc, "outbox_rows": rows, "hub_records": watch.hub()}
            if watch.hub() == 0:
                raise RuntimeError(f"nothing reached the hub during the warm-up: {hub.log.read_text()[-2000:]}")
            print(f"   steady state: accepted {acc:,}, outbox rows {rows}, hub {res['steady_state']['hub_records']:,}; "
                  f"stopping the hub for {args.outage:g} s", flush=True)
            t_stop = time.monotonic()
            hub.stop()
            t_down = time.monotonic()
            time.sleep(args.outage)
            acc, rows = watch.outbox()
            res["at_restart"] = {"accepted": acc, "outbox_rows": rows, "hub_records": watch.hub(),
                                 "hub_stop_s": round(t_down - t_stop, 3)}
            t_launch = time.monotonic()
            hub.start()
            t_back = time.monotonic()
            if args.no_live:
                producer.stop_flag.set()
                producer.join(5)
            acc_back, rows_back = watch.outbox()
            hub_back = watch.hub()
            res["at_back"] = {"accepted": acc_back, "outbox_rows": rows_back, "hub_records": hub_back,
                              "hub_launch_s": round(t_back - t_launch, 3),
                              "outage_s": round(t_back - t_down, 3)}
            print(f"   hub back after {t_back - t_down:.1f} s (launch {t_back - t_launch:.2f} s): backlog "
                  f"{rows_back:,} records in the outbox", flush=True)
            t_drained = t_caught = None
            threshold = 0 if args.no_live else int(args.rate * 0.2)
            end = t_back + args.drain_timeout
            next_print = t_back + 5
            while time.monotonic() < end:
                now = time.monotonic()
                h = watch.hub()
                a, r = watch.outbox()
                samples.append((round(now - t_back, 3), h, r, a))
                if t_drained is None and h >= acc_back:
                    t_drained = now
                    hub_at_drained = h
                if t_drained is not None and t_caught is None and r <= threshold and (not args.no_live or h >= a):
                    t_caught = now
                if t_drained is not None and t_caught is not None:
                    break
                if now >= next_print:
                    print(f"   +{now - t_back:5.1f} s  hub {h:,}  outbox {r:,}", flush=True)
                    next_print += 5
                time.sleep(0.05)
            if t_drained is None:
                print(f"   backlog NOT drained within {args.drain_timeout:g} s", flush=True)
            drain_s = None if t_drained is None else t_drained - t_back
            res["drain_s"] = None if drain_s is None else round(drain_s, 3)
            res["caught_up_s"] = None if t_caught is None else round(t_caught - t_back, 3)
            res["drain_from_launch_s"] = None if t_drained is None else round(t_drained - t_launch, 3)
            res["drain_records_per_s"] = (round((hub_at_drained - hub_back) / drain_s) if drain_s else None)
            # stop the input and let everything arrive
            producer.stop_flag.set()
            producer.join(5)
            time.sleep(1.0)  # records in flight through the broker and the node's pipeline
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                a, r = watch.outbox()
                if r == 0 and watch.hub() >= a:
                    break
                time.sleep(0.1)
            res["producer"] = {"sent": producer.sent, "probe_records": producer.stream_base}
            node.stop()
            node_ = node
            node = None
            check = final_check(tmp / f"{NODE}-outbox.db", tmp / "hub" / "hub.db",
                                T0 + (producer.stream_base - 0.5) / args.rate)
            # probes sent before the node had subscribed are expected to miss; the stream must not
            check["input_lost_stream"] = (producer.sent - producer.stream_base) - (check["accepted"]
                                                                                 - check["probe_records_stored"])
            res["check"] = check
            res["node_log_errors"] = [ln for ln in node_.log.read_text(errors="replace").splitlines()
                                      if " ERROR " in ln or "Traceback" in ln][:20]
            res["hub_log_errors"] = [ln for ln in hub.log.read_text(errors="replace").splitlines()
                                     if " ERROR " in ln or "Traceback" in ln][:20]
        finally:
            watch.close()
            if producer is not None:
                producer.stop_flag.set()
            if node is not None:
                node.stop()
            hub.stop()
    # one sample per 0.5 s is plenty in the results file
    kept, last = [], -1.0
    for s in samples:
        if s[0] - last >= 0.5:
            kept.append(s)
            last = s[0]
    res["timeline"] = {"columns": ["s_from_back", "hub_records", "outbox_rows", "accepted"], "rows": kept}
    return res


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops what it started
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 10 s outage")
    ap.add_argument("--outage", type=float, default=None, help="seconds the hub is down (default 60, quick 10)")
    ap.add_argument("--rate", type=float, default=1000.0, help="records/s into the node")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of normal flow before the outage")
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--no-live", action="store_true", help="stop the input when the hub is back (default: it goes on)")
    args = ap.parse_args(argv)
    args.outage = args.outage if args.outage is not None else (10.0 if args.quick else 60.0)
    print(f"uplink_recovery: {DATA_NOTE}; outage {args.outage:g} s at {args.rate:,.0f} records/s, "
          f"input {'stops' if args.no_live else 'goes on'} when the hub is back; nproc {os.cpu_count()}", flush=True)
    res = run(args)
    drain = res.get("drain_s")
    met = drain is not None and drain <= TARGET_DRAIN_S and res["check"]["ok"]
    payload = {
        "data_note": DATA_NOTE,
        "setup": {"outage_s": args.outage, "rate_records_per_s": args.rate, "devices": args.devices,
                  "warmup_s": args.warmup, "live_input_during_drain": not args.no_live,
                  "node": "edgeloop node run subprocess: MQTT devices, pipeline device_input -> upload, outbox + "
                          "MQTT uplink with default batch (1000 items / 256 KiB) and ack timeout (5 s)",
                  "hub": "edgeloop hub serve subprocess with the MQTT ingest, SQLite",
                  "producer": "thread: ready-made records to edgeloop/<node>/ingest, QoS 0, 10 ms ticks",
                  "back": "the restarted hub accepts connections on its port",
                  "drain": "the hub holds every record the node had accepted when the hub was back"},
        "targets": {"drain_s": TARGET_DRAIN_S},
        "summary": {"backlog_records": res["at_back"]["outbox_rows"], "drain_s": drain,
                    "caught_up_s": res.get("caught_up_s"), "drain_records_per_s": res.get("drain_records_per_s"),
                    "hub_launch_s": res["at_back"]["hub_launch_s"], "exactly_once_in_order": res["check"]["ok"],
                    "input_lost": res["check"]["input_lost_stream"],
                    "meets_target": met},
        "load_average_at_end": os.getloadavg(),
        **res,
    }
    path = write_results("uplink_recovery", payload)
    print()
    c = res["check"]
    print_table([[f"{args.outage:g} s outage at {args.rate:,.0f}/s", res["at_back"]["outbox_rows"],
                  drain if drain is not None else "not drained", res.get("caught_up_s") or "-",
                  res.get("drain_records_per_s") or "-", c["accepted"], c["hub_distinct_ids"], c["duplicates"],
                  "yes" if c["ok"] else "NO"]],
                ["run", "backlog", "drain s", "caught up s", "drain rec/s", "accepted", "at hub", "dups",
                 "exactly once, in order"])
    print(f"target: backlog drained within {TARGET_DRAIN_S:g} s of the hub being back: {'met' if met else 'NOT met'}")
    print(f"results: {path}")
    return 0 if c["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
