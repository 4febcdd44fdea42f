"""The promises every operator keeps, checked on one operator: :func:`check_operator`.

Built-in operators are checked by the test suite; a plug-in author calls it from their own tests
(``from edge_runtime.testing import check_operator``). Each broken promise is an :class:`OperatorCheckError`
that names the promise, the operator with its parameters, and the input that showed it.

The promises, on the records given (which must be valid input for the operator):

- it documents itself (a docstring) and declares its parameter schema (``params``);
- it builds from the example parameters;
- it never raises from ``process`` or ``flush``: rows it cannot take are dead letters with a reason;
- valid input makes no dead letters;
- it does not modify its input (the batch, its columns, the arrays in them);
- its output (the records it hands on, what it sends to the sinks, its dead letters) does not depend on how
  the input is cut into micro-batches;
- its state survives ``snapshot``/``restore``: fed part of the input, snapshotted (a JSON value), a freshly
  built operator restored from it and fed the rest gives what one uninterrupted operator gives; taking the
  snapshot changes nothing for the operator it was taken from.

``bad_records`` (optional) are checked too: never an exception, every dead letter has a reason and its record,
the same result whatever the micro-batch size.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..records import Batch
from .base import Operator, StepContext, lookup
from .windows import Windows

__all__ = ["check_operator", "CheckReport", "OperatorCheckError", "PROMISES"]

PROMISES = ("documents itself", "builds from its example", "dead letters instead of exceptions",
            "no dead letters on valid input", "does not mutate its input", "output independent of batch size",
            "state survives snapshot/restore")

BATCH_SIZES = (1, 3, 7)


class OperatorCheckError(AssertionError):
    """An operator broke one of its promises: ``promise`` (one of :data:`PROMISES`), ``operator`` (its name
    and parameters) and ``detail`` (the input and what happened) are attributes and make the message."""

    def __init__(self, operator: str, promise: str, detail: str) -> None:
        self.operator, self.promise, self.detail = operator, promise, detail
        super().__init__(f"{operator} breaks the promise '{promise}': {detail}")


@dataclass
class CheckReport:
    """What the operator did with the valid input, fed as one batch (for a test's own assertions)."""

    operator: str
    outputs: list[dict[str, Any]] = field(default_factory=list)  # the records it handed on
    sink_items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (sink, item): alerts, uploads...
    dead_letters: int = 0
    stateful: bool = False  # it returned a snapshot other than None
    snapshots: int = 0  # snapshot/restore splits checked


def check_operator(cls: type[Operator] | str, example: Any, records: Sequence[dict[str, Any]] | None = None, *,
                   before: Sequence[tuple[type[Operator] | str, Any]] = (), product: str | None = None,
                   models: Any = None, desensitiser: Any = None, store: Any = None,
                   bad_records: Sequence[dict[str, Any]] | None = None,
                   batch_sizes: Sequence[int] = BATCH_SIZES) -> CheckReport:
    """Check that operator ``cls`` built from ``example`` (its step parameters) keeps every promise on
    ``records`` (valid input for it: Record dicts, values may hold numpy frames; default: three devices'
    readings of a number ``t``). ``before``: steps that feed it, as (operator, parameters) (``aggregate`` needs a
    ``time_window``). ``product``, ``models``, ``desensitiser``, ``store``: what its step context holds.

    Raises :class:`OperatorCheckError` at the first broken promise; returns a :class:`CheckReport`.
    """
    target = lookup(cls) if isinstance(cls, str) else cls
    label = f"{target.name or target.__qualname__} {_short(example)}"
    if not (target.__doc__ or "").strip():
        raise OperatorCheckError(label, "documents itself", "the class has no docstring")
    if not isinstance(target.params, dict) or not target.params:
        raise OperatorCheckError(label, "documents itself", "params (its parameter schema) is empty")
    steps = [(lookup(c) if isinstance(c, str) else c, p) for c, p in before] + [(target, example)]
    context = {"product": product, "models": models, "desensitiser": desensitiser, "store": store}
    check = _Check(label, steps, context)
    check.build()  # fails first on parameters the operator refuses
    recs = list(records) if records is not None else _default_records()
    if not recs:
        raise ValueError("check_operator needs at least one record")
    whole = check.run([recs], f"{len(recs)} valid records in one batch")
    if whole.dead:
        step, rec, reason = whole.dead[0]
        raise OperatorCheckError(label, "no dead letters on valid input",
                                 f"{len(whole.dead)} dead letter(s) from {len(recs)} valid records, the first from "
                                 f"step {step}: {reason!r} for {_show(rec)}")
    check.same_for_batch_sizes(recs, whole, batch_sizes)
    splits = sorted({k for k in (1, len(recs) // 3, len(recs) // 2, 2 * len(recs) // 3, len(recs) - 1)
                     if 0 < k < len(recs)})
    stateful = False
    for k in splits:
        stateful |= check.state_survives(recs, k)
    if bad_records:
        bad = check.run([list(bad_records)], f"{len(bad_records)} bad records in one batch")
        for step, rec, reason in bad.dead:
            if not isinstance(reason, str) or not reason or rec is None:
                raise OperatorCheckError(label, "dead letters instead of exceptions",
                                         f"a dead letter from step {step} without a reason or its record: "
                                         f"{reason!r}, {_show(rec)}")
        check.same_for_batch_sizes(list(bad_records), bad, batch_sizes)
    return CheckReport(label, whole.outputs, whole.sinks, len(whole.dead), stateful, len(splits))


# -- running a chain of operators the way the engine does, with every promise watched ---------------------

class _Sinks:
    """Records what operators send: alerts, notifications, device actions, uploads."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def alert(self, item: dict[str, Any]) -> None:
        self.items.append(("alert", item))

    def notification(self, item: dict[str, Any]) -> None:
        self.items.append(("notification", item))

    def device_output(self, item: dict[str, Any]) -> None:
        self.items.append(("device_output", item))

    def upload(self, items: list[dict[str, Any]]) -> None:
        self.items.extend(("upload", i) for i in items)


@dataclass
class _Result:
    outputs: list[dict[str, Any]]
    sinks: list[tuple[str, dict[str, Any]]]
    dead: list[tuple[str, dict[str, Any], str]]

    def plain(self) -> dict[str, Any]:
        return {"outputs": _plain(self.outputs), "sent to sinks": _plain(self.sinks),
                "dead letters": _plain(self.dead)}


class _Chain:
    def __init__(self, check: _Check) -> None:
        self.check = check
        self.sinks = _Sinks()
        self.dead: list[tuple[str, dict[str, Any], str]] = []
        self.outputs: list[dict[str, Any]] = []
        self.ops: list[Operator] = []
        for i, (cls, params) in enumerate(check.steps):
            ctx = StepContext(pipeline="check", instance="check", step=f"{i + 1}:{cls.name}", sinks=self.sinks,
                              dead=self._dead, **check.context)
            self.ops.append(cls(copy.deepcopy(params), ctx))

    def _dead(self, step: str, rows: Batch, reasons: list[str]) -> None:
        self.dead.extend((step, rec, reason) for rec, reason in zip(rows.to_records(), reasons))

    def feed(self, records: list[dict[str, Any]], what: str) -> None:
        self._push(Batch.from_records(records), 0, what)

    def _push(self, data: Any, start: int, what: str) -> None:
        for i in range(start, len(self.ops)):
            if data is None or not len(data):
                return
            op = self.ops[i]
            if isinstance(data, Windows) and op.accepts != "windows":
                data = data.to_batch()
            given, before = data, (_frozen(data) if i == len(self.ops) - 1 else None)
            try:
                data = op.process(data)
            except Exception as exc:
                raise OperatorCheckError(self.check.label, "dead letters instead of exceptions",
                                         f"process() of step {op.ctx.step} raised {exc!r} on {what}") from exc
            if before is not None:
                changed = _first_difference(_frozen(given), before, "after", "before", "input")
                if changed:
                    raise OperatorCheckError(self.check.label, "does not mutate its input",
                                             f"process() on {what} changed the batch it was given: {changed}")
        if isinstance(data, Windows):
            data = data.to_batch()
        if data is not None and len(data):
            self.outputs.extend(data.to_records())

    def flush(self, what: str) -> None:
        for i, op in enumerate(self.ops):
            try:
                released = op.flush()
            except Exception as exc:
                raise OperatorCheckError(self.check.label, "dead letters instead of exceptions",
                                         f"flush() of step {op.ctx.step} raised {exc!r} after {what}") from exc
            if released is not None and len(released):
                self._push(released, i + 1, what)

    def result(self) -> _Result:
        return _Result(self.outputs, self.sinks.items, self.dead)


class _Check:
    def __init__(self, label: str, steps: list[tuple[type[Operator], Any]], context: dict[str, Any]) -> None:
        self.label, self.steps, self.context = label, steps, context

    def build(self) -> _Chain:
        try:
            return _Chain(self)
        except Exception as exc:  # SpecError above all: the example is wrong for this operator
            raise OperatorCheckError(self.label, "builds from its example", str(exc)) from exc

    def run(self, parts: list[list[dict[str, Any]]], what: str) -> _Result:
        chain = self.build()
        at = 0
        for part in parts:
            chain.feed(part, f"{_span(at, len(part))} ({what})")
            at += len(part)
        chain.flush(what)
        return chain.result()

    def same_for_batch_sizes(self, recs: list[dict[str, Any]], whole: _Result, sizes: Sequence[int]) -> None:
        for size in sizes:
            if size >= len(recs):
                continue
            what = f"{len(recs)} records in batches of {size}"
            got = self.run([recs[a:a + size] for a in range(0, len(recs), size)], what)
            diff = _first_difference(got.plain(), whole.plain(), f"in batches of {size}", "in one batch")
            if diff:
                raise OperatorCheckError(self.label, "output independent of batch size", f"fed {what}: {diff}")

    def state_survives(self, recs: list[dict[str, Any]], k: int) -> bool:
        """Snapshot after ``recs[:k]``, restore into a fresh operator, feed the rest: as if uninterrupted."""
        n = len(recs)
        reference = self.run([recs[:k], recs[k:]], f"{n} records in two batches")
        first = self.build()
        first.feed(recs[:k], f"{_span(0, k)} of {n}")
        states = []
        for op in first.ops:
            state = op.snapshot()
            try:
                states.append(json.loads(json.dumps(state, allow_nan=False)))
            except (TypeError, ValueError) as exc:
                raise OperatorCheckError(self.label, "state survives snapshot/restore",
                                         f"after {_span(0, k)} of {n}, the snapshot of step {op.ctx.step} is not "
                                         f"plain JSON ({exc}): {_show(state)}") from exc
        done = _Result(list(first.outputs), list(first.sinks.items), list(first.dead))
        fresh = self.build()
        for op, state in zip(fresh.ops, states):
            try:
                op.restore(state)
            except Exception as exc:
                raise OperatorCheckError(self.label, "state survives snapshot/restore",
                                         f"restore() of step {op.ctx.step} raised {exc!r} on the snapshot taken "
                                         f"after {_span(0, k)} of {n}: {_show(state)}") from exc
        rest = f"{_span(k, n - k)} of {n}"
        fresh.feed(recs[k:], f"{rest}, after restore")
        fresh.flush(f"{rest}, after restore")
        resumed = _Result(done.outputs + fresh.outputs, done.sinks + fresh.sinks.items, done.dead + fresh.dead)
        diff = _first_difference(resumed.plain(), reference.plain(), "restored", "uninterrupted")
        if diff:
            raise OperatorCheckError(self.label, "state survives snapshot/restore",
                                     f"fed {_span(0, k)} of {n}, snapshot, then a fresh operator restored from it "
                                     f"fed {rest} (restored) against one operator fed both (uninterrupted): {diff}; "
                                     f"the snapshot was {_show(states[-1])}")
        first.feed(recs[k:], rest)
        first.flush(rest)
        diff = _first_difference(first.result().plain(), reference.plain(), "snapshotted", "left alone")
        if diff:
            raise OperatorCheckError(self.label, "state survives snapshot/restore",
                                     f"taking a snapshot after {_span(0, k)} of {n} changed the operator, then fed "
                                     f"{rest}: {diff}")
        return states[-1] is not None


# -- comparable values and readable differences ------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A comparable form: arrays by dtype, shape and bytes; numpy scalars as Python ones; tuples as lists."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:  # a column of frames, lists...: its items
            return [_plain(v) for v in value.ravel().tolist()]
        return ["array", value.dtype.str, list(value.shape), value.tobytes()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _frozen(data: Any) -> Any:
    """Everything an operator's input holds, copied into comparable values (to see whether it changed)."""
    if isinstance(data, Windows):
        return {"rows": _frozen(data.rows), "starts": _plain(data.starts), "codes": _plain(data.codes),
                "window_start": _plain(data.window_start), "window_end": _plain(data.window_end)}
    cols = {name: {"data": _plain(c.data), "present": _plain(c.present), "ints": _plain(c.ints)}
            for name, c in data.cols.items()}
    return {"devices": _plain(data.codes), "product": _plain(data.product), "ts": _plain(data.ts), "columns": cols}


def _first_difference(a: Any, b: Any, a_is: str, b_is: str, path: str = "") -> str:
    """'' when ``a`` and ``b`` agree (floats within 1e-9), else where and how they first differ, ``a`` and ``b``
    called what ``a_is`` and ``b_is`` say (e.g. 'in batches of 3', 'in one batch')."""
    where = path or "the result"
    if _is_array(a) and _is_array(b):
        return _array_difference(a, b, a_is, b_is, where)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in b:
                return f"{where}: {k!r} {a_is}, absent {b_is}"
            if k not in a:
                return f"{where}: no {k!r} {a_is}, {_show(b[k], 120)} {b_is}"
            d = _first_difference(a[k], b[k], a_is, b_is, f"{path}.{k}" if path else str(k))
            if d:
                return d
        return ""
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, a_is, b_is, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            longer, extra_is = (a, a_is) if len(a) > len(b) else (b, b_is)
            return (f"{where}: {len(a)} items {a_is}, {len(b)} {b_is} (the first extra one, {extra_is}: "
                    f"{_show(longer[min(len(a), len(b))])})")
        return ""
    if isinstance(a, float) and isinstance(b, float):
        if a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b)):
            return ""
    elif type(a) is type(b) and a == b:
        return ""
    return f"{where}: {_show(a)} {a_is}, {_show(b)} {b_is}"


