"""The node's local store: WAL, bounded by age and rows, queryable by device and time; time_series_input reads it."""

from __future__ import annotations

import sqlite3
import time

from edge_runtime.instance import Instance
from edge_runtime.pipeline import parse_pipeline
from edge_runtime.store import LocalStore


def recs(device, start, n, step=1.0):
    return [{"device": device, "product": "pump", "ts": start + i * step, "values": {"t": float(i)}} for i in range(n)]


def test_query_by_device_and_time_in_event_time_order(tmp_path):
    store = LocalStore(tmp_path / "n.db")
    now = time.time()
    store.add_records(recs("a", now - 100, 50) + recs("b", now - 100, 50))
    store.add_records([{"device": "a", "product": "pump", "ts": now - 99.5, "values": {"t": -1.0}}])  # late arrival
    got = store.query(devices=["a"], since=now - 100, until=now - 98)
    assert [r["values"]["t"] for r in got] == [0.0, -1.0, 1.0, 2.0]
    assert len(store.query(devices=["b"])) == 50
    assert len(store.query(since=now - 60)) == 2 * 10
    assert sqlite3.connect(tmp_path / "n.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bounded_by_age_and_rows(tmp_path):
    store = LocalStore(tmp_path / "n.db", retention=3600, max_rows=100)
    now = time.time()
    store.add_records(recs("old", now - 7200, 10))
    store.add_records(recs("new", now - 10, 150, step=0.01))
    store.prune(now)
    assert store.query(devices=["old"]) == []
    kept = store.query(devices=["new"])
    assert len(kept) == 100 and kept[0]["values"]["t"] == 50.0  # the oldest rows went first


def test_time_series_input_replays_history_then_follows(tmp_path):
    store = LocalStore(tmp_path / "n.db")
    now = time.time()
    store.add_records(recs("a", now - 30, 10) + recs("b", now - 30, 10) + recs("a", now - 7200, 5))
    plan = parse_pipeline({"name": "h", "product": "pump", "steps": [
        {"time_series_input": {"since": "1h", "devices": ["a"]}}, {"filter": "t >= 5"}]})
    inst = Instance("h", plan, store=store)
    got = inst.history().to_records()
    assert [(r["device"], r["values"]["t"]) for r in got] == [("a", float(t)) for t in range(5, 10)]


def test_write_behind_readers_see_every_record_and_close_writes_the_rest(tmp_path):
    """The node's store writes records from a thread of its own; a query or count right after adding sees
    them all (what is pending is written first), and closing writes what is left."""
    from edge_runtime.store import LocalStore

    store = LocalStore(tmp_path / "s.db", write_behind=30.0)  # the writer would wait 30 s: reads must not
    store.add_records([{"device": "d", "ts": float(i), "values": {"v": i}} for i in range(100)])
    assert store.count() == 100
    assert [r["values"]["v"] for r in store.query(devices=["d"], since=90)] == list(range(90, 100))
    store.add_records([{"device": "d", "ts": 1000.0, "values": {"v": 1000}}])
    store.close()
    again = LocalStore(tmp_path / "s.db")
    assert again.count() == 101


def test_a_read_waits_for_the_writer_batch_in_flight(tmp_path):
    """The writer thread takes the pending rows, then commits them: a query in between must wait for that
    commit, not read without them (CI saw a polled reading missing from a query right after it counted)."""
    import threading

    store = LocalStore(tmp_path / "s.db", write_behind=0.01)
    taken, go = threading.Event(), threading.Event()
    real_write = store._write

    def slow_write(rows):  # the writer thread holds its batch here until the query has started
        taken.set()
        assert go.wait(10)
        real_write(rows)

    store._write = slow_write
    store.add_records([{"device": "d", "ts": float(i), "values": {"v": i}} for i in range(10)])
    assert taken.wait(10), "the writer thread took the batch"
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(store.query(devices=["d"])))
    reader.start()
    reader.join(0.3)  # a read that does not wait would be done by now, without the rows
    go.set()
    reader.join(10)
    store._write = real_write
    store.close()
    assert [r["values"]["v"] for r in got] == list(range(10))
