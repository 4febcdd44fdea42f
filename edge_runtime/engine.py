"""Runs pipeline instances over micro-batches.

:class:`Instance` pushes batches through one instance's operators (synchronously:
what the offline replay and the benchmarks use). :class:`Engine` runs many
instances at once in a live node, each on its own worker thread behind a bounded
queue (backpressure), with wall-clock ticks for operators that need them.

Nothing an operator does to a record stops a pipeline: rejected rows are dead
letters with a reason, and an operator that raises sends its whole batch to the
dead letters with the exception named, then the instance goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .desensitise import Desensitiser
from .operators import StepContext, Windows
from .operators.base import Operator
from .pipeline import Plan, Step
from .records import Batch, without_media

__all__ = ["Instance", "Engine", "MemorySinks", "DeadLetterList"]

log = logging.getLogger("edgeloop.engine")


class MemorySinks:
    """Alerts, notifications and device actions kept in lists (replay, tests)."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []

    def upload(self, items: list[dict[str, Any]]) -> None:
        self.uploads.extend(items)

    def alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)

    def notification(self, note: dict[str, Any]) -> None:
        self.notifications.append(note)

    def device_output(self, action: dict[str, Any]) -> None:
        self.actions.append(action)


class DeadLetterList:
    """Dead letters kept in memory: (pipeline, instance, step, record, reason)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, *, source: str, reason: str, record: Any = None, raw: Any = None,
            device: str | None = None) -> None:
        self.items.append({"source": source, "reason": reason, "record": record, "raw": raw,
                           "device": device, "at": time.time()})


@dataclass
class StepCounters:
    step: str
    op: str
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0, "dead": 0, "errors": 0})


class Instance:
    """One running instance of a pipeline plan, with its own operator state."""

    def __init__(self, name: str, plan: Plan, *, devices: Iterable[str] | None = None,
                 sinks: Any = None, models: Any = None, store: Any = None, dead_letters: Any = None) -> None:
        self.name = name
        self.plan = plan
        self.devices = frozenset(devices) if devices is not None else None
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterList()
        self.counters: list[StepCounters] = []
        self.desensitiser = Desensitiser(plan.uplink) if plan.uplink else None
        self.ops: list[Operator] = plan.instantiate(lambda step: self._ctx(step, sinks, models, store))
        self.outputs = 0

    def _ctx(self, step: Step, sinks: Any, models: Any, store: Any) -> StepContext:
        sc = StepCounters(step.id, step.op)
        self.counters.append(sc)
        return StepContext(pipeline=self.plan.name, instance=self.name, step=step.id,
                           product=self.plan.product, devices=self.devices, sinks=sinks, models=models,
                           store=store, dead=self._dead, desensitiser=self.desensitiser, counters=sc.counts)

    def _dead(self, step: str, rows: Batch, reasons: list[str]) -> None:
        for rec, reason in zip(map(without_media, rows.to_records()), reasons):
            self.dead_letters.add(source=f"{self.name}/{step}", reason=reason, record=rec,
                                  device=rec.get("device"))

    def push(self, batch: Batch) -> Batch:
        """Run a batch through every step; returns what leaves the last step."""
        return self._run(batch, 0)

    def _run(self, data: Any, start: int) -> Batch:
        for i in range(start, len(self.ops)):
            if data is None or not len(data):
                return Batch.empty()
            op = self.ops[i]
            if isinstance(data, Windows) and op.accepts != "windows":
                data = data.to_batch()
            counts = op.ctx.counters
            counts["in"] += len(data)
            try:
                data = op.process(data)
            except Exception as exc:  # an operator bug must not stop the pipeline
                counts["errors"] = counts.get("errors", 0) + 1
                log.exception("operator %s of %s failed", op.ctx.step, self.name)
                rows = data.to_batch() if isinstance(data, Windows) else data
                op.ctx.dead_letter(rows, f"operator {op.name} failed: {exc!r}")
                return Batch.empty()
            counts["out"] += 0 if data is None else len(data)
        if isinstance(data, Windows):
            data = data.to_batch()
        out = data if data is not None else Batch.empty()
        self.outputs += len(out)
        return out

    def flush(self) -> Batch:
        """End of input: flush each step in order, pushing what it releases through the rest."""
        outs = []
        for i, op in enumerate(self.ops):
            try:
                released = op.flush()
            except Exception:  # pragma: no cover - defensive
                log.exception("flush of %s failed", op.ctx.step)
                op.ctx.counters["errors"] = op.ctx.counters.get("errors", 0) + 1
                continue
            if released is not None and len(released):
                op.ctx.counters["out"] += len(released)
                outs.append(self._run(released, i + 1))
        return Batch.concat(outs)

    def tick(self, now: float) -> Batch:
        outs = []
        for i, op in enumerate(self.ops):
            released = op.tick(now)
            if released is not None and len(released):
                op.ctx.counters["out"] += len(released)
                outs.append(self._run(released, i + 1))
        return Batch.concat(outs)

    def history(self) -> Batch:
        """For a time_series_input first step: what the local store holds, run through the rest."""
        first = self.ops[0]
        if hasattr(first, "history"):
            rows = first.history()
            first.ctx.counters["in"] += len(rows)
            first.ctx.counters["out"] += len(rows)
            return self._run(rows, 1)
        return Batch.empty()

    def stats(self) -> dict[str, Any]:
        return {"instance": self.name, "pipeline": self.plan.name, "outputs": self.outputs,
                "steps": [{"step": c.step, "op": c.op, **c.counts} for c in self.counters]}


_STOP = object()
COALESCE = 4096  # most rows a worker merges from its queue into one push


class _Worker(threading.Thread):
    def __init__(self, instance: Instance, on_output: Callable[[Instance, Batch], None],
                 maxsize: int, tick_interval: float) -> None:
        super().__init__(name=f"pipeline-{instance.name}", daemon=True)
        self.instance = instance
        self.on_output = on_output
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.tick_interval = tick_interval
        self.busy = threading.Event()
        self.processed = 0
        self.output_errors = 0

    def run(self) -> None:
        inst = self.instance
        self._emit(inst.history())
        next_tick = time.monotonic() + self.tick_interval
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._emit(inst.flush())
                self.queue.task_done()
                return
            stop = False
            if item is not None:
                # take what else is already queued (up to COALESCE rows): one larger batch costs less per
                # record (models batch it) and adds no wait; record order is kept
                parts, rows, taken = [item], len(item), 1
                while rows < COALESCE:
                    try:
                        more = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    parts.append(more)
                    rows += len(more)
                    taken += 1
                batch = parts[0] if len(parts) == 1 else Batch.concat(parts)
                self._emit(inst.push(batch))
                self.processed += len(batch)
                for _ in range(taken):
                    self.queue.task_done()
            if stop:
                self._emit(inst.flush())
                self.queue.task_done()
                return
            if time.monotonic() >= next_tick:
                self._emit(inst.tick(time.time()))
                next_tick = time.monotonic() + self.tick_interval

    def _emit(self, out: Batch) -> None:
        if len(out):
            try:
                self.on_output(self.instance, out)
            except Exception:  # a failing output must not kill the worker
                self.output_errors += 1
                log.exception("output of %s failed", self.instance.name)


class Engine:
    """Many pipeline instances at once, each on a worker thread behind a bounded queue."""

    def __init__(self, on_output: Callable[[Instance, Batch], None], *, queue_size: int = 64,
                 tick_interval: float = 0.5) -> None:
        self.on_output = on_output
        self.queue_size = queue_size
        self.tick_interval = tick_interval
        self.workers: dict[str, _Worker] = {}
        self.lock = threading.Lock()

    def start(self, instance: Instance) -> None:
        with self.lock:
            if instance.name in self.workers:
                raise ValueError(f"pipeline instance {instance.name!r} is already running")
            w = _Worker(instance, self.on_output, self.queue_size, self.tick_interval)
            self.workers[instance.name] = w
            w.start()

    def stop(self, name: str, timeout: float = 10.0) -> None:
        with self.lock:
            w = self.workers.pop(name, None)
        if w is not None:
            w.queue.put(_STOP)
            w.join(timeout)

    def submit(self, batch: Batch, timeout: float | None = None) -> None:
        """Hand a batch to every instance (blocks while a queue is full: backpressure)."""
        if not len(batch):
            return
        for w in list(self.workers.values()):
            w.queue.put(batch, timeout=timeout)

    def submit_to(self, name: str, batch: Batch, *, block: bool = True, timeout: float | None = None) -> bool:
        """Hand a batch to one instance; without ``block`` a full queue drops it (returns False)."""
        w = self.workers.get(name)
        if w is None or not len(batch):
            return w is not None
        try:
            w.queue.put(batch, block=block, timeout=timeout)
        except queue.Full:
            return False
        return True

    def offer(self, batch: Batch) -> int:
        """Hand a batch to every instance without waiting (live video: a late frame is worth less than the
        next one); returns how many instances dropped it because their queue was full."""
        dropped = 0
        for w in list(self.workers.values()):
            try:
                w.queue.put_nowait(batch)
            except queue.Full:
                dropped += 1
        return dropped

    def queue_depths(self) -> dict[str, int]:
        return {name: w.queue.qsize() for name, w in self.workers.items()}

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queue is empty (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(w.queue.unfinished_tasks == 0 for w in self.workers.values()):
                return True
            time.sleep(0.01)
        return False

    def stop_all(self, timeout: float = 10.0) -> None:
        for name in list(self.workers):
            self.stop(name, timeout)

    def stats(self) -> list[dict[str, Any]]:
        return [{**w.instance.stats(), "queue": w.queue.qsize(), "processed": w.processed}
                for w in self.workers.values()]