def _is_array(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 4 and v[0] == "array" and isinstance(v[3], bytes)


def _array_difference(a: list[Any], b: list[Any], a_is: str, b_is: str, where: str) -> str:
    if a[1:3] != b[1:3]:
        return f"{where}: {_show(a)} {a_is}, {_show(b)} {b_is}"
    x, y = (np.frombuffer(v[3], dtype=np.dtype(v[1])) for v in (a, b))
    differ = np.flatnonzero(~((x == y) | ((x != x) & (y != y))))
    if not len(differ):
        return ""
    i = int(differ[0])
    return (f"{where} (a {np.dtype(a[1]).name} array of shape {tuple(a[2])}): {len(differ)} of {len(x)} values "
            f"differ, the first at flat index {i}: {x[i].item()!r} {a_is}, {y[i].item()!r} {b_is}")


def _show(value: Any, limit: int = 300) -> str:
    def short(v: Any) -> Any:
        if isinstance(v, list) and len(v) == 4 and v[0] == "array":
            return f"<{np.dtype(v[1]).name} array {'x'.join(map(str, v[2]))}>"
        if isinstance(v, np.ndarray):
            return f"<{v.dtype.name} array {'x'.join(map(str, v.shape))}>"
        if isinstance(v, (bytes, bytearray)) and len(v) > 16:
            return f"<{len(v)} bytes>"
        if isinstance(v, dict) and set(v) == {"ndarray"} and isinstance(v["ndarray"], dict):  # from a snapshot
            return f"<{v['ndarray'].get('dtype')} array {'x'.join(map(str, v['ndarray'].get('shape', ())))}>"
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [short(x) for x in v]
        return v
    text = repr(short(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _short(example: Any) -> str:
    return _show(example, 120)


def _span(start: int, count: int) -> str:
    return f"record {start}" if count == 1 else f"records {start}-{start + count - 1}"


def _default_records() -> list[dict[str, Any]]:
    return [{"device": f"d{i % 3}", "product": None, "ts": 100.0 + i, "values": {"t": 15.0 + i}} for i in range(30)]
