"""Heartbeats, written behind: the newest heartbeat per node is kept in memory and a writer thread stores
them every ``flush_s`` in one transaction, with the drift scores they carry (:mod:`hub.drift`). A thousand nodes heartbeating cost a few transactions a second
instead of one each (SQLite has one writer at a time); what this process has not stored yet is merged into
what it shows (:meth:`HeartbeatBuffer.merged`)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from .db import Node
from .drift import DriftRecorder

__all__ = ["HeartbeatBuffer"]

log = logging.getLogger("edgeloop.hub")

Pending = dict[str, tuple[float, dict[str, Any], int]]  # node -> (time, its newest heartbeat, heartbeats since)


class HeartbeatBuffer:
    """Heartbeats on their way to the ``nodes`` table (``last_seen``, ``heartbeat``, ``heartbeats``)."""

    def __init__(self, engine: sa.Engine, flush_s: float = 0.25, drift: DriftRecorder | None = None) -> None:
        self.engine = engine
        self.drift = drift or DriftRecorder()  # the models' drift scores in the heartbeats: a time series
        self.flush_s = flush_s
        self._pending: Pending = {}
        self._flushing: Pending = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def record(self, node: str, hb: dict[str, Any]) -> None:
        """Keep ``hb`` as ``node``'s newest heartbeat; the writer thread (started on the first) stores it."""
        with self._lock:
            prev = self._pending.get(node)
            self._pending[node] = (time.time(), hb, (prev[2] if prev else 0) + 1)
            if self._thread is None:
                self._thread = threading.Thread(target=self._flush_loop, name="heartbeat-writer", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Store what is pending now, in one transaction."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushing = pending
        try:
            if pending:
                rows = [{"n": name, "t": t, "hb": hb, "k": k} for name, (t, hb, k) in pending.items()]
                stmt = (sa.update(Node).where(Node.name == sa.bindparam("n"))
                        .values(last_seen=sa.bindparam("t"), heartbeat=sa.bindparam("hb", type_=sa.JSON),
                                heartbeats=Node.heartbeats + sa.bindparam("k")))
                drift = self.drift.rows((name, t, hb) for name, (t, hb, _) in pending.items())
                with self.engine.begin() as c:
                    c.execute(stmt, rows)
                    self.drift.store(c, drift, time.time())
        finally:
            with self._lock:
                self._flushing = {}

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # the database is away: these heartbeats are lost, the next ones are not
                log.exception("storing heartbeats failed")

    def close(self) -> None:
        """Stop the writer thread and store what is pending."""
        self._closed.set()
        self.flush()

    def merged(self, n: Node) -> tuple[dict[str, Any], float | None, int]:
        """``n``'s newest heartbeat, when it was seen and how many it sent: its row with what is not stored yet."""
        hb, last_seen, count = n.heartbeat or {}, n.last_seen, n.heartbeats or 0
        with self._lock:
            for buf in (self._flushing, self._pending):
                if n.name in buf:
                    last_seen, hb, k = buf[n.name]
                    count += k
        return hb, last_seen, count
