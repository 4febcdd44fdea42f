"""The node's outbox: durable, ordered per device, bounded with priorities; and desensitisation."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.desensitise import Desensitiser
from edge_runtime.operators.base import SpecError
from edge_runtime.outbox import Outbox
from edge_runtime.pipeline import Pipeline, parse_pipeline
from tests.kit.hub import ROOT, env


def rec(device: str, i: int, kind: str = "record") -> dict:
    return {"kind": kind, "device": device, "ts": float(i), "record": {"device": device, "values": {"t": i}}}


def test_ids_and_per_device_sequence_survive_reopen(tmp_path):
    box = Outbox(tmp_path / "o.db")
    box.put([rec("a", 1), rec("b", 1), rec("a", 2)])
    box.close()
    box = Outbox(tmp_path / "o.db")
    box.put([rec("a", 3)])
    first, last, bodies = box.head()
    import orjson

    items = [orjson.loads(b) for b in bodies]
    assert [(i["device"], i["seq"]) for i in items] == [("a", 1), ("b", 1), ("a", 2), ("a", 3)]
    assert len({i["id"] for i in items}) == 4
    assert (first, last) == (1, 4)
    assert box.ack(first, last) == 4
    assert box.head() == (0, 0, [])
    assert box.stats()["delivered"] == 4


def test_full_outbox_drops_oldest_records_first_and_counts(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=10)
    box.put([rec("a", i) for i in range(6)])
    box.put([rec("a", 100 + i, "alert") for i in range(3)])
    box.put([rec("a", 200 + i) for i in range(4)])  # 13 > 10: the three oldest records go
    import orjson

    kept = [orjson.loads(b) for b in box.head()[2]]
    assert [k["ts"] for k in kept if k["kind"] == "alert"] == [100.0, 101.0, 102.0]
    assert [k["ts"] for k in kept if k["kind"] == "record"] == [3.0, 4.0, 5.0, 200.0, 201.0, 202.0, 203.0]
    st = box.stats()
    assert st["rows"] == 10 and st["dropped"] == {"record": 3} and st["dropped_total"] == 3
    box.put([rec("a", 300 + i, "alert") for i in range(8)])  # only alerts left to drop: oldest alerts go, counted
    kinds = [orjson.loads(b)["kind"] for b in box.head()[2]]
    assert kinds.count("record") == 0 and len(kinds) == 10
    assert box.stats()["dropped"] == {"record": 10, "alert": 1}


def test_bytes_and_age_bounds(tmp_path):
    box = Outbox(tmp_path / "o.db", max_bytes=2000)
    box.put([rec("a", i) for i in range(100)])
    assert box.stats()["bytes"] <= 2000 and box.stats()["dropped_total"] > 0
    old = Outbox(tmp_path / "old.db", max_age=0.0)
    old.put([rec("a", 1)])
    old.put([rec("a", 2)])  # the first is already older than max_age
    assert old.stats()["dropped"].get("record", 0) >= 1


def test_what_was_accepted_survives_sigkill(tmp_path):
    """A child puts 500 batches and kills itself with SIGKILL: every accepted batch is there."""
    path = tmp_path / "o.db"
    code = (f"import os, signal\nfrom edge_runtime.outbox import Outbox\nbox = Outbox({str(path)!r})\n"
            "for i in range(500):\n    box.put([{'kind': 'record', 'device': 'd', 'ts': float(i)}])\n"
            "print('accepted', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL and "accepted" in out.stdout
    box = Outbox(path)
    assert box.stats()["rows"] == 500
    assert box.device_seq == {"d": 500}
    box.put([{"kind": "record", "device": "d", "ts": 1.0}])
    assert box.device_seq == {"d": 501}


def test_desensitise_drop_hash_blur():
    d = Desensitiser({"drop": ["operator"], "hash": ["plate"], "salt": "s", "blur": [[0, 0, 16, 16]]})
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    item = {"kind": "alert", "record": {"device": "cam", "values": {"operator": "Ann", "plate": "AB123", "t": 1,
                                                                      "frame": img}}}
    out = d.item(item)
    vals = out["record"]["values"]
    assert "operator" not in vals and vals["t"] == 1
    assert vals["plate"] != "AB123" and len(vals["plate"]) == 64
    assert vals["plate"] == d.item(item)["record"]["values"]["plate"]  # linkable: same input, same hash
    assert (vals["frame"][:16, :16] == vals["frame"][0, 0]).all()  # the region is one flat block
    assert (vals["frame"][16:, 16:] == img[16:, 16:]).all()  # the rest untouched
    assert item["record"]["values"]["operator"] == "Ann"  # the pipeline's own record is not changed
    clip = d.blur_image(np.stack([img, img[::-1]]))  # a clip (frames, h, w, c): every frame has the region blurred
    assert clip.shape == (2, 32, 32, 3) and (clip[1][:16, :16] == clip[1][0, 0]).all()
    assert (clip[0] == vals["frame"]).all() and (clip[1][16:, 16:] == img[::-1][16:, 16:]).all()


def test_uplink_spec_in_pipeline_yaml_and_builder():
    spec = {"name": "p", "product": "pump", "steps": [{"device_input": {}}, {"upload": {}}],
            "uplink": {"drop": ["current"], "hash": ["serial"]}}
    plan = parse_pipeline(spec)
    built = Pipeline.named("p").product("pump").device_input().upload().uplink(drop=["current"], hash=["serial"]).build()
    assert plan == built and plan.uplink == {"drop": ["current"], "hash": ["serial"]}
    with pytest.raises(SpecError, match=r"uplink.blur\[0\]"):
        parse_pipeline({**spec, "uplink": {"blur": [[0, 0, -1, 5]]}})
    with pytest.raises(SpecError, match="uplink.mask"):
        parse_pipeline({**spec, "uplink": {"mask": ["x"]}})


@pytest.mark.broker
def test_media_leave_the_outbox_for_the_hub(tmp_path, mosquitto):
    """An alert's JPEG goes over HTTP to a real hub and leaves the outbox only when the hub has it."""
    from edge_runtime.hubclient import HubClient
    from edge_runtime.mqtt import BrokerConfig, MqttLink
    from edge_runtime.uplink import Uplink
    from tests.kit.hub import HubProcess, wait_for

    hub = HubProcess(tmp_path / "hub").start()
    link = MqttLink(BrokerConfig(port=mosquitto.port), client_id="edge-m-uplink")
    uplink = None
    try:
        token = hub.admin().post("/api/v1/nodes", {"name": "edge-m"})["token"]
        box = Outbox(tmp_path / "o.db")
        jpeg = b"\xff\xd8 synthetic jpeg \xff\xd9"
        box.put([rec("cam", 1, "alert")], media=[{"id": "a1.jpg", "data": jpeg, "content_type": "image/jpeg"}])
        uplink = Uplink("edge-m", box, link, http=HubClient(hub.url, token))
        uplink.start()
        wait_for(lambda: box.media_head() is None, 20, "the media to reach the hub")
        assert box.stats()["media"] == 0 and not list((tmp_path / "o.db.media").iterdir())
        status, body, headers = hub.admin().request("GET", "/api/v1/media/edge-m/a1.jpg")
        assert (status, body, headers["content-type"]) == (200, jpeg, "image/jpeg")
    finally:
        if uplink is not None:
            uplink.stop()
        hub.stop()


