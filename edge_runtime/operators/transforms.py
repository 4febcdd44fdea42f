"""Transform operators: keep, thin out or compute records (filter, sample, change_trigger, custom_function)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..expr import is_finite_array
from ..records import Batch
from .base import Operator, SpecError, grow, parse_duration, register
from .params import expression, names
from .state import by_code, by_device

__all__ = ["Filter", "Sample", "ChangeTrigger", "CustomFunction"]


@register
class Filter(Operator):
    """Keep records for which a safe expression over their values is true."""

    name = "filter"
    params = {"expr": "expression over values, device and ts, e.g. temperature > 80"}
    required = ("expr",)
    shorthand = "expr"

    def configure(self, expr: Any) -> None:
        self.expr = expression(expr, "expr")

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        ev = self.expr.evaluate(batch)
        values = ev.values
        if values.dtype != bool:
            values = np.array([bool(v) for v in values.tolist()], dtype=bool)
        if ev.failed.any():
            bad = np.flatnonzero(ev.failed)
            self.ctx.dead_letter(batch.take(bad), [f"filter: {ev.reasons.get(i, 'error')}"
                                                   for i in bad.tolist()])
            values = values & ~ev.failed
        return batch if values.all() else batch.take(values)


@register
class Sample(Operator):
    """Per device, keep every Nth record (``every``) or one record per ``interval`` of event time."""

    name = "sample"
    params = {"every": "keep the 1st, (N+1)th, ... record of each device",
              "interval": "keep a record when this much event time passed since the last kept one"}

    def configure(self, every: Any = None, interval: Any = None) -> None:
        if (every is None) == (interval is None):
            raise SpecError("give exactly one of 'every' or 'interval'", field="every")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise SpecError(f"expected a whole number >= 1, got {every!r}", field="every")
        self.every = every
        self.interval = parse_duration(interval, "interval") if interval is not None else None
        self.seen = np.zeros(64, dtype=np.int64)
        self.last_kept: dict[int, float] = {}

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        if not n:
            return batch
        codes = batch.codes
        if self.every is not None:
            self.seen = grow(self.seen, int(codes.max()) + 1, 0)
            order = np.argsort(codes, kind="stable")
            dev_s = codes[order]
            first = np.empty(n, dtype=bool)
            first[0] = True
            np.not_equal(dev_s[1:], dev_s[:-1], out=first[1:])
            seg_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
            pos = np.arange(n) - seg_start + self.seen[dev_s]
            keep_s = pos % self.every == 0
            np.add.at(self.seen, codes, 1)
            keep = np.empty(n, dtype=bool)
            keep[order] = keep_s
            return batch.take(keep)
        keep = np.zeros(n, dtype=bool)
        last = self.last_kept
        interval = self.interval
        for i, (c, t) in enumerate(zip(codes.tolist(), batch.ts.tolist())):
            prev = last.get(c)
            if prev is None or t - prev >= interval:
                keep[i] = True
                last[c] = t
        return batch.take(keep)

    def snapshot(self) -> dict[str, Any]:
        """Per device id: how many records were seen (``every``) or the event time of the last kept one
        (``interval``)."""
        if self.every is not None:
            return {"seen": by_device({c: int(n) for c, n in enumerate(self.seen.tolist()) if n})}
        return {"last_kept": by_device(self.last_kept)}

    def restore(self, state: dict[str, Any]) -> None:
        seen = by_code(state.get("seen", {}))
        if seen:
            self.seen = grow(self.seen, max(seen) + 1, 0)
            for c, n in seen.items():
                self.seen[c] = n
        self.last_kept = {c: float(t) for c, t in by_code(state.get("last_kept", {})).items()}


@register
class ChangeTrigger(Operator):
    """Pass a record when a listed field differs from the last passed record of its device."""

    name = "change_trigger"
    params = {"fields": "fields to watch", "threshold": "numbers: pass when |new - old| >= threshold"}
    required = ("fields",)
    shorthand = "fields"

    def configure(self, fields: Any, threshold: Any = None) -> None:
        self.fields = names(fields, "fields") or []
        if not self.fields:
            raise SpecError("name at least one field", field="fields")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or threshold < 0):
            raise SpecError(f"expected a number >= 0, got {threshold!r}", field="threshold")
        self.threshold = threshold
        self.last: dict[int, tuple[Any, ...]] = {}

    def _changed(self, old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
        for a, b in zip(old, new):
            if self.threshold is not None and isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                    and not isinstance(a, bool) and not isinstance(b, bool):
                if abs(b - a) >= self.threshold:
                    return True
            elif a != b:
                return True
        return False

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        if not n:
            return batch
        missing = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        for f in self.fields:
            m = ~batch.has(f)
            for i in np.flatnonzero(m & ~missing).tolist():
                reasons[i] = f"change_trigger: missing field '{f}'"
            missing |= m
        cols = [batch.cols[f].data.tolist() if f in batch.cols else [None] * n for f in self.fields]
        keep = np.zeros(n, dtype=bool)
        last = self.last
        for i, c in enumerate(batch.codes.tolist()):
            if missing[i]:
                continue
            cur = tuple(col[i] for col in cols)
            prev = last.get(c)
            if prev is None or self._changed(prev, cur):
                keep[i] = True
                last[c] = cur
        if missing.any():
            bad = np.flatnonzero(missing)
            self.ctx.dead_letter(batch.take(bad), [reasons[i] for i in bad.tolist()])
        return batch.take(keep)

    def snapshot(self) -> dict[str, Any]:
        """Per device id: the watched fields' values of its last passed record."""
        return {"last": by_device({c: list(v) for c, v in self.last.items()})}

    def restore(self, state: dict[str, Any]) -> None:
        self.last = {c: tuple(v) for c, v in by_code(state["last"]).items()}


@register
class CustomFunction(Operator):
    """Add or replace fields with safe expressions, in order: ``{set: {temp_f: "temperature * 9 / 5 + 32"}}``."""

    name = "custom_function"
    params = {"set": "mapping field -> expression; later ones see earlier ones"}
    required = ("set",)

    def configure(self, set: Any) -> None:  # noqa: A002 - the spec's own word
        if not isinstance(set, dict) or not set:
            raise SpecError("expected a mapping of field: expression", field="set")
        self.assignments = [(k, expression(v, f"set.{k}")) for k, v in set.items()]

    def process(self, batch: Batch) -> Batch:
        for name, expr in self.assignments:
            if not len(batch):
                return batch
            ev = expr.evaluate(batch)
            failed = ev.failed
            reasons = ev.reasons
            finite = is_finite_array(ev.values) if ev.values.dtype.kind in "fO" else None
            if finite is not None and not finite.all():
                nonfinite = ~finite & ~failed
                for i in np.flatnonzero(nonfinite).tolist():
                    reasons[i] = f"result is not finite ({ev.values[i]!r})"
                failed = failed | nonfinite
            values = ev.values
            if failed.any():
                bad = np.flatnonzero(failed)
                self.ctx.dead_letter(batch.take(bad), [f"custom_function {name}: {reasons.get(i, 'error')}"
                                                       for i in bad.tolist()])
                batch = batch.take(~failed)
                values = values[~failed]
            else:
                batch = Batch(batch.codes, batch.product, batch.ts, dict(batch.cols))
            batch.set_column(name, np.asarray(values))
        return batch

