"""The node's durable outbox: a SQLite (WAL) store of what goes to the hub.

Alerts, notifications and uploaded records are written here first (one transaction per batch, so a SIGKILL
loses nothing that was accepted) with an id, a kind, a priority and a per-device sequence number; media files
(an alert's JPEG) wait in the outbox folder. :class:`edge_runtime.uplink.Uplink` drains it; rows leave only
when the hub has acknowledged them.

The outbox is bounded by rows, bytes and age. When full, the oldest rows of the lowest priority go first
(records, then notifications, then alerts); every drop is counted by kind, logged, and reported in
heartbeats. A full disk drops the same way, then refuses (counted), and never leaves half a write behind.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from . import jsonio

__all__ = ["Outbox", "OutboxFull", "PRIORITY"]

log = logging.getLogger("edgeloop.uplink")

PRIORITY = {"record": 0, "notification": 1, "alert": 2}


class OutboxFull(RuntimeError):
    """The disk under the outbox is full even after dropping the oldest, lowest-priority items: these items
    were not accepted (counted as ``refused.disk_full.<kind>``)."""


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (28, 122)  # ENOSPC, EDQUOT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, priority INTEGER NOT NULL,
    device TEXT, created REAL NOT NULL, size INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_drop ON outbox (priority, seq);
CREATE TABLE IF NOT EXISTS device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS media (
    id TEXT PRIMARY KEY, upload_id TEXT, path TEXT NOT NULL, content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL);
"""


