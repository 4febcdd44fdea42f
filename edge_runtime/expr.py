"""A small, safe expression language for filter and custom_function.

Expressions are parsed with :mod:`ast` (parsing never runs code) and only a
whitelist of node types is accepted: numbers, strings, booleans, field names
(plus ``device``, ``ts`` and ``product``), arithmetic, comparisons, ``and``/
``or``/``not``, ``x if c else y``, ``in`` over a literal list and the functions
``abs``, ``min``, ``max`` and ``round``. Nothing is ever passed to eval/exec.

An expression is compiled twice: to a vectorised form over a :class:`Batch`
and to a scalar form over one record, used for rows the vectorised form cannot
type (mixed or string columns). Rows that fail (missing field, type error,
division by zero) are reported, never raised.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .records import Batch

__all__ = ["Expression", "ExpressionError"]

MAX_LENGTH = 2000
MAX_DEPTH = 40
RECORD_NAMES = ("device", "ts", "product")
CONSTANT_NAMES = {"true": True, "false": False, "True": True, "False": False}
FUNCTIONS = ("abs", "min", "max", "round")


class ExpressionError(ValueError):
    """An expression that cannot be accepted; the message says what and where."""

    def __init__(self, expression: str, problem: str, col: int | None = None) -> None:
        where = f" at column {col + 1}" if col is not None else ""
        super().__init__(f"invalid expression {expression!r}{where}: {problem}")
        self.expression = expression
        self.problem = problem


class _RowError(Exception):
    pass


_BINOPS: dict[type, tuple[Callable[[Any, Any], Any], str]] = {
    ast.Add: (operator.add, "+"), ast.Sub: (operator.sub, "-"), ast.Mult: (operator.mul, "*"),
    ast.Div: (operator.truediv, "/"), ast.FloorDiv: (operator.floordiv, "//"),
    ast.Mod: (operator.mod, "%"), ast.Pow: (operator.pow, "**"),
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def _round(x: Any, n: Any = None) -> Any:
    return round(x) if n is None else round(x, n)


_SCALAR_FUNCS: dict[str, Callable[..., Any]] = {"abs": abs, "min": min, "max": max, "round": _round}


@dataclass
class Evaluation:
    """Result of evaluating over a batch: values plus per-row failures."""

    values: np.ndarray
    failed: np.ndarray  # bool per row
    reasons: dict[int, str]  # row -> reason, for failed rows


class Expression:
    """A compiled expression; ``fields`` are the record values it reads."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise ExpressionError(repr(source), f"expected a string, got {type(source).__name__}")
        if len(source) > MAX_LENGTH:
            raise ExpressionError(source[:40] + "...", f"longer than {MAX_LENGTH} characters")
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(source, f"syntax error: {exc.msg}",
                                  (exc.offset or 1) - 1) from None
        self.fields: list[str] = []
        self._check(tree.body, 0)
        self._tree = tree.body
        self._scalar = self._compile_scalar(tree.body)

    # -- validation -----------------------------------------------------------------
    def _check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ExpressionError(self.source, "nested too deeply")
        col = getattr(node, "col_offset", None)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (bool, int, float, str)):
                return
            raise ExpressionError(self.source, f"constant {node.value!r} is not allowed", col)
        if isinstance(node, ast.Name):
            if node.id in CONSTANT_NAMES or node.id in RECORD_NAMES:
                return
            if node.id.startswith("__"):
                raise ExpressionError(self.source, f"name {node.id!r} is not allowed", col)
            if node.id not in self.fields:
                self.fields.append(node.id)
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            self._check(node.left, depth + 1)
            self._check(node.right, depth + 1)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            self._check(node.operand, depth + 1)
            return
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v, depth + 1)
            return
        if isinstance(node, ast.Compare):
            self._check(node.left, depth + 1)
            for op, comp in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(comp, (ast.List, ast.Tuple, ast.Set)) or not all(
                            isinstance(e, ast.Constant) for e in comp.elts):
                        raise ExpressionError(self.source, "'in' needs a literal list of constants",
                                              getattr(comp, "col_offset", None))
                elif type(op) in _CMPOPS:
                    self._check(comp, depth + 1)
                else:
                    raise ExpressionError(self.source, f"operator {type(op).__name__} is not allowed",
                                          col)
            return
        if isinstance(node, ast.IfExp):
            for part in (node.test, node.body, node.orelse):
                self._check(part, depth + 1)
            return
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ExpressionError(self.source, f"function {name!r} is not allowed "
                                      f"(allowed: {', '.join(FUNCTIONS)})", col)
            if node.keywords:
                raise ExpressionError(self.source, "keyword arguments are not allowed", col)
            n = len(node.args)
            fn = node.func.id
            if (fn == "abs" and n != 1) or (fn == "round" and n not in (1, 2)) or \
                    (fn in ("min", "max") and n < 2):
                raise ExpressionError(self.source, f"{fn}() got {n} argument(s)", col)
            for a in node.args:
                self._check(a, depth + 1)
            return
        raise ExpressionError(self.source, f"{type(node).__name__} is not allowed", col)

    # -- scalar form ------------------------------------------------------------------
    def _compile_scalar(self, node: ast.AST) -> Callable[[dict[str, Any]], Any]:
        if isinstance(node, ast.Constant):
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            if node.id in CONSTANT_NAMES:
                const = CONSTANT_NAMES[node.id]
                return lambda env: const
            name = node.id

            def load(env: dict[str, Any]) -> Any:
                try:
                    return env[name]
                except KeyError:
                    raise _RowError(f"missing field '{name}'") from None
            return load
        if isinstance(node, ast.BinOp):
            fn, sym = _BINOPS[type(node.op)]
            left, right = self._compile_scalar(node.left), self._compile_scalar(node.right)

            def binop(env: dict[str, Any]) -> Any:
                a, b = left(env), right(env)
                if isinstance(a, bool) or isinstance(b, bool):
                    a, b = (int(a) if isinstance(a, bool) else a), (int(b) if isinstance(b, bool) else b)
                try:
                    return fn(a, b)
                except ZeroDivisionError:
                    raise _RowError(f"division by zero in '{sym}'") from None
                except (TypeError, OverflowError, ValueError) as exc:
                    raise _RowError(f"cannot apply '{sym}': {exc}") from None
            return binop
        if isinstance(node, ast.UnaryOp):
            inner = self._compile_scalar(node.operand)
            if isinstance(node.op, ast.Not):
                return lambda env: not inner(env)

            neg = isinstance(node.op, ast.USub)

            def unary(env: dict[str, Any]) -> Any:
                v = inner(env)
                if isinstance(v, str):
                    raise _RowError("cannot negate a string")
                return -v if neg else +v
            return unary
        if isinstance(node, ast.BoolOp):
            parts = [self._compile_scalar(v) for v in node.values]
            # every operand is evaluated, so a missing field fails the row whatever the order
            if isinstance(node.op, ast.And):
                return lambda env: all([bool(p(env)) for p in parts])
            return lambda env: any([bool(p(env)) for p in parts])
        if isinstance(node, ast.Compare):
            first = self._compile_scalar(node.left)
            steps: list[tuple[Callable[[Any, Any], Any], Callable[[dict[str, Any]], Any]]] = []
            for op, comp in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    members = [e.value for e in comp.elts]  # type: ignore[attr-defined]
                    negate = isinstance(op, ast.NotIn)
                    def member(a: Any, b: Any, m: list[Any] = members, ng: bool = negate) -> bool:
                        return (a in m) != ng

                    steps.append((member, lambda env: None))
                else:
                    steps.append((_CMPOPS[type(op)], self._compile_scalar(comp)))

            def compare(env: dict[str, Any]) -> Any:
                a = first(env)
                values = [(fn, c(env)) for fn, c in steps]  # evaluate all: missing fields fail
                result = True
                for fn, b in values:
                    try:
                        ok = fn(a, b)
                    except TypeError as exc:
                        raise _RowError(f"cannot compare: {exc}") from None
                    result = result and bool(ok)
                    a = b
                return result
            return compare
        if isinstance(node, ast.IfExp):
            test, body, orelse = (self._compile_scalar(x) for x in (node.test, node.body, node.orelse))

            def ifexp(env: dict[str, Any]) -> Any:
                t, b, o = test(env), body(env), orelse(env)
                return b if t else o
            return ifexp
        if isinstance(node, ast.Call):
            fn = _SCALAR_FUNCS[node.func.id]  # type: ignore[attr-defined]
            args = [self._compile_scalar(a) for a in node.args]

            def call(env: dict[str, Any]) -> Any:
                vals = [a(env) for a in args]
                try:
                    return fn(*vals)
                except (TypeError, ValueError, OverflowError) as exc:
                    raise _RowError(f"{node.func.id}(): {exc}") from None  # type: ignore[attr-defined]
            return call
        raise AssertionError(type(node))  # pragma: no cover - _check rejects the rest

    def eval_record(self, record: dict[str, Any]) -> Any:
        """Evaluate over one Record; raises ValueError with the reason on failure."""
        env = dict(record.get("values", {}))
        for name in RECORD_NAMES:
            env[name] = record.get(name)
        try:
            return self._scalar(env)
        except _RowError as exc:
            raise ValueError(str(exc)) from None

    # -- vector form --------------------------------------------------------------------
    def evaluate(self, batch: Batch) -> Evaluation:
        n = len(batch)
        failed = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        for name in self.fields:
            missing = ~batch.has(name)
            if missing.any():
                for i in np.flatnonzero(missing & ~failed).tolist():
                    reasons[i] = f"missing field '{name}'"
                failed |= missing
        if failed.all():
            # every row lacks a field (maybe one no row of this batch has at all, so its
            # column is absent): nothing to evaluate
            return Evaluation(np.zeros(n, dtype=bool), failed, reasons)
        values: np.ndarray | None = None
        if not any(batch.cols[f].data.dtype == object for f in self.fields if f in batch.cols):
            try:
                with np.errstate(all="ignore"):
                    values, bad, why = self._vector(self._tree, batch)
                values = np.broadcast_to(np.asarray(values), (n,)) if np.ndim(values) == 0 else values
                if bad is not None:
                    for i in np.flatnonzero(bad & ~failed).tolist():
                        reasons[i] = why
                    failed = failed | bad
            except (TypeError, ValueError, _RowError, OverflowError):
                values = None
        if values is None:
            values = self._rowwise(batch, failed, reasons)
        return Evaluation(values, failed, reasons)

    def _rowwise(self, batch: Batch, failed: np.ndarray, reasons: dict[int, str]) -> np.ndarray:
        n = len(batch)
        out = np.empty(n, dtype=object)
        cols = {f: batch.cols[f] for f in self.fields if f in batch.cols}
        lists = {f: c.data.tolist() for f, c in cols.items()}
        devices = batch.device.tolist()
        ts = batch.ts.tolist()
        products = batch.product.tolist()
        for i in range(n):
            if failed[i]:
                continue
            env = {f: lists[f][i] for f in lists}
            env["device"], env["ts"], env["product"] = devices[i], ts[i], products[i]
            try:
                out[i] = self._scalar(env)
            except _RowError as exc:
                failed[i] = True
                reasons[i] = str(exc)
        typed = [v for v, bad in zip(out.tolist(), failed.tolist()) if not bad]
        kinds = set(map(type, typed))
        if kinds and kinds <= {bool}:
            return np.array([bool(v) if v is not None else False for v in out.tolist()], dtype=bool)
        if kinds and kinds <= {int}:
            return np.array([v if v is not None else 0 for v in out.tolist()], dtype=np.int64)
        if kinds and kinds <= {int, float}:
            return np.array([v if v is not None else 0.0 for v in out.tolist()], dtype=np.float64)
        return out

    def _vector(self, node: ast.AST, batch: Batch) -> tuple[Any, np.ndarray | None, str]:
        """Returns (values, failed-rows-or-None, reason)."""
        if isinstance(node, ast.Constant):
            return node.value, None, ""
        if isinstance(node, ast.Name):
            if node.id in CONSTANT_NAMES:
                return CONSTANT_NAMES[node.id], None, ""
            if node.id == "ts":
                return batch.ts, None, ""
            if node.id == "device":
                return batch.device, None, ""
            if node.id == "product":
                return batch.product, None, ""
            return batch.cols[node.id].data, None, ""
        if isinstance(node, ast.BinOp):
            a, fa, ra = self._vector(node.left, batch)
            b, fb, rb = self._vector(node.right, batch)
            fail, why = _merge_fail(fa, ra, fb, rb)
            a, b = _num(a), _num(b)
            op = type(node.op)
            if op in (ast.Div, ast.FloorDiv, ast.Mod):
                zero = np.asarray(b) == 0
                if np.any(zero):
                    zero = np.broadcast_to(zero, (len(batch),))
                    fail, why = _merge_fail(fail, why, zero, f"division by zero in '{_BINOPS[op][1]}'")
                    b = np.where(zero, 1, b)
            if op is ast.Pow:
                # 0 ** negative: Python raises ZeroDivisionError (the scalar form fails the row),
                # numpy would give inf
                zero = (np.asarray(a) == 0) & (np.asarray(b) < 0)
                if np.any(zero):
                    zero = np.broadcast_to(zero, (len(batch),))
                    fail, why = _merge_fail(fail, why, zero, "division by zero in '**'")
                    a = np.where(zero, 1, a)
                if np.any(np.asarray(b) < 0) and np.asarray(a).dtype.kind in "iub":
                    a = np.asarray(a, dtype=np.float64)
                with np.errstate(over="raise"):
                    try:
                        return np.power(a, b), fail, why
                    except FloatingPointError:
                        raise OverflowError("pow overflow") from None
            if op is ast.Div:
                return np.true_divide(a, b), fail, why
            return _BINOPS[op][0](a, b), fail, why
        if isinstance(node, ast.UnaryOp):
            v, f, r = self._vector(node.operand, batch)
            if isinstance(node.op, ast.Not):
                return np.logical_not(v), f, r
            v = _num(v)
            return (np.negative(v) if isinstance(node.op, ast.USub) else v), f, r
        if isinstance(node, ast.BoolOp):
            results = [self._vector(v, batch) for v in node.values]
            logic: Any = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            truth = np.asarray(results[0][0]).astype(bool)
            fail, why = results[0][1], results[0][2]
            for v, f, r in results[1:]:
                truth = logic(truth, np.asarray(v).astype(bool))
                fail, why = _merge_fail(fail, why, f, r)
            return truth, fail, why
        if isinstance(node, ast.Compare):
            a, fail, why = self._vector(node.left, batch)
            acc: Any = True
            for cmp, comp in zip(node.ops, node.comparators):
                if isinstance(cmp, (ast.In, ast.NotIn)):
                    members = [e.value for e in comp.elts]  # type: ignore[attr-defined]
                    res = np.isin(np.asarray(a), np.array(members, dtype=object))
                    acc = np.logical_and(acc, ~res if isinstance(cmp, ast.NotIn) else res)
                    continue
                b, fb, rb = self._vector(comp, batch)
                fail, why = _merge_fail(fail, why, fb, rb)
                acc = np.logical_and(acc, _CMPOPS[type(cmp)](a, b))
                a = b
            return acc, fail, why
        if isinstance(node, ast.IfExp):
            t, ft, rt = self._vector(node.test, batch)
            b, fb, rb = self._vector(node.body, batch)
            o, fo, ro = self._vector(node.orelse, batch)
            fail, why = _merge_fail(ft, rt, fb, rb)
            fail, why = _merge_fail(fail, why, fo, ro)
            return np.where(np.asarray(t).astype(bool), b, o), fail, why
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            parts = [self._vector(a, batch) for a in node.args]
            fail, why = None, ""
            for _, f, r in parts:
                fail, why = _merge_fail(fail, why, f, r)
            args = [_num(p[0]) for p in parts]
            if name == "abs":
                return np.abs(args[0]), fail, why
            if name in ("min", "max"):
                pick: Any = np.minimum if name == "min" else np.maximum
                best = args[0]
                for x in args[1:]:
                    best = pick(best, x)
                return best, fail, why
            if len(args) == 1:
                x = np.asarray(args[0])
                if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
                    raise ValueError("round of non-finite values takes the row-wise path")
                return np.round(x).astype(np.int64), fail, why
            if np.ndim(args[1]) != 0 or not isinstance(args[1], (int, np.integer)):
                raise TypeError("round() digits must be an integer constant in the vector path")
            x = np.asarray(args[0])
            if x.dtype.kind == "f":
                # np.round scales by 10**digits and so differs from Python's correctly rounded
                # round() (round(2.45, 1) is 2.5, np.round gives 2.4): round each value like Python
                return np.array([round(v, int(args[1])) for v in x.reshape(-1).tolist()],
                                dtype=np.float64).reshape(x.shape), fail, why
            return np.round(x, int(args[1])), fail, why
        raise AssertionError(type(node))  # pragma: no cover


def _num(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.dtype == bool:
        return v.astype(np.int64)
    if isinstance(v, bool):
        return int(v)
    return v


def _merge_fail(fa: np.ndarray | None, ra: str, fb: np.ndarray | None, rb: str) -> tuple[np.ndarray | None, str]:
    if fa is None:
        return fb, rb
    if fb is None:
        return fa, ra
    return fa | fb, ra or rb


def is_finite_array(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isfinite(values)
    if values.dtype == object:
        return np.array([not (isinstance(v, float) and not math.isfinite(v)) for v in values.tolist()],
                        dtype=bool)
    return np.ones(len(values), dtype=bool)
