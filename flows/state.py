"""The agile loop's memory: what it already collected, sent to labelling and harvested.

One SQLite file per workspace (``var/loop/state.db``). Every step records its work here in the same
transaction that marks it done, so a re-run (a retry, the next scheduled run, a run after a crash)
never sends a record to Label Studio twice and never harvests an annotation twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watermark (model TEXT PRIMARY KEY, after INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sent (
    upload_id TEXT PRIMARY KEY, model TEXT NOT NULL, project INTEGER, values_json TEXT NOT NULL,
    prediction TEXT, confidence REAL, model_version TEXT, node TEXT, device TEXT, ts REAL, sent_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sent_by_model_time ON sent (model, sent_at);
CREATE TABLE IF NOT EXISTS harvested (
    annotation_id INTEGER PRIMARY KEY, upload_id TEXT NOT NULL, model TEXT NOT NULL, label TEXT NOT NULL,
    batch TEXT NOT NULL, harvested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trained (
    model TEXT NOT NULL, labels INTEGER NOT NULL, version TEXT, trained_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS drift_events (
    event_id TEXT PRIMARY KEY, model TEXT NOT NULL, emitted_at REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS drift_checks (checked_at REAL NOT NULL, decisions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS iterations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, finished REAL, report TEXT);
"""


class LoopState:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LoopState:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- collect ----------------------------------------------------------------------------
    def watermark(self, model: str) -> int:
        row = self.db.execute("SELECT after FROM watermark WHERE model = ?", (model,)).fetchone()
        return int(row[0]) if row else 0

    def set_watermark(self, model: str, after: int) -> None:
        with self._lock:
            self.db.execute("INSERT INTO watermark VALUES (?, ?, ?) ON CONFLICT(model) DO UPDATE SET "
                            "after = max(after, excluded.after), updated = excluded.updated",
                            (model, int(after), time.time()))

    # -- label ------------------------------------------------------------------------------
    def unsent(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        have = {r[0] for r in self.db.execute(
            "SELECT upload_id FROM sent WHERE upload_id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))}
        return set(ids) - have

    def mark_sent(self, model: str, project: int, items: list[dict[str, Any]], at: float | None = None) -> None:
        now = time.time() if at is None else float(at)
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(it["id"], model, project, json.dumps(it["values"]), it.get("prediction"), it.get("confidence"),
                  it.get("model_version"), it.get("node"), it.get("device"), it.get("ts"), now) for it in items])
            self.db.execute("COMMIT")

    def sent_count(self, model: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM sent WHERE model = ?", (model,)).fetchone()[0])

    def sent_since(self, model: str, since: float) -> int:
        """How many of ``model``'s uploads were sent to labelling after ``since`` (epoch seconds): what the
        collection caps count, so that they hold across runs."""
        return int(self.db.execute("SELECT count(*) FROM sent WHERE model = ? AND sent_at > ?",
                                   (model, float(since))).fetchone()[0])

    def sent_values(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT upload_id, values_json FROM sent WHERE upload_id IN "
                               "(SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
        return {uid: json.loads(values) for uid, values in rows}

    def sent_rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Per upload id: its values, device and ts as sent to labelling."""
        rows = self.db.execute("SELECT upload_id, values_json, device, ts FROM sent WHERE upload_id IN "
                               "(SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
        return {uid: {"values": json.loads(values), "device": device, "ts": ts} for uid, values, device, ts in rows}

    # -- harvest ----------------------------------------------------------------------------
    def new_annotations(self, annotation_ids: Iterable[int]) -> set[int]:
        ids = [int(a) for a in annotation_ids]
        have = {r[0] for r in self.db.execute(
            "SELECT annotation_id FROM harvested WHERE annotation_id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),))}
        return set(ids) - have

    def mark_harvested(self, model: str, batch: str, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO harvested VALUES (?, ?, ?, ?, ?, ?)",
                                [(r["annotation_id"], r["id"], model, r["label"], batch, now) for r in rows])
            self.db.execute("COMMIT")

    def harvested_count(self, model: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM harvested WHERE model = ?", (model,)).fetchone()[0])

    # -- retrain ----------------------------------------------------------------------------
    def trained_labels(self, model: str) -> int:
        """How many harvested labels the newest training of ``model`` used (0: none yet)."""
        row = self.db.execute("SELECT max(labels) FROM trained WHERE model = ?", (model,)).fetchone()
        return int(row[0] or 0)

    def mark_trained(self, model: str, labels: int, version: str | None) -> None:
        with self._lock:
            self.db.execute("INSERT INTO trained VALUES (?, ?, ?, ?)", (model, labels, version, time.time()))

    # -- iterations -------------------------------------------------------------------------
    def start_iteration(self) -> int:
        with self._lock:
            cur = self.db.execute("INSERT INTO iterations (started) VALUES (?)", (time.time(),))
            return int(cur.lastrowid)

    def finish_iteration(self, iteration: int, report: dict[str, Any]) -> None:
        with self._lock:
            self.db.execute("UPDATE iterations SET finished = ?, report = ? WHERE id = ?",
                            (time.time(), json.dumps(report, default=str), iteration))

    def iterations(self) -> list[dict[str, Any]]:
        return [{"id": i, "started": s, "finished": f, "report": json.loads(r) if r else None}
                for i, s, f, r in self.db.execute("SELECT id, started, finished, report FROM iterations ORDER BY id")]

    # -- the drift watcher (flows.drift) ------------------------------------------------------
    def drift_event_seen(self, event_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM drift_events WHERE event_id = ?", (event_id,)).fetchone() is not None

    def last_drift_event(self, model: str) -> float | None:
        row = self.db.execute("SELECT max(emitted_at) FROM drift_events WHERE model = ?", (model,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def record_drift_event(self, model: str, event_id: str, at: float, reason: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR IGNORE INTO drift_events VALUES (?, ?, ?, ?)", (event_id, model, at, reason))

    def drift_events(self) -> list[dict[str, Any]]:
        return [{"event_id": e, "model": m, "emitted_at": t, "reason": r} for e, m, t, r in
                self.db.execute("SELECT event_id, model, emitted_at, reason FROM drift_events ORDER BY emitted_at")]

    def record_drift_check(self, at: float, decisions: list[dict[str, Any]]) -> None:
        with self._lock:
            self.db.execute("INSERT INTO drift_checks VALUES (?, ?)", (at, json.dumps(decisions, default=str)))
            self.db.execute("DELETE FROM drift_checks WHERE checked_at < ?", (at - 7 * 86400,))

    def drift_checks(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [{"checked_at": t, "decisions": json.loads(d)} for t, d in
                self.db.execute("SELECT checked_at, decisions FROM drift_checks WHERE checked_at >= ? "
                                "ORDER BY checked_at", (since,))]
