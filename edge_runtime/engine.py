"""Runs pipeline instances over micro-batches.

:class:`Instance` pushes batches through one instance's operators (synchronously:
what the offline replay and the benchmarks use). :class:`Engine` runs many
instances at once in a live node, each on its own worker thread behind a bounded
queue (backpressure), with wall-clock ticks for operators that need them.

Nothing an operator does to a record stops a pipeline: rejected rows are dead
letters with a reason, and an operator that raises sends its whole batch to the
dead letters with the exception named, then the instance goes on.

Given a ``state`` store, an engine keeps operator state across a clean restart:
:meth:`Engine.stop_all` saves each instance's :meth:`Instance.snapshot` (open
windows stay open rather than being flushed), keyed by the instance's name and
its plan's :attr:`Instance.fingerprint`, and :meth:`Engine.start` restores it
when the same instance of the same plan starts again (a changed plan starts
fresh). An instance stopped on its own (:meth:`Engine.stop`) has ended: it flushes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from .desensitise import Desensitiser
from .operators import StepContext, Windows
from .operators.base import Operator
from .pipeline import Plan, Step
from .records import Batch, without_media

__all__ = ["Instance", "Engine", "MemorySinks", "DeadLetterList", "StateStore"]

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

    @property
    def fingerprint(self) -> str:
        """A hash of what the operators were built from (name, product, steps with their parameters, uplink):
        state saved under one fingerprint is restored only into an instance of the same plan."""
        plan = self.plan
        spec = {"name": plan.name, "product": plan.product, "uplink": plan.uplink,
                "steps": [[s.op, s.params, s.id] for s in plan.steps]}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()[:32]

    def snapshot(self) -> dict[str, Any]:
        """The operators' state, as JSON: ``{"steps": {step id: operator snapshot}}`` for each step that keeps
        state (see :meth:`Operator.snapshot`). Taken between batches, on the thread that runs the instance."""
        steps = {}
        for op in self.ops:
            st = op.snapshot()
            if st is not None:
                steps[op.ctx.step] = st
        return {"steps": steps}

    def restore(self, state: dict[str, Any]) -> None:
        """Give each step its state from :meth:`snapshot` (before any input). All or nothing: a step that
        refuses its state raises ValueError naming it, and the operators are left as they were."""
        steps = state.get("steps") if isinstance(state, dict) else None
        if not isinstance(steps, dict):
            raise ValueError(f"instance {self.name}: expected a snapshot {{steps: ...}}, got {type(state).__name__}")
        unknown = sorted(set(steps) - {op.ctx.step for op in self.ops})
        if unknown:
            raise ValueError(f"instance {self.name}: the snapshot has state for steps this plan lacks: {unknown}")
        fresh = []
        for op in self.ops:
            if op.ctx.step not in steps:
                fresh.append(op)
                continue
            new = type(op)(copy.deepcopy(op.spec), op.ctx)
            try:
                new.restore(steps[op.ctx.step])
            except Exception as exc:
                raise ValueError(f"instance {self.name}, step {op.ctx.step} ({op.name}): cannot restore its "
                                 f"state: {exc!r}") from exc
            fresh.append(new)
        self.ops = fresh

    def close(self) -> None:
        """Release what operators hold outside the process (files) without flushing: after a snapshot."""
        for op in self.ops:
            try:
                op.close()
            except Exception:  # pragma: no cover - defensive
                log.exception("close of %s failed", op.ctx.step)


class StateStore(Protocol):
    """Where an engine keeps instances' state across a restart (the node's :class:`~edge_runtime.store.LocalStore`)."""

    def save_state(self, instance: str, fingerprint: str, state: Any) -> None: ...

    def take_state(self, instance: str, fingerprint: str) -> Any: ...


class _Stop:
    """The last item of a worker's queue: flush (the input ended) or snapshot (the instance goes on later)."""

    def __init__(self, keep_state: bool) -> None:
        self.keep_state = keep_state


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
        self.state: dict[str, Any] | None = None  # the instance's snapshot, when it stopped keeping state

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
            if isinstance(item, _Stop):
                self._finish(item)
                return
            stop: _Stop | None = None
            if item is not None:
                # take what else is already queued (up to COALESCE rows): one larger batch costs less per
                # record (models batch it) and adds no wait; record order is kept
                parts, rows, taken = [item], len(item), 1
                while rows < COALESCE:
                    try:
                        more = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(more, _Stop):
                        stop = more
                        break
                    parts.append(more)
                    rows += len(more)
                    taken += 1
                batch = parts[0] if len(parts) == 1 else Batch.concat(parts)
                self._emit(inst.push(batch))
                self.processed += len(batch)
                for _ in range(taken):
                    self.queue.task_done()
            if stop is not None:
                self._finish(stop)
                return
            if time.monotonic() >= next_tick:
                self._emit(inst.tick(time.time()))
                next_tick = time.monotonic() + self.tick_interval

    def _finish(self, stop: _Stop) -> None:
        inst = self.instance
        if stop.keep_state:
            try:
                self.state = inst.snapshot()
            except Exception:  # an operator's bug: this instance starts fresh next time
                log.exception("snapshot of %s failed", inst.name)
            inst.close()
        else:
            self._emit(inst.flush())
        self.queue.task_done()

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
                 tick_interval: float = 0.5, state: StateStore | None = None) -> None:
        """``state``: where instances' state is kept across a clean restart (None: every start is fresh)."""
        self.on_output = on_output
        self.queue_size = queue_size
        self.tick_interval = tick_interval
        self.state = state
        self.workers: dict[str, _Worker] = {}
        self.lock = threading.Lock()

    def start(self, instance: Instance) -> None:
        """Run an instance; with a state store, first restore what it saved when it last stopped cleanly."""
        with self.lock:
            if instance.name in self.workers:
                raise ValueError(f"pipeline instance {instance.name!r} is already running")
            if self.state is not None:
                self._restore(instance, self.state)
            w = _Worker(instance, self.on_output, self.queue_size, self.tick_interval)
            self.workers[instance.name] = w
            w.start()

    def _restore(self, instance: Instance, store: StateStore) -> None:
        try:
            saved = store.take_state(instance.name, instance.fingerprint)
            if saved is not None:
                instance.restore(saved)
                log.info("pipeline instance %s goes on from its saved state", instance.name)
        except Exception:  # unreadable or refused state: the instance starts fresh, as without a store
            log.exception("pipeline instance %s: saved state not restored, starting fresh", instance.name)

    def stop(self, name: str, timeout: float = 10.0, *, keep_state: bool = False) -> None:
        """Stop an instance after what is queued for it. Its input has ended (it flushes: open windows go
        out), unless ``keep_state`` and the engine has a state store: then it saves its snapshot instead."""
        with self.lock:
            w = self.workers.pop(name, None)
        if w is None:
            return
        store = self.state if keep_state else None
        w.queue.put(_Stop(store is not None))
        w.join(timeout)
        if store is not None and w.state is not None and not w.is_alive():
            try:
                store.save_state(name, w.instance.fingerprint, w.state)
            except Exception:  # e.g. a plug-in operator's state that is not JSON: it starts fresh next time
                log.exception("pipeline instance %s: state not saved", name)

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

    def stop_all(self, timeout: float = 10.0, *, keep_state: bool = True) -> None:
        """Stop every instance: with a state store each saves its state for the next start (a clean
        restart), without one, or with ``keep_state=False`` (the end for good), each flushes."""
        for name in list(self.workers):
            self.stop(name, timeout, keep_state=keep_state)

    def stats(self) -> list[dict[str, Any]]:
        return [{**w.instance.stats(), "queue": w.queue.qsize(), "processed": w.processed}
                for w in self.workers.values()]
