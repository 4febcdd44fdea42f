"""A record-at-a-time reference implementation of the offline replay semantics.

Deliberately naive and independent of ``edge_runtime``: plain dicts, one record at
a time, in input order, Python's own arithmetic. The property tests in
``test_replay_properties.py`` check the columnar engine against it.

Semantics (what ``edgeloop pipeline run`` promises):

* ``device_input``: records of the plan's product (or of no product) go on.
* ``filter``: keep a record when its expression is truthy. Every operand is
  evaluated (``and``/``or``/``x if c else y`` do not short-circuit), so a missing
  field anywhere, a division by zero or a type error makes the record a dead letter.
* ``sample``: ``every: N`` keeps the 1st, (N+1)th, ... record per device;
  ``interval: T`` keeps a record when ``ts - last_kept_ts >= T`` (first kept).
* ``time_window``: tumbling windows per device, index ``floor(ts / size)``; at most
  one open window per device, emitted when a record of a later window arrives
  (at that point in the stream) and at end of input (ordered by window start,
  ties by the input position of the first record). A record whose window index is
  below the newest index seen for its device is late: a dead letter.
* ``aggregate``: one record per window, ``<field>_<fn>`` plus ``count`` and
  ``window_start``, ``ts`` = window end. ``<field>_count`` is always there; the
  other functions only when the window has a value of the field. sum, mean, std,
  min and max need numbers (booleans count as 0/1): a window with any other value
  of that field is a dead letter (only that window). Mode ties go to the smallest
  value (the first seen when the tied values do not compare).
* ``change_trigger``: pass a record when a listed field differs from the last
  passed record of its device (numbers with ``threshold``: ``|new - old| >=
  threshold``); the first record of a device passes; a missing field is a dead letter.
* ``custom_function``: set fields in order; a failing or non-finite result makes
  the record a dead letter.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RowFailure", "StrictExpr", "run_reference", "DeadLetter"]

RECORD_NAMES = ("device", "ts", "product")
CONSTANTS = {"true": True, "false": False}


class RowFailure(Exception):
    """A record an expression cannot be evaluated on; ``kind`` is missing, zero or error."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _and(*xs: Any) -> bool:
    return all([bool(x) for x in xs])


def _or(*xs: Any) -> bool:
    return any([bool(x) for x in xs])


def _if(t: Any, b: Any, o: Any) -> Any:
    return b if t else o


class _Strict(ast.NodeTransformer):
    """Rewrite Python's short-circuit forms into calls that evaluate every operand."""

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        fn = "_and" if isinstance(node.op, ast.And) else "_or"
        return ast.copy_location(ast.Call(ast.Name(fn, ast.Load()), node.values, []), node)

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.Call(ast.Name("_if", ast.Load()), [node.test, node.body, node.orelse], []),
                                 node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) == 1:
            return node
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            parts.append(ast.Compare(left, [op], [right]))
            left = right
        return ast.copy_location(ast.Call(ast.Name("_and", ast.Load()), parts, []), node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in CONSTANTS:
            return ast.copy_location(ast.Constant(CONSTANTS[node.id]), node)
        return node


class _Guard(ast.NodeTransformer):
    """Wrap every arithmetic result in ``_chk`` (used by tests to stay in int64/float53 range)."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.Call(ast.Name("_chk", ast.Load()), [node], []), node)


class TooBig(Exception):
    """An intermediate value outside the range where int64 and Python ints agree."""


def _chk(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2 ** 50:
        raise TooBig(v)
    if isinstance(v, float) and math.isfinite(v) and abs(v) > 1e200:
        raise TooBig(v)
    return v


class StrictExpr:
    """Python's evaluation of an expression, made strict (every operand evaluated)."""

    def __init__(self, source: str, *, guard: bool = False) -> None:
        self.source = source
        tree = ast.parse(source.strip(), mode="eval")
        self.fields = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id not in CONSTANTS and node.id not in RECORD_NAMES \
                    and node.id not in ("abs", "min", "max", "round") and node.id not in self.fields:
                self.fields.append(node.id)
        tree = _Strict().visit(tree)
        if guard:
            tree = _Guard().visit(tree)
        tree = ast.fix_missing_locations(tree)
        self.code = compile(tree, "<expr>", "eval")

    def eval_env(self, env: dict[str, Any]) -> Any:
        for f in self.fields:
            if f not in env:
                raise RowFailure("missing", f)
        scope = {"__builtins__": {}, "abs": abs, "min": min, "max": max, "round": round,
                 "_and": _and, "_or": _or, "_if": _if, "_chk": _chk}
        try:
            return eval(self.code, scope, dict(env))  # noqa: S307 - test-generated expressions only
        except ZeroDivisionError as exc:
            raise RowFailure("zero", str(exc)) from None
        except NameError as exc:  # pragma: no cover - fields are checked first
            raise RowFailure("missing", str(exc)) from None
        except TooBig:
            raise
        except Exception as exc:  # noqa: BLE001
            raise RowFailure("error", f"{type(exc).__name__}: {exc}") from None

    def eval_record(self, rec: dict[str, Any]) -> Any:
        env = dict(rec["values"])
        for name in RECORD_NAMES:
            env[name] = rec.get(name)
        return self.eval_env(env)


@dataclass
class DeadLetter:
    step: str
    kind: str
    record: dict[str, Any]


@dataclass
class Window:
    device: str
    product: Any
    index: int
    size: float
    first_pos: int
    rows: list[dict[str, Any]] = field(default_factory=list)


def _copy(rec: dict[str, Any]) -> dict[str, Any]:
    return {"device": rec["device"], "product": rec.get("product"), "ts": rec["ts"], "values": dict(rec["values"])}


def _parse_duration(v: Any) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*", str(v))
    assert m, v
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0,
                                 "d": 86400.0}[m.group(2)]


