"""One pipeline instance run over micro-batches: :class:`Instance` pushes batches through its operators
(synchronously: what the engine's workers, the offline replay and the benchmarks use), counts per step, sends
the rows an operator rejects to the dead letters with their reason, and snapshots and restores its operators'
state. An operator that raises sends its whole batch to the dead letters with the exception named, then the
instance goes on. :class:`MemorySinks` and :class:`DeadLetterList` keep results in memory (replay, tests).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from .desensitise import Desensitiser
from .operators import StepContext, Windows
from .operators.base import Operator
from .pipeline import Plan, Step
from .records import Batch, without_media

__all__ = ["Instance", "MemorySinks", "DeadLetterList", "StepCounters"]

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
