"""The reductions ``aggregate`` applies to each window's rows, as array operations over contiguous runs
(window k is rows[starts[k]:starts[k] + counts[k]])."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..records import Column

__all__ = ["AGGREGATES", "NUMERIC", "as_numbers", "ints_of", "int_origin", "reduce_windows"]

AGGREGATES = ("count", "sum", "mean", "min", "max", "first", "last", "mode", "std")
NUMERIC = ("sum", "mean", "std", "min", "max")


def as_numbers(col: Column) -> tuple[NDArray[Any], NDArray[Any]]:
    """An object column as numbers (int64 when they are all whole, as a column of ints would be;
    booleans count as 0/1, as in a boolean column) and the rows that hold something else."""
    vals = col.data.tolist()
    present = [True] * len(vals) if col.present is None else col.present.tolist()
    wrong = np.fromiter((p and not isinstance(v, (int, float)) for v, p in zip(vals, present)),
                        dtype=bool, count=len(vals))
    filled = [v if isinstance(v, (int, float)) else 0 for v in vals]
    if all(isinstance(v, int) for v in filled):
        try:
            return np.array(filled, dtype=np.int64), wrong
        except OverflowError:
            pass
    return np.array(filled, dtype=np.float64), wrong


def ints_of(col: Column, numbers: NDArray[Any]) -> NDArray[Any] | None:
    if numbers.dtype.kind != "f" or col.data.dtype != object:
        return None
    flags = np.fromiter((type(v) is int for v in col.data.tolist()), dtype=bool, count=len(col.data))
    return flags if flags.any() else None


def int_origin(col: Column, starts: NDArray[Any], counts: NDArray[Any], fn: str, data: NDArray[Any]) -> NDArray[Any] | None:
    """For a float column that holds integers: which results are integers (so output does not
    depend on whether ints shared a micro-batch with floats)."""
    if col.ints is None or data.dtype.kind != "f" or not len(col.ints):
        return None
    if fn in ("first", "last"):
        idx = np.arange(len(col.ints))
        present = np.ones(len(col.ints), bool) if col.present is None else col.present
        if fn == "first":
            pick = np.minimum.reduceat(np.where(present, idx, len(idx)), starts)
        else:
            pick = np.maximum.reduceat(np.where(present, idx, -1), starts)
        picked: NDArray[Any] = col.ints[np.clip(pick, 0, len(idx) - 1)]
        return picked
    if fn in ("sum", "min", "max", "mode"):
        ok = col.ints if col.present is None else (col.ints | ~col.present)
        return np.logical_and.reduceat(ok, starts)
    return None


def reduce_windows(col: Column, starts: NDArray[Any], counts: NDArray[Any], fn: str) -> tuple[NDArray[Any], NDArray[Any] | None]:
    data, present = col.data, col.present
    n_present = counts if present is None else np.add.reduceat(present.astype(np.int64), starts)
    has = None if present is None else n_present > 0
    if fn == "count":
        return n_present.astype(np.int64), None
    if fn in ("first", "last"):
        idx = np.arange(len(data))
        if present is None:
            pick = starts if fn == "first" else starts + counts - 1
        elif fn == "first":
            pick = np.minimum.reduceat(np.where(present, idx, len(data)), starts)
        else:
            pick = np.maximum.reduceat(np.where(present, idx, -1), starts)
        pick = np.clip(pick, 0, max(len(data) - 1, 0))
        return data[pick], has
    if fn == "mode":
        return _mode(data, present, starts, counts), has
    numeric = data.dtype.kind in "iuf" or data.dtype == bool
    if not numeric:
        data, wrong = as_numbers(col)
        if wrong.any():
            bad = col.data[np.flatnonzero(wrong)[0]]
            raise TypeError(f"{fn} needs numbers, got {type(bad).__name__} {bad!r}")
    if data.dtype == bool:
        data = data.astype(np.int64)
    if fn in ("sum", "mean", "std"):
        x = data if present is None else np.where(present, data, 0)
        s = np.add.reduceat(x, starts)
        if fn == "sum":
            return s, has
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s / np.maximum(n_present, 1)
            if fn == "mean":
                return mean, has
            dev = data - np.repeat(mean, counts)
            sq = dev * dev if present is None else np.where(present, dev * dev, 0.0)
            return np.sqrt(np.add.reduceat(sq, starts) / np.maximum(n_present, 1)), has
    if fn == "min":
        fill = np.inf if data.dtype.kind == "f" else np.iinfo(np.int64).max
        x = data if present is None else np.where(present, data, fill)
        return np.minimum.reduceat(x, starts), has
    if fn == "max":
        fill = -np.inf if data.dtype.kind == "f" else np.iinfo(np.int64).min
        x = data if present is None else np.where(present, data, fill)
        return np.maximum.reduceat(x, starts), has
    raise AssertionError(fn)  # pragma: no cover


def _mode(data: NDArray[Any], present: NDArray[Any] | None, starts: NDArray[Any], counts: NDArray[Any]) -> NDArray[Any]:
    """Most frequent value per window; ties go to the smallest value."""
    k = len(starts)
    out = np.empty(k, dtype=data.dtype if data.dtype != bool else bool)
    vals = data.tolist()
    pres = None if present is None else present.tolist()
    for w, (a, c) in enumerate(zip(starts.tolist(), counts.tolist())):
        freq: dict[Any, int] = {}
        for j in range(a, a + c):
            if pres is None or pres[j]:
                v = vals[j]
                freq[v] = freq.get(v, 0) + 1
        if not freq:
            out[w] = data[a] if len(data) else 0
            continue
        best = max(freq.values())
        try:
            out[w] = min(v for v, f in freq.items() if f == best)
        except TypeError:
            out[w] = next(v for v, f in freq.items() if f == best)
    return out