def test_a_full_disk_drops_the_oldest_records_first_then_refuses_and_counts(tmp_path):
    """A full disk, for real to SQLite: ``PRAGMA max_page_count`` makes every write past the limit fail with
    SQLITE_FULL, exactly as a full file system does. The outbox makes room (oldest records first, alerts
    kept), counts what it dropped and refused, and stays usable once space comes back."""
    import pytest

    from edge_runtime.outbox import OutboxFull

    box = Outbox(tmp_path / "ob.db")
    alert = box.put([{"kind": "alert", "device": "d", "message": "keep me"}])[0]
    pages = box.db.execute("PRAGMA page_count").fetchone()[0]
    box.db.execute(f"PRAGMA max_page_count = {pages + 12}")
    accepted = 0
    for i in range(200):  # ~4 KiB a record: the limit is hit within a few dozen
        box.put([{"kind": "record", "device": "d", "values": {"blob": "x" * 4000, "i": i}}])
        accepted += 1
    st = box.stats()
    assert st["dropped"].get("disk_full.record", 0) > 0 and accepted == 200, st
    bodies = [b for _, b in box.db.execute("SELECT seq, body FROM outbox ORDER BY seq").fetchall()]
    assert any(b"keep me" in b for b in bodies), "the alert was dropped before the records"
    assert b'"i":199' in bodies[-1]  # the newest record is kept
    with pytest.raises(OutboxFull, match="disk is full"):
        box.put([{"kind": "record", "device": "d", "values": {"blob": "y" * 200_000}}])  # larger than the disk
    assert box.stats()["refused"] == {"disk_full.record": 1}
    # what the outbox counts is what it holds: failed writes left no trace in its numbers or on disk
    assert box.rows == box.db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert box.bytes == box.db.execute("SELECT coalesce(sum(size), 0) FROM outbox").fetchone()[0]
    with pytest.raises(OutboxFull):
        box.put([{"kind": "alert", "device": "d", "values": {"blob": "w" * 200_000}}],
                media=[{"id": "big.jpg", "data": b"z" * 1000}])
    assert not (tmp_path / "ob.db.media" / "big.jpg").exists()
    box.db.execute("PRAGMA max_page_count = 1073741823")  # space again
    box.put([{"kind": "record", "device": "d", "values": {"i": "after"}}])
    assert alert in {b.decode().split('"id":"')[1][:32] for _, b in box.db.execute("SELECT seq, body FROM outbox").fetchall()}
