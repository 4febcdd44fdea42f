"""Records and columnar micro-batches.

A *Record* is the unit of the Device Bus (see DESIGN.md)::

    {"device": "pump-1", "product": "pump", "ts": 1732272000.125, "values": {"temperature": 81.2}}

Pipelines do not run over single records but over :class:`Batch` objects: a
micro-batch of records held column by column in numpy arrays, so that filters,
windows and aggregates run as array operations. A field that a record lacks is
marked in the column's ``present`` mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["Batch", "Column", "RecordError", "DEVICES", "validate_record", "to_jsonable", "without_media"]


class RecordError(ValueError):
    """A record that cannot enter the Device Bus; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Interner(dict):
    """Maps device ids to small integer codes, process-wide, growing on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self._names_array: np.ndarray = np.empty(0, dtype=object)

    def __missing__(self, key: str) -> int:
        code = len(self.names)
        self.names.append(key)
        self[key] = code
        return code

    def codes(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.__getitem__, ids), dtype=np.int64, count=len(ids))

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        if len(self._names_array) != len(self.names):
            self._names_array = np.array(self.names + [""], dtype=object)[:-1]
        out: np.ndarray = self._names_array[codes]
        return out


DEVICES = _Interner()


@dataclass
class Column:
    """One field's values; ``present`` is None when every row has the field."""

    data: np.ndarray
    present: np.ndarray | None = None
    #: float columns only: rows whose value came in as an integer (so it leaves as one)
    ints: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> Column:
        return Column(self.data[idx], None if self.present is None else self.present[idx],
                      None if self.ints is None else self.ints[idx])


def _column_from_values(vals: list[Any], missing: object) -> Column:
    present = None
    if any(v is missing for v in vals):
        present = np.fromiter((v is not missing for v in vals), dtype=bool, count=len(vals))
    types = set(map(type, vals))
    types.discard(type(missing))
    if types <= {float, int} and types:
        filled = vals if present is None else [0 if v is missing else v for v in vals]
        dtype = np.int64 if types == {int} else np.float64
        try:
            ints = None
            if types == {float, int}:
                ints = np.fromiter((type(v) is int for v in vals), dtype=bool, count=len(vals))
            return Column(np.array(filled, dtype=dtype), present, ints)
        except OverflowError:
            pass
    elif types == {bool}:
        filled = vals if present is None else [False if v is missing else v for v in vals]
        return Column(np.array(filled, dtype=bool), present)
    data = np.empty(len(vals), dtype=object)
    data[:] = [None if v is missing else v for v in vals] if present is not None else vals
    return Column(data, present)


_MISSING = object()


