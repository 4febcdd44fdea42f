"""Operator state across a clean restart: the engine saves each instance's snapshot in the node's local store
(a real SQLite file) when it stops and restores it when the same instance of the same plan starts again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from edge_runtime.engine import Engine, Instance, MemorySinks
from edge_runtime.pipeline import parse_pipeline
from edge_runtime.records import Batch
from edge_runtime.store import LocalStore

T0 = 1_800_000_000.0  # a multiple of 10: a window starts here
SPEC = {"name": "win", "product": "pump", "steps": [
    {"device_input": {}}, {"time_window": {"size": "10s"}}, {"aggregate": {"t": ["count", "sum", "max"]}},
    {"alert": {"message": "{device}: {t_max}", "cooldown": "1h"}}]}


def batch(times: list[float], start: float = 1.0, device: str = "pump-1") -> Batch:
    return Batch.from_records([{"device": device, "product": "pump", "ts": T0 + t, "values": {"t": start + i}}
                               for i, t in enumerate(times)])


class Life:
    """One life of a node's engine over its local store file, outputs and alerts collected."""

    def __init__(self, path: Path, spec: dict[str, Any] = SPEC, *, state: bool = True) -> None:
        self.store = LocalStore(path)
        self.outputs: list[dict[str, Any]] = []
        self.sinks = MemorySinks()
        self.engine = Engine(lambda _inst, out: self.outputs.extend(out.to_records()),
                             state=self.store if state else None)
        self.instance = Instance("w", parse_pipeline(spec), store=self.store, sinks=self.sinks)
        self.engine.start(self.instance)

    def feed(self, b: Batch) -> None:
        self.engine.submit(b)
        assert self.engine.drain(10)

    def end(self) -> None:
        """A clean stop of the node: every instance stops, then the store closes."""
        self.engine.stop_all()
        self.store.close()


def saved(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT instance, fingerprint FROM operator_state").fetchall()
    finally:
        db.close()


def test_an_open_window_survives_a_clean_restart(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    first = Life(path)
    first.feed(batch([0, 1, 2, 3]))
    first.end()
    assert first.outputs == []  # the open window was saved, not flushed
    assert saved(path) == [("w", first.instance.fingerprint)]
    second = Life(path)
    assert saved(path) == []  # taken: a start after a later crash does not see it again
    second.feed(batch([5, 6], start=10.0))
    second.feed(batch([12], start=100.0))  # closes [T0, T0 + 10)
    (out,) = second.outputs
    assert out["ts"] == T0 + 10
    assert out["values"] == {"t_count": 6, "t_sum": 1 + 2 + 3 + 4 + 10 + 11, "t_max": 11, "count": 6,
                             "window_start": T0}
    second.feed(batch([4]))  # a window emitted after the restart: its records are late, as without one
    assert "late record" in second.instance.dead_letters.items[-1]["reason"]
    second.end()


def test_the_alert_cooldown_carries_over(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    first = Life(path)
    first.feed(batch([0, 1, 11]))  # closes the first window: one alert
    assert len(first.sinks.alerts) == 1
    first.end()
    second = Life(path)
    second.feed(batch([12, 25]))  # closes the second window, within the hour's cooldown
    assert [o["values"]["count"] for o in second.outputs] == [2]
    assert second.sinks.alerts == [] and second.instance.ops[-1].suppressed == 1
    second.end()
    fresh = Life(tmp_path / "other.db")  # the same without the saved state: a second alert
    fresh.feed(batch([12, 25]))
    assert len(fresh.sinks.alerts) == 1
    fresh.end()


def test_a_changed_pipeline_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    first = Life(path)
    first.feed(batch([0, 1, 2]))
    first.end()
    changed = json.loads(json.dumps(SPEC))
    changed["steps"][1] = {"time_window": {"size": "20s"}}
    second = Life(path, changed)
    assert second.instance.fingerprint != first.instance.fingerprint and saved(path) == []
    second.feed(batch([5, 21], start=10.0))
    assert [o["values"]["t_count"] for o in second.outputs] == [1]  # only the record after the restart
    second.end()


def test_an_instance_stopped_on_its_own_has_ended_it_flushes_and_keeps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    life = Life(path)
    life.feed(batch([0, 1, 2]))
    life.engine.stop("w")  # removed (a hub assignment gone): its input has ended
    assert [o["values"]["t_count"] for o in life.outputs] == [3]
    life.store.close()
    assert saved(path) == []


def test_without_a_state_store_a_stop_flushes_as_it_always_did(tmp_path: Path) -> None:
    life = Life(tmp_path / "node.db", state=False)
    life.feed(batch([0, 1, 2]))
    life.end()
    assert [o["values"]["t_count"] for o in life.outputs] == [3]
    assert saved(tmp_path / "node.db") == []


def test_a_state_that_does_not_fit_is_dropped_and_the_instance_starts_fresh(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "node.db"
    first = Life(path)
    first.feed(batch([0, 1]))
    first.end()
    db = sqlite3.connect(path)
    db.execute("UPDATE operator_state SET state = ?", (json.dumps({"steps": {"2:time_window": {"pending": 7}}}),))
    db.commit()
    db.close()
    second = Life(path)
    assert "step 2:time_window (time_window): cannot restore its state" in caplog.text
    second.feed(batch([3, 12], start=10.0))
    assert [o["values"]["t_count"] for o in second.outputs] == [1]
    second.end()
