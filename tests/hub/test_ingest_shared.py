"""Two hub ingest processes on one broker share the uplink load: no record lost, none stored twice."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa

from hub.db import Node, Upload, make_engine, migrate
from tests.kit.hub import ROOT, env, wait_for
from tests.kit.mqtt import Collector

NODES = 10
BATCHES = 20
PER_BATCH = 50


class FakeUplink:
    """One node's uplink, speaking the real protocol: stop-and-wait batches, resend until acknowledged."""

    def __init__(self, node: str, port: int) -> None:
        self.node = node
        self.acked_by: list[str] = []
        self.done = threading.Event()
        self._ack = threading.Event()
        self._last: dict[str, Any] = {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{node}-uplink")
        self.c.on_connect = lambda c, *_: c.subscribe(f"edgeloop/{node}/uplink/ack", 1)
        self.c.on_message = self._on_ack
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_ack(self, _c: Any, _u: Any, msg: Any) -> None:
        self._last = orjson.loads(msg.payload)
        self._ack.set()

    def run(self) -> None:
        seq = 0
        for b in range(BATCHES):
            items = []
            for _ in range(PER_BATCH):
                seq += 1
                items.append({"id": f"r{seq}", "kind": "record", "device": f"{self.node}-d", "seq": seq,
                              "ts": 1.7e9 + seq, "record": {"values": {"t": seq * 0.5}}})
            first, last = b * PER_BATCH + 1, (b + 1) * PER_BATCH
            while True:
                self._ack.clear()
                self.c.publish(f"edgeloop/{self.node}/uplink",
                               orjson.dumps({"first": first, "last": last, "items": items}), qos=1)
                if self._ack.wait(5) and (self._last["first"], self._last["last"]) == (first, last):
                    self.acked_by.append(self._last["by"])
                    break
        self.c.loop_stop()
        self.c.disconnect()
        self.done.set()


@pytest.mark.broker
def test_two_ingest_processes_share_the_load(tmp_path, mosquitto):
    url = f"sqlite:///{tmp_path}/hub.db"
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as c:
        c.execute(sa.insert(Node), [{"name": f"n{i}", "group": "default", "created_at": 0, "heartbeats": 0}
                                    for i in range(NODES)])
    status = Collector(mosquitto.port, "edgeloop/hub/status")  # each ingest says so when it is subscribed
    procs = [subprocess.Popen([sys.executable, "-m", "edgeloop", "hub", "ingest", "--db", url,
                               "--broker", f"127.0.0.1:{mosquitto.port}"], cwd=ROOT, env=env(),
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"ingest{i}.log", "wb"))  # noqa: SIM115
             for i in range(2)]
    try:
        wait_for(lambda: len({orjson.loads(m)["ingest"] for _, m in status.messages}) == 2, 30,
                 "both ingest processes to subscribe")
        uplinks = [FakeUplink(f"n{i}", mosquitto.port) for i in range(NODES)]
        threads = [threading.Thread(target=u.run) for u in uplinks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(u.done.is_set() for u in uplinks), "some uplinks never got their acks"
    finally:
        status.close()
        for p in procs:
            p.terminate()
            p.wait(10)
    with engine.connect() as c:
        rows = c.execute(sa.select(Upload.node, Upload.seq).order_by(Upload.pk)).all()
    total = NODES * BATCHES * PER_BATCH
    assert len(rows) == total, "records lost"
    assert len(set(rows)) == total, "records stored twice"
    for i in range(NODES):
        assert [s for n, s in rows if n == f"n{i}"] == list(range(1, BATCHES * PER_BATCH + 1))
    workers = {by for u in uplinks for by in u.acked_by}
    assert len(workers) == 2, f"one ingest did all the work: {workers}"
