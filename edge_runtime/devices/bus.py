"""The Device Bus: every reading becomes a Record, kept, published and handed to pipelines.

Connectors turn device messages into validated Records (or dead letters) on
their own threads and ``submit`` them. The bus thread merges what arrived into
micro-batches and, per batch: writes them to the local store, publishes each
record on ``edgeloop/<node>/devices/<device>/telemetry`` (when enabled), and
hands one columnar Batch to the engine. The submit queue is bounded: a slow
consumer slows the connectors down instead of losing records.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from typing import Any, Callable, Sequence

from .. import jsonio
from ..records import Batch

__all__ = ["DeviceBus", "DeadLetterSink", "telemetry_topic"]

log = logging.getLogger("edgeloop.bus")


def telemetry_topic(node: str, device: str) -> str:
    return f"edgeloop/{node}/devices/{device}/telemetry"


class DeadLetterSink:
    """Collects dead letters from connectors and pipelines; the bus thread stores them in batches."""

    def __init__(self, store: Any = None, keep: int = 1000) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.pending: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.recent: list[dict[str, Any]] = []
        self.keep = keep
        self.total = 0

    def add(self, *, source: str, reason: str, record: Any = None, raw: Any = None, device: str | None = None) -> None:
        item = {"at": time.time(), "source": source, "reason": reason, "record": record,
                "raw": raw.decode(errors="replace") if isinstance(raw, (bytes, bytearray)) else raw,
                "device": device}
        kind = reason.split(":")[0].split(" (")[0][:60]
        with self.lock:
            self.pending.append(item)
            self.counts[f"{source.split('/')[0]}: {kind}"] += 1
            self.total += 1
            self.recent.append(item)
            if len(self.recent) > self.keep:
                del self.recent[: len(self.recent) - self.keep]

    def flush(self) -> int:
        with self.lock:
            items, self.pending = self.pending, []
        if items and self.store is not None:
            self.store.add_dead_letters(items)
        return len(items)


class DeviceBus:
    """Validated records in, micro-batches out (store, telemetry topic, engine)."""

    def __init__(self, node: str, *, store: Any = None, engine: Any = None,
                 telemetry: Any = None,
                 dead_letters: DeadLetterSink | None = None, max_batch: int = 5000,
                 flush_interval: float = 0.002, queue_size: int = 1000, events: Any = None) -> None:
        self.node = node
        self.events = events if events else None  # devices.events.EventRules: events derived from readings
        self.store = store
        self.engine = engine
        # telemetry (when given a RawPublisher) goes out as one sendall a micro-batch
        self.telemetry = telemetry
        self.dead_letters = dead_letters or DeadLetterSink(store)
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=queue_size)
        self.records_in = 0
        self.per_device: Counter[str] = Counter()
        self.batches = 0
        self.listeners: list[Callable[[Sequence[dict[str, Any]]], None]] = []
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._idle = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="device-bus", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self.dead_letters.flush()

    def submit(self, records: list[dict[str, Any]]) -> None:
        """Hand validated records to the bus (blocks while the bus is behind: backpressure)."""
        if records:
            self._idle.clear()
            self.queue.put(records)

    def dead(self, source: str, reason: str, *, device: str | None = None, raw: Any = None,
             record: Any = None) -> None:
        self.dead_letters.add(source=source, reason=reason, device=device, raw=raw, record=record)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once everything submitted so far has gone through (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.unfinished_tasks == 0:
                return True
            self._idle.wait(0.01)
        return False

    def _run(self) -> None:
        while True:
            try:
                first = self.queue.get(timeout=0.5)
            except queue.Empty:
                self.dead_letters.flush()
                continue
            if first is None:
                self.queue.task_done()
                return
            records = list(first)
            taken = 1
            # Take what is queued now and deliver it: no waiting for more. Under load the batches grow by
            # themselves (what arrives while one is delivered is the next); when quiet a record goes at once.
            # ``flush_interval`` > 0 brings back waiting for stragglers (larger batches, more latency).
            deadline = time.monotonic() + self.flush_interval
            stop = False
            while len(records) < self.max_batch:
                try:
                    wait = deadline - time.monotonic()
                    more = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if more is None:
                    stop = True
                    break
                records.extend(more)
            try:
                self._deliver(records)
            except Exception:  # keep the bus alive whatever a sink does
                log.exception("device bus delivery failed")
            finally:
                for _ in range(taken):
                    self.queue.task_done()
                if self.queue.unfinished_tasks == 0:
                    self._idle.set()
            if stop:
                return

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        if self.events is not None:
            raised = self.events.scan(records)
            if raised:
                records = records + raised
        self.batches += 1
        self.per_device.update(r["device"] for r in records)
        try:
            # the pipelines first: their workers run while this thread writes the store (latency to decisions)
            if self.engine is not None:
                self.engine.submit(Batch.from_records(records))
            if self.telemetry is not None:
                node, dumps = self.node, jsonio.dumps
                self.telemetry.publish_many((telemetry_topic(node, r["device"]), dumps(r)) for r in records)
            if self.store is not None:
                self.store.add_records(records)
        finally:
            # counted once handed to the store: a reader that sees the count sees the records in a query
            self.records_in += len(records)
        for listener in self.listeners:
            listener(records)
        self.dead_letters.flush()