@dataclass
class Batch:
    """A micro-batch of records held column-wise.

    ``codes`` are device codes (see :data:`DEVICES`), ``product`` an object array,
    ``ts`` float64 event times, ``cols`` the value columns.
    """

    codes: np.ndarray
    product: np.ndarray
    ts: np.ndarray
    cols: dict[str, Column] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def device(self) -> np.ndarray:
        return DEVICES.lookup(self.codes)

    @classmethod
    def empty(cls) -> Batch:
        return cls(np.empty(0, np.int64), np.empty(0, object), np.empty(0, np.float64), {})

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> Batch:
        """Build a batch from already validated records (see :func:`validate_record`)."""
        n = len(records)
        if n == 0:
            return cls.empty()
        codes = DEVICES.codes([r["device"] for r in records])
        product = np.empty(n, dtype=object)
        product[:] = [r.get("product") for r in records]
        ts = np.fromiter((r["ts"] for r in records), dtype=np.float64, count=n)
        vals = [r["values"] for r in records]
        keys: dict[str, None] = {}
        for v in vals:
            for k in v:
                if k not in keys:
                    keys[k] = None
        cols = {}
        for k in keys:
            cols[k] = _column_from_values([v.get(k, _MISSING) for v in vals], _MISSING)
        return cls(codes, product, ts, cols)

    @classmethod
    def from_columns(cls, device: Sequence[str] | np.ndarray, product: str | None,
                     ts: Iterable[float], **values: np.ndarray) -> Batch:
        """Build a batch from whole columns (what connectors and benchmarks produce)."""
        codes = DEVICES.codes(list(device)) if not isinstance(device, np.ndarray) or device.dtype == object \
            else np.asarray(device, dtype=np.int64)
        ts_arr = np.asarray(ts, dtype=np.float64)
        prod = np.empty(len(ts_arr), dtype=object)
        prod[:] = product
        return cls(codes, prod, ts_arr, {k: Column(np.asarray(v)) for k, v in values.items()})

    def take(self, idx: np.ndarray) -> Batch:
        """Rows selected by a boolean mask or an index array, in that order."""
        return Batch(self.codes[idx], self.product[idx], self.ts[idx],
                     {k: c.take(idx) for k, c in self.cols.items()})

    def has(self, name: str) -> np.ndarray:
        col = self.cols.get(name)
        if col is None:
            return np.zeros(len(self), dtype=bool)
        return np.ones(len(self), dtype=bool) if col.present is None else col.present

    def set_column(self, name: str, data: np.ndarray, present: np.ndarray | None = None) -> None:
        if present is not None and present.all():
            present = None
        self.cols[name] = Column(data, present)

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return Batch.empty()
        if len(batches) == 1:
            return batches[0]
        names: dict[str, None] = {}
        for b in batches:
            names.update(dict.fromkeys(b.cols))
        cols = {}
        for name in names:
            parts: list[np.ndarray | None] = []
            masks: list[np.ndarray] = []
            any_missing = False
            for b in batches:
                col = b.cols.get(name)
                if col is None:
                    parts.append(None)
                    masks.append(np.zeros(len(b), dtype=bool))
                    any_missing = True
                else:
                    parts.append(col.data)
                    masks.append(np.ones(len(b), bool) if col.present is None else col.present)
                    any_missing = any_missing or col.present is not None
            dtypes = {p.dtype for p in parts if p is not None}
            dtype = np.result_type(*dtypes) if all(d.kind in "iufb" for d in dtypes) \
                and len({d.kind == "b" for d in dtypes}) == 1 else np.dtype(object)
            data = np.concatenate([
                (np.zeros(len(b), dtype=dtype) if p is None else p.astype(dtype, copy=False))
                for p, b in zip(parts, batches)])
            ints = None
            if dtype.kind == "f" and any(p is not None and (p.dtype.kind in "iu" or b.cols[name].ints is not None)
                                         for p, b in zip(parts, batches)):
                ints = np.concatenate([
                    np.zeros(len(b), bool) if p is None else (np.ones(len(b), bool) if p.dtype.kind in "iu"
                                                              else b.cols[name].ints if b.cols[name].ints is not None
                                                              else np.zeros(len(b), bool))
                    for p, b in zip(parts, batches)])
            cols[name] = Column(data, np.concatenate(masks) if any_missing else None, ints)
        return Batch(np.concatenate([b.codes for b in batches]),
                     np.concatenate([b.product for b in batches]),
                     np.concatenate([b.ts for b in batches]), cols)

    def to_records(self) -> list[dict[str, Any]]:
        """Materialise plain Record dicts (JSON-ready values)."""
        n = len(self)
        devices = self.device.tolist()
        products = self.product.tolist()
        ts = self.ts.tolist()
        out: list[dict[str, Any]] = [
            {"device": devices[i], "product": products[i], "ts": ts[i], "values": {}} for i in range(n)
        ]
        for name, col in self.cols.items():
            vals = col.data.tolist()
            if col.ints is not None:
                vals = [int(v) if i and math.isfinite(v) else v for v, i in zip(vals, col.ints.tolist())]
            if col.present is None:
                for rec, v in zip(out, vals):
                    rec["values"][name] = v
            else:
                for rec, v, p in zip(out, vals, col.present.tolist()):
                    if p:
                        rec["values"][name] = v
        return out


_MEDIA = (np.ndarray, bytes, bytearray, memoryview)


def without_media(rec: dict[str, Any]) -> dict[str, Any]:
    """The record without array/bytes values (frames, crops, encoded images): what may leave as JSON.
    The names of what was left out are listed in ``media``."""
    values = rec.get("values") or {}
    left = [k for k, v in values.items() if isinstance(v, _MEDIA)]
    if not left:
        return rec
    return {**rec, "values": {k: v for k, v in values.items() if k not in left}, "media": left}


def to_jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


_SCALARS = (bool, int, float, str)


def validate_record(obj: Any, *, max_fields: int = 1024) -> dict[str, Any]:
    """Check a decoded Record and return it normalised; raise RecordError naming the problem."""
    if not isinstance(obj, dict):
        raise RecordError(f"record must be a JSON object, got {type(obj).__name__}")
    device = obj.get("device")
    if not isinstance(device, str) or not device:
        raise RecordError("record field 'device' must be a non-empty string")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise RecordError(f"record field 'ts' must be a number (epoch seconds), got {ts!r}")
    if not math.isfinite(ts):
        raise RecordError(f"record field 'ts' must be finite, got {ts!r}")
    values = obj.get("values")
    if not isinstance(values, dict):
        raise RecordError("record field 'values' must be an object")
    if len(values) > max_fields:
        raise RecordError(f"record has {len(values)} values, more than the limit {max_fields}")
    for k, v in values.items():
        check_value(k, v)
    product = obj.get("product")
    if product is not None and not isinstance(product, str):
        raise RecordError("record field 'product' must be a string")
    return {"device": device, "product": product, "ts": float(ts), "values": values}


def check_value(name: str, v: Any) -> None:
    if isinstance(v, float):
        if not math.isfinite(v):
            raise RecordError(f"value '{name}' is not finite ({v!r})")
    elif v is None:
        raise RecordError(f"value '{name}' is null")
    elif not isinstance(v, _SCALARS) and not isinstance(v, (list, dict)):
        raise RecordError(f"value '{name}' has unsupported type {type(v).__name__}")
