"""Chaos: the broker, the hub and the node killed and restarted at random points while records flow.

A real Mosquitto, a hub process, a node process polling Modbus devices every 20 ms and uploading every
record. A seeded random schedule injects faults one after another, each at a random moment once records
are flowing again: the broker stopped for 0.5-4 s; the hub SIGKILLed (mid-transaction) or stopped, and
restarted after 0.5-4 s; the node SIGKILLed or stopped and restarted. At the end the node's input stops,
its outbox drains, and the hub must hold every record the node accepted exactly once, in per-device
order: records lost 0, duplicates stored 0.

``EDGELOOP_CHAOS_FAULTS`` (default 6, ``make chaos``: 40) and ``EDGELOOP_CHAOS_SEED`` (default: random,
printed) set the schedule; with ``EDGELOOP_CHAOS_RESULTS=1`` the run's figures go to
bench/results/chaos.json.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from tests.kit.hub import HubProcess, NodeProcess, all_uploads, wait_for
from tests.kit.nodes import drain_outbox, hold, modbus_upload_node, uploads_beyond, write_node

FAULTS = int(os.environ.get("EDGELOOP_CHAOS_FAULTS", "6"))
SEED = int(os.environ.get("EDGELOOP_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
KINDS = ("broker_stop", "hub_kill", "hub_stop", "node_kill", "node_stop")


@pytest.mark.broker
@pytest.mark.modbus
@pytest.mark.timeout(300 + 60 * FAULTS)
def test_random_kills_lose_nothing_and_store_nothing_twice(tmp_path: Path, mosquitto, modbus_server) -> None:
    rng = random.Random(SEED)
    print(f"chaos seed {SEED} ({FAULTS} faults): EDGELOOP_CHAOS_SEED={SEED} replays this schedule")
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port).start()
    node = None
    injected: list[dict[str, float | str]] = []
    t_start = time.monotonic()
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-c"})["token"]
        cfg = modbus_upload_node(tmp_path, "edge-c", broker_port=mosquitto.port, hub_url=hub.url, token=token,
                                 modbus_port=modbus_server.port)
        node = NodeProcess(cfg).start()
        n = uploads_beyond(hub, "edge-c", 50, "records flowing to the hub")
        for i in range(FAULTS):
            kind = rng.choice(KINDS)
            hold(rng.uniform(0.0, 2.0))  # a random point in the flow
            down = rng.uniform(0.5, 4.0)
            if kind == "broker_stop":
                mosquitto.stop()
                hold(down)
                mosquitto.start()
            elif kind in ("hub_kill", "hub_stop"):
                if kind == "hub_kill":
                    hub.kill()
                else:
                    hub.stop()
                hold(down)
                hub.start()
            else:
                if kind == "node_kill":
                    node.kill()
                else:
                    node.stop()
                hold(down)
                node.start()
            injected.append({"fault": kind, "down_s": round(down, 2)})
            n = uploads_beyond(hub, "edge-c", n + 20, f"records flowing again after fault {i + 1} ({kind})", 120)
        modbus_server.stop()  # no more input: let the outbox drain
        last_seq = drain_outbox(node, tmp_path / "edge-c-outbox.db")
        items = all_uploads(hub.admin(), node="edge-c")
    finally:
        if node is not None:
            node.stop()
        hub.stop()
    log = (tmp_path / "node.log").read_text() if (tmp_path / "node.log").exists() else ""
    assert "Traceback" not in log, log[-3000:]
    accepted = sum(last_seq.values())
    ids = [it["id"] for it in items]
    duplicates = len(ids) - len(set(ids))
    by_device: dict[str, list[int]] = {}
    for it in items:
        by_device.setdefault(it["device"], []).append(it["seq"])
    lost = sum(len(set(range(1, last_seq[d] + 1)) - set(by_device.get(d, []))) for d in last_seq)
    figures = {"seed": SEED, "faults": len(injected), "by_kind": {k: sum(f["fault"] == k for f in injected) for k in KINDS},
               "records_accepted": accepted, "records_stored": len(items), "lost": lost, "duplicates": duplicates,
               "seconds": round(time.monotonic() - t_start, 1), "schedule": injected}
    print(f"chaos: {json.dumps({k: v for k, v in figures.items() if k != 'schedule'})}")
    if os.environ.get("EDGELOOP_CHAOS_RESULTS"):
        from bench.common import write_results

        write_results("chaos", {"note": "SYNTHETIC Modbus pumps (pymodbus server); real Mosquitto, hub and node "
                                        "processes killed and restarted", **figures})
    assert (lost, duplicates) == (0, 0), figures
    for device, seqs in by_device.items():
        assert seqs == list(range(1, last_seq[device] + 1)), f"{device}: out of order"
    assert accepted > 200


@pytest.mark.broker
def test_device_clock_jumps_are_dead_lettered_or_windowed_and_the_node_keeps_going(tmp_path: Path, mosquitto) -> None:
    """A device whose clock jumps back an hour, then forward a day: readings behind a window the node already
    emitted are dead letters that say so; windows before and after the jumps are emitted; nothing crashes."""
    from edge_runtime.node import Node, load_node_config
    from tests.kit.mqtt import Collector, publisher

    cfg = write_node(tmp_path, "edge-clock", broker_port=mosquitto.port,
                     products=[{"name": "meter", "properties": {"power": {"type": "number"}}}],
                     devices=[{"id": "m1", "product": "meter", "connector": "mqtt", "topic": "site/m1", "ts_field": "t"}],
                     pipelines={"w": {"name": "w", "product": "meter", "steps": [
                         {"device_input": {}}, {"time_window": {"size": "10s"}},
                         {"aggregate": {"power": ["count", "mean"]}}]}})
    node = Node(load_node_config(cfg))
    out = Collector(mosquitto.port, "edgeloop/edge-clock/pipelines/w/out")
    node.start()
    try:
        assert node.connectors["mqtt"].link.wait_connected(10)
        pub = publisher(mosquitto.port)
        t0 = 1_800_000_000.0
        times = [t0 + i for i in range(25)]                      # windows t0, t0+10 closed; t0+20 open
        times += [t0 + 24 - 3600 + i for i in range(5)]          # back an hour: behind emitted windows
        times += [t0 + 86_400 + i for i in range(15)]            # forward a day: t0+20 closes, new windows
        for t in times:
            pub.publish("site/m1", json.dumps({"t": t, "power": 5.0}).encode(), qos=1).wait_for_publish(5)
        pub.loop_stop()
        outs = wait_for(lambda: (o := out.payloads("/out")) and len(o) >= 4 and o, 20, "four windows")
        late = wait_for(lambda: [d for d in node.store.dead_letters() if "late record" in d["reason"]] or None, 10,
                        "the late readings' dead letters")
    finally:
        node.stop()
        out.close()
    assert [o["ts"] for o in outs[:4]] == [t0 + 10, t0 + 20, t0 + 30, t0 + 86_400 + 10]
    assert [o["values"]["power_count"] for o in outs[:4]] == [10, 10, 5, 10]
    assert len(late) == 5 and all(d["device"] == "m1" for d in late)
    assert node.bus.records_in == len(times)
