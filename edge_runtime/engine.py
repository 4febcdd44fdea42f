"""Runs pipeline instances over micro-batches in a live node.

:class:`Engine` runs many :class:`~edge_runtime.instance.Instance` at once, each on its own worker thread behind
a bounded queue (backpressure), with wall-clock ticks for operators that need them. Nothing an operator does to
a record stops a pipeline: rejected rows are dead letters with a reason (see :mod:`edge_runtime.instance`).

Given a ``state`` store, an engine keeps operator state across a clean restart:
:meth:`Engine.stop_all` saves each instance's :meth:`Instance.snapshot` (open
windows stay open rather than being flushed), keyed by the instance's name and
its plan's :attr:`Instance.fingerprint`, and :meth:`Engine.start` restores it
when the same instance of the same plan starts again (a changed plan starts
fresh). An instance stopped on its own (:meth:`Engine.stop`) has ended: it flushes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Protocol

from .instance import DeadLetterList, Instance, MemorySinks, StepCounters
from .records import Batch

__all__ = ["Instance", "Engine", "MemorySinks", "DeadLetterList", "StateStore", "StepCounters"]

log = logging.getLogger("edgeloop.engine")


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
