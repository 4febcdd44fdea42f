"""The node's local store: SQLite in WAL mode.

Holds the Device Bus's records (bounded by age and row count, queryable by
device and time: what time_series_input reads), dead letters with their
reasons, alerts and notifications, and the pipeline instances' operator state
saved at a clean stop (see engine.py). One connection, guarded by a lock; writes are
batched in one transaction each.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import jsonio

__all__ = ["LocalStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, product TEXT, ts REAL NOT NULL, vals TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_device_ts ON records (device, ts);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, source TEXT NOT NULL, device TEXT, reason TEXT NOT NULL,
    record TEXT, raw TEXT);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, at REAL NOT NULL, ts REAL, level TEXT, device TEXT,
    pipeline TEXT, instance TEXT, message TEXT, record TEXT);
CREATE INDEX IF NOT EXISTS messages_kind ON messages (kind, id);
CREATE TABLE IF NOT EXISTS operator_state (
    instance TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, saved_at REAL NOT NULL, state TEXT NOT NULL);
"""


class LocalStore:
    """SQLite (WAL) store of records, dead letters, alerts and notifications."""

    def __init__(self, path: str | Path = ":memory:", *, retention: float = 7 * 86400,
                 max_rows: int = 5_000_000, max_dead_letters: int = 100_000, write_behind: float = 0.0) -> None:
        """``write_behind`` > 0: records are written by a thread of their own at most this many seconds after
        they arrive, many batches a transaction (the node uses 0.05 s: the Device Bus never waits on the
        disk). Every read writes what is pending first, so readers always see every record added."""
        self.path = str(path)
        self.durable = self.path != ":memory:"  # what it holds outlives the process (operator state: see below)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.max_rows = max_rows
        self.max_dead_letters = max_dead_letters
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._inserted_since_prune = 0
        self._last_prune = time.monotonic()
        self.write_behind = write_behind
        self._pending: list[tuple[Any, ...]] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None

    def close(self) -> None:
        self._closed.set()
        if self._writer is not None:
            self._writer.join(10)
        self.flush()
        with self.lock:
            self.db.close()

    # -- records ---------------------------------------------------------------------
    def add_records(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        rows = [(r["device"], r.get("product"), r["ts"], jsonio.dumps(r["values"]).decode()) for r in records]
        if not self.write_behind:
            self._write(rows)
            return
        with self._pending_lock:
            self._pending.extend(rows)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
                self._writer.start()

    def flush(self) -> None:
        """Write the records still pending (write-behind)."""
        # one flush at a time: a reader's flush waits for the writer thread's batch in flight, so it
        # never reads before rows that were taken from the pending list but not yet committed
        with self._flush_lock:
            with self._pending_lock:
                rows, self._pending = self._pending, []
            if rows:
                self._write(rows)

    def _write_loop(self) -> None:
        while not self._closed.wait(self.write_behind):
            try:
                self.flush()
            except sqlite3.Error:  # a full or failing disk: these records are not kept locally; the next are tried
                import logging

                logging.getLogger("edgeloop.store").exception("writing records to the local store failed")

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            try:
                self.db.executemany("INSERT INTO records (device, product, ts, vals) VALUES (?, ?, ?, ?)", rows)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self._inserted_since_prune += len(rows)
        if self._inserted_since_prune >= 10_000 or time.monotonic() - self._last_prune > 30:
            self.prune()

    def prune(self, now: float | None = None) -> int:
        """Drop records older than the retention, then the oldest beyond max_rows."""
        now = time.time() if now is None else now
        with self.lock:
            self._inserted_since_prune = 0
            self._last_prune = time.monotonic()
            n = self.db.execute("DELETE FROM records WHERE ts < ?", (now - self.retention,)).rowcount
            top = self.db.execute("SELECT MAX(id) FROM records").fetchone()[0]
            if top is not None:
                n += self.db.execute("DELETE FROM records WHERE id <= ?", (top - self.max_rows,)).rowcount
            top = self.db.execute("SELECT MAX(id) FROM dead_letters").fetchone()[0]
            if top is not None:
                self.db.execute("DELETE FROM dead_letters WHERE id <= ?", (top - self.max_dead_letters,))
        return n

    def query(self, *, devices: Iterable[str] | None = None, since: float | None = None,
              until: float | None = None, product: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Records by device(s) and event-time range, in (ts, arrival) order."""
        sql = "SELECT device, product, ts, vals FROM records WHERE 1=1"
        args: list[Any] = []
        if devices is not None:
            devices = list(devices)
            sql += f" AND device IN ({','.join('?' * len(devices))})"
            args += devices
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts <= ?"
            args.append(until)
        if product is not None:
            sql += " AND product = ?"
            args.append(product)
        sql += " ORDER BY ts, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        self.flush()
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
        return [{"device": d, "product": p, "ts": t, "values": jsonio.loads(v)} for d, p, t, v in rows]

    def count(self, table: str = "records") -> int:
        if table not in ("records", "dead_letters", "messages"):
            raise ValueError(f"no table {table!r}")
        self.flush()
        with self.lock:
            return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names

    # -- dead letters ------------------------------------------------------------------
    def add_dead_letters(self, items: Sequence[dict[str, Any]]) -> None:
        if not items:
            return
        rows = [(i.get("at", time.time()), i["source"], i.get("device"), i["reason"],
                 None if i.get("record") is None else jsonio.dumps(i["record"]).decode(),
                 None if i.get("raw") is None else str(i["raw"])[:4096]) for i in items]
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO dead_letters (at, source, device, reason, record, raw) "
                                "VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT at, source, device, reason, record, raw FROM dead_letters "
                                   "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"at": a, "source": s, "device": d, "reason": r,
                 "record": None if rec is None else jsonio.loads(rec), "raw": raw}
                for a, s, d, r, rec, raw in rows]

    # -- alerts and notifications ----------------------------------------------------------
    def add_message(self, kind: str, item: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO messages (kind, at, ts, level, device, pipeline, instance, message, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, time.time(), item.get("ts"), item.get("level"), item.get("device"), item.get("pipeline"),
                 item.get("instance"), item.get("message"), jsonio.dumps(item.get("record")).decode()))

    def messages(self, kind: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT at, ts, level, device, pipeline, instance, message, record FROM messages "
                                   "WHERE kind = ? ORDER BY id LIMIT ?", (kind, limit)).fetchall()
        keys = ("at", "ts", "level", "device", "pipeline", "instance", "message", "record")
        out = [dict(zip(keys, r)) for r in rows]
        for o in out:
            o["record"] = jsonio.loads(o["record"]) if o["record"] else None
        return out

    # -- operator state across a clean restart (engine.Engine's state store) ------------------------
    def save_state(self, instance: str, fingerprint: str, state: Any) -> None:
        """Keep a pipeline instance's snapshot (JSON: no NaN, no pickle) under its name and plan fingerprint."""
        text = json.dumps(state, allow_nan=False, separators=(",", ":"))
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO operator_state (instance, fingerprint, saved_at, state) "
                            "VALUES (?, ?, ?, ?)", (instance, fingerprint, time.time(), text))

    def take_state(self, instance: str, fingerprint: str) -> Any:
        """The snapshot saved for ``instance`` if it was saved under ``fingerprint`` (else None), removed either
        way: a state is restored once, and never after a later run that did not stop cleanly."""
        with self.lock:
            row = self.db.execute("SELECT fingerprint, state FROM operator_state WHERE instance = ?",
                                  (instance,)).fetchone()
            self.db.execute("DELETE FROM operator_state WHERE instance = ?", (instance,))
        if row is None or row[0] != fingerprint:
            return None
        return json.loads(row[1])