class Outbox:
    """Durable, bounded queue of items for the hub (thread-safe)."""

    def __init__(self, path: str | Path, *, max_rows: int = 1_000_000, max_bytes: int = 1 << 30,
                 max_age: float = 7 * 86400) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.media_dir = Path(self.path + ".media") if self.path != ":memory:" else None
        self.max_rows, self.max_bytes, self.max_age = max_rows, max_bytes, max_age
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses nothing committed
        self.db.executescript(_SCHEMA)
        self.device_seq = dict(self.db.execute("SELECT device, seq FROM device_seq"))
        self.counters = dict(self.db.execute("SELECT name, value FROM counters"))
        self.rows, self.bytes = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self.changed = threading.Event()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _count(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
        self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                        (name, n, n))

    def put(self, items: Sequence[dict[str, Any]], *, media: Sequence[dict[str, Any]] = ()) -> list[str]:
        """Accept items (each gets ``id``, ``seq`` per device, ``kind``); durable when this returns.

        When the disk is full the outbox makes room the way its bounds do (the oldest records first, alerts
        last; counted as ``dropped.disk_full.<kind>``) and tries once more; if that is not enough it raises
        :class:`OutboxFull` and counts the items as ``refused.disk_full.<kind>``. Nothing half-written stays.
        """
        try:
            return self._put(items, media)
        except BaseException as exc:
            if not _disk_full(exc):
                raise
            log.error("outbox %s: the disk is full (%s): dropping the oldest, lowest-priority items", self.path, exc)
        try:
            self._make_room(max(len(items), self.rows // 4, 1))  # a quarter: room for a while, not a purge
            return self._put(items, media)
        except BaseException as exc:
            if not _disk_full(exc):
                raise
            with self.lock:
                for it in items:
                    key = f"refused.disk_full.{it.get('kind', 'record')}"
                    self.counters[key] = self.counters.get(key, 0) + 1  # in memory: the disk takes nothing now
            log.error("outbox %s: disk full, %d items refused", self.path, len(items))
            raise OutboxFull(f"outbox {self.path}: the disk is full; {len(items)} items refused") from exc

    def _make_room(self, n: int) -> None:
        with self.lock:
            victims = self.db.execute("SELECT seq, kind, size FROM outbox ORDER BY priority, seq LIMIT ?",
                                      (n,)).fetchall()
            if not victims:
                return
            self.db.execute("BEGIN")
            try:
                self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL)
                    self.db.execute("ROLLBACK")
                raise
            for _, kind, size in victims:
                self.rows -= 1
                self.bytes -= size
                key = f"dropped.disk_full.{kind}"
                self.counters[key] = self.counters.get(key, 0) + 1
            with_counts = [(k, v) for k, v in self.counters.items() if k.startswith("dropped.disk_full.")]
            try:  # persisted when the freed pages allow it
                self.db.executemany("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = ?",
                                    [(k, v, v) for k, v in with_counts])
            except sqlite3.OperationalError:
                pass
            log.warning("outbox full (disk): dropped the %d oldest items, lowest priority first", len(victims))

    def _put(self, items: Sequence[dict[str, Any]], media: Sequence[dict[str, Any]]) -> list[str]:
        now = time.time()
        ids = []
        with self.lock:
            saved = self.rows, self.bytes, dict(self.counters)
            written: list[Path] = []
            self.db.execute("BEGIN")
            try:
                for m in media:
                    written.append(self._put_media(m, now))
                touched = set()
                rows = []
                for it in items:
                    kind = it.get("kind", "record")
                    it.setdefault("id", uuid.uuid4().hex)
                    device = it.get("device")
                    if device is not None:
                        it["seq"] = self.device_seq[device] = self.device_seq.get(device, 0) + 1
                        touched.add(device)
                    body = jsonio.dumps(it)
                    rows.append((kind, PRIORITY.get(kind, 0), device, now, len(body), body))
                    ids.append(it["id"])
                self.db.executemany("INSERT INTO outbox (kind, priority, device, created, size, body) "
                                    "VALUES (?, ?, ?, ?, ?, ?)", rows)
                self.db.executemany("INSERT INTO device_seq VALUES (?, ?) ON CONFLICT(device) DO UPDATE "
                                    "SET seq = excluded.seq", [(d, self.device_seq[d]) for d in touched])
                self.rows += len(rows)
                self.bytes += sum(r[4] for r in rows)
                self._count("accepted", len(rows))
                self._enforce_bounds(now)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL)
                    self.db.execute("ROLLBACK")
                self.device_seq = dict(self.db.execute("SELECT device, seq FROM device_seq"))
                self.rows, self.bytes, self.counters = saved[0], saved[1], {**saved[2], **{
                    k: v for k, v in self.counters.items() if k.startswith("refused.")}}
                for path in written:  # nothing half-written stays: no media file without its row
                    path.unlink(missing_ok=True)
                raise
        self.changed.set()
        return ids

    def _put_media(self, m: dict[str, Any], now: float) -> Path:
        if self.media_dir is None:
            raise ValueError("media need an outbox on disk")
        data: bytes = m["data"]
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path: Path = self.media_dir / str(m["id"])
        try:
            path.write_bytes(data)
        except OSError:
            path.unlink(missing_ok=True)  # no half-written file stays behind (a full disk)
            raise
        self.db.execute("INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (m["id"], m.get("upload_id"), str(path), m.get("content_type", "application/octet-stream"),
                         hashlib.sha256(data).hexdigest(), len(data), now))
        return path

    def _enforce_bounds(self, now: float) -> None:
        old = self.db.execute("SELECT kind, count(*), coalesce(sum(size), 0) FROM outbox WHERE created < ? "
                              "GROUP BY kind", (now - self.max_age,)).fetchall()
        if old:
            self.db.execute("DELETE FROM outbox WHERE created < ?", (now - self.max_age,))
            for kind, n, size in old:
                self.rows -= n
                self.bytes -= size
                self._count(f"expired.{kind}", n)
                log.warning("outbox: %d %s items older than %.0f s dropped", n, kind, self.max_age)
        excess = max(self.rows - self.max_rows, 0)
        while excess > 0 or self.bytes > self.max_bytes:
            n = max(excess, 100)
            victims = self.db.execute("SELECT seq, kind, size FROM outbox ORDER BY priority, seq LIMIT ?",
                                      (n,)).fetchall()
            if not victims:
                break
            if self.bytes > self.max_bytes and excess <= 0:  # drop only what brings bytes under the bound
                acc, cut = 0, 0
                for _, _, size in victims:
                    acc += size
                    cut += 1
                    if self.bytes - acc <= self.max_bytes:
                        break
                victims = victims[:cut]
            else:
                victims = victims[:excess]
            self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
            dropped: dict[str, int] = {}
            for _, kind, size in victims:
                dropped[kind] = dropped.get(kind, 0) + 1
                self.rows -= 1
                self.bytes -= size
            for kind, k in dropped.items():
                self._count(f"dropped.{kind}", k)
                log.warning("outbox full: dropped the %d oldest %s items (%s)", k, kind,
                            "ALERTS" if kind == "alert" else "lowest priority first")
            excess = max(self.rows - self.max_rows, 0)

    def head(self, max_items: int = 1000, max_bytes: int = 256 << 10) -> tuple[int, int, list[bytes]]:
        """The oldest rows: (first seq, last seq, bodies); (0, 0, []) when empty."""
        with self.lock:
            rows = self.db.execute("SELECT seq, size, body FROM outbox ORDER BY seq LIMIT ?", (max_items,)).fetchall()
        out: list[tuple[int, bytes]] = []
        size = 0
        for seq, n, body in rows:
            if out and size + n > max_bytes:
                break
            out.append((seq, body))
            size += n
        if not out:
            return 0, 0, []
        return out[0][0], out[-1][0], [b for _, b in out]

    def ack(self, first: int, last: int) -> int:
        with self.lock:
            got = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE seq BETWEEN ? AND ?",
                                  (first, last)).fetchone()
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last))
            self._count("delivered", got[0])
            self.db.execute("COMMIT")
            self.rows -= got[0]
            self.bytes -= got[1]
        return int(got[0])

    def count(self, name: str, n: int = 1) -> None:
        """Add to a persistent counter (shown by :meth:`stats`)."""
        with self.lock:
            self._count(name, n)

    def media_head(self) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT id, upload_id, path, content_type, sha256, size FROM media "
                                  "ORDER BY created LIMIT 1").fetchone()
        if row is None:
            return None
        return dict(zip(("id", "upload_id", "path", "content_type", "sha256", "size"), row))

    def media_done(self, media_id: str, *, failed: bool = False) -> None:
        with self.lock:
            row = self.db.execute("SELECT path FROM media WHERE id = ?", (media_id,)).fetchone()
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM media WHERE id = ?", (media_id,))
            self._count("media.failed" if failed else "media.delivered", 1)
            self.db.execute("COMMIT")
            # the file goes after the row (a crash in between leaves a stray file, not a row without one) and
            # under the lock, so whoever sees the row gone sees the file gone
            if row and failed:  # kept for a person to look at, out of the sender's way
                Path(row[0]).replace(row[0] + ".rejected") if Path(row[0]).exists() else None
            elif row:
                Path(row[0]).unlink(missing_ok=True)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            media = self.db.execute("SELECT count(*) FROM media").fetchone()[0]
        dropped = {k.split(".", 1)[1]: v for k, v in self.counters.items() if k.startswith(("dropped.", "expired."))}
        refused = {k.split(".", 1)[1]: v for k, v in self.counters.items() if k.startswith("refused.")}
        return {"rows": self.rows, "bytes": self.bytes, "media": media, "accepted": self.counters.get("accepted", 0),
                "delivered": self.counters.get("delivered", 0), "dropped": dropped,
                "dropped_total": sum(dropped.values()), "refused": refused, "refused_total": sum(refused.values()),
                "rejected": self.counters.get("rejected", 0)}