class _Op:
    def __init__(self, step_id: str, dead: list[DeadLetter]) -> None:
        self.step_id = step_id
        self._dead = dead

    def dead(self, kind: str, rec: dict[str, Any]) -> None:
        self._dead.append(DeadLetter(self.step_id, kind, rec))

    def process(self, item: Any) -> list[Any]:
        raise NotImplementedError

    def flush(self) -> list[Any]:
        return []


class RefDeviceInput(_Op):
    def __init__(self, params: Any, product: str | None, *a: Any) -> None:
        super().__init__(*a)
        params = params or {}
        self.product = product
        self.properties = params.get("properties")

    def process(self, rec: dict[str, Any]) -> list[Any]:
        if self.product is not None and rec.get("product") not in (self.product, None):
            return []
        rec = _copy(rec)
        if self.properties is not None:
            rec["values"] = {k: v for k, v in rec["values"].items() if k in self.properties}
        return [rec]


class RefFilter(_Op):
    def __init__(self, params: Any, product: str | None, *a: Any) -> None:
        super().__init__(*a)
        self.expr = StrictExpr(params if isinstance(params, str) else params["expr"])

    def process(self, rec: dict[str, Any]) -> list[Any]:
        try:
            ok = self.expr.eval_record(rec)
        except RowFailure as exc:
            self.dead(exc.kind, rec)
            return []
        return [rec] if ok else []


class RefSample(_Op):
    def __init__(self, params: Any, product: str | None, *a: Any) -> None:
        super().__init__(*a)
        self.every = params.get("every")
        self.interval = _parse_duration(params["interval"]) if "interval" in params else None
        self.seen: Counter[str] = Counter()
        self.last_kept: dict[str, float] = {}

    def process(self, rec: dict[str, Any]) -> list[Any]:
        d = rec["device"]
        if self.every is not None:
            n = self.seen[d]
            self.seen[d] += 1
            return [rec] if n % self.every == 0 else []
        prev = self.last_kept.get(d)
        if prev is None or rec["ts"] - prev >= self.interval:
            self.last_kept[d] = rec["ts"]
            return [rec]
        return []


class RefTimeWindow(_Op):
    def __init__(self, params: Any, product: str | None, *a: Any) -> None:
        super().__init__(*a)
        self.size = _parse_duration(params if not isinstance(params, dict) else params["size"])
        self.open: dict[str, Window] = {}
        self.newest: dict[str, int] = {}
        self.pos = 0

    def process(self, rec: dict[str, Any]) -> list[Any]:
        pos = self.pos
        self.pos += 1
        d = rec["device"]
        w = math.floor(rec["ts"] / self.size)
        if d in self.newest and w < self.newest[d]:
            self.dead("late", rec)
            return []
        self.newest[d] = w
        out = []
        cur = self.open.get(d)
        if cur is not None and cur.index != w:
            out.append(cur)
            cur = None
        if cur is None:
            cur = self.open[d] = Window(d, rec.get("product"), w, self.size, pos)
        cur.rows.append(rec)
        return out

    def flush(self) -> list[Any]:
        out = sorted(self.open.values(), key=lambda win: (win.index, win.first_pos))
        self.open = {}
        return out


def window_record(win: Window) -> dict[str, Any]:
    """A window handed to anything but aggregate: lists of each field's values."""
    values: dict[str, Any] = {}
    for r in win.rows:
        for k in r["values"]:
            values.setdefault(k, [])
    for k in values:
        values[k] = [r["values"][k] for r in win.rows if k in r["values"]]
    values["count"] = len(win.rows)
    values["window_start"] = win.index * win.size
    return {"device": win.device, "product": win.product, "ts": (win.index + 1) * win.size, "values": values}


def _mode(xs: list[Any]) -> Any:
    freq: dict[Any, int] = {}
    for x in xs:
        freq[x] = freq.get(x, 0) + 1
    best = max(freq.values())
    tied = [v for v, f in freq.items() if f == best]
    try:
        return min(tied)
    except TypeError:  # values that do not compare (a text and a number): the first seen
        return tied[0]


def _sum(xs: list[Any]) -> Any:
    if all(isinstance(x, int) for x in xs):
        return sum(xs)
    return math.fsum(xs)


def reduce(fn: str, xs: list[Any]) -> Any:
    if fn == "count":
        return len(xs)
    if fn == "sum":
        return _sum(xs)
    if fn == "mean":
        return math.fsum(xs) / len(xs)
    if fn == "min":
        return min(xs)
    if fn == "max":
        return max(xs)
    if fn == "first":
        return xs[0]
    if fn == "last":
        return xs[-1]
    if fn == "mode":
        return _mode(xs)
    if fn == "std":
        mean = math.fsum(xs) / len(xs)
        return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
    raise AssertionError(fn)


NUMERIC_FNS = ("sum", "mean", "std", "min", "max")


class RefAggregate(_Op):
    def __init__(self, params: Any, product: str | None, *a: Any) -> None:
        super().__init__(*a)
        self.plan = []
        for name, fns in params.items():
            for fn in [fns] if isinstance(fns, str) else fns:
                self.plan.append((name, fn))

    def process(self, win: Window) -> list[Any]:
        values: dict[str, Any] = {}
        failed = False
        for name, fn in self.plan:
            xs = [r["values"][name] for r in win.rows if name in r["values"]]
            if fn in NUMERIC_FNS:
                if not all(isinstance(x, (int, float)) for x in xs):  # booleans count as 0/1
                    failed = True
                    continue
                xs = [int(x) if isinstance(x, bool) else x for x in xs]
            if fn == "count" or xs:
                values[f"{name}_{fn}"] = reduce(fn, xs)
        values["count"] = len(win.rows)
        values["window_start"] = win.index * win.size
        rec = {"device": win.device, "product": win.product, "ts": (win.index + 1) * win.size, "values": values}
        if failed:  # a window holding a value that is not a number: a dead letter
            self.dead("error", rec)
            return []
        return [rec]


class RefChangeTrigger(_Op):
    def __init__(self, params: Any, product: str | None, *a: Any) -> None:
        super().__init__(*a)
        if not isinstance(params, dict):
            params = {"fields": params}
        fields = params["fields"]
        self.fields = [fields] if isinstance(fields, str) else list(fields)
        self.threshold = params.get("threshold")
        self.last: dict[str, tuple[Any, ...]] = {}

    @staticmethod
    def _number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def process(self, rec: dict[str, Any]) -> list[Any]:
        if any(f not in rec["values"] for f in self.fields):
            self.dead("missing", rec)
            return []
        cur = tuple(rec["values"][f] for f in self.fields)
        prev = self.last.get(rec["device"])
        changed = prev is None
        if prev is not None:
            for old, new in zip(prev, cur):
                if self.threshold is not None and self._number(old) and self._number(new):
                    changed = abs(new - old) >= self.threshold
                else:
                    changed = old != new
                if changed:
                    break
        if changed:
            self.last[rec["device"]] = cur
            return [rec]
        return []


class RefCustomFunction(_Op):
    def __init__(self, params: Any, product: str | None, *a: Any) -> None:
        super().__init__(*a)
        self.assignments = [(k, StrictExpr(v)) for k, v in params["set"].items()]

    def process(self, rec: dict[str, Any]) -> list[Any]:
        rec = _copy(rec)
        for name, expr in self.assignments:
            try:
                v = expr.eval_record(rec)
            except RowFailure as exc:
                self.dead(exc.kind, rec)
                return []
            if isinstance(v, float) and not math.isfinite(v):
                self.dead("nonfinite", rec)
                return []
            rec["values"][name] = v
        return [rec]


OPS = {"device_input": RefDeviceInput, "filter": RefFilter, "sample": RefSample,
       "time_window": RefTimeWindow, "aggregate": RefAggregate, "change_trigger": RefChangeTrigger,
       "custom_function": RefCustomFunction}


def run_reference(spec: dict[str, Any], records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                                   list[DeadLetter]]:
    """Run a pipeline spec over records one at a time; returns (outputs, dead letters)."""
    dead: list[DeadLetter] = []
    ops: list[_Op] = []
    for i, step in enumerate(spec["steps"]):
        (op, params), = [(k, v) for k, v in step.items() if k != "id"]
        step_id = step.get("id", f"{i + 1}:{op}")
        ops.append(OPS[op](params, spec.get("product"), step_id, dead))
    out: list[dict[str, Any]] = []

    def push(item: Any, start: int) -> None:
        items = [item]
        for i in range(start, len(ops)):
            nxt = []
            for it in items:
                if isinstance(it, Window) and not isinstance(ops[i], RefAggregate):
                    it = window_record(it)
                nxt.extend(ops[i].process(it))
            items = nxt
            if not items:
                return
        for it in items:
            out.append(window_record(it) if isinstance(it, Window) else it)

    for rec in records:
        push(rec, 0)
    for i, op in enumerate(ops):
        for item in op.flush():
            push(item, i + 1)
    return out, dead
