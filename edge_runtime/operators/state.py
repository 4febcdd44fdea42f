"""Operator state as plain JSON: what ``Operator.snapshot()`` returns and ``restore()`` takes.

A snapshot must survive a restart of the node's process, so it holds only JSON values (no pickle) and names
devices by their id: the integer device codes of :data:`~edge_runtime.records.DEVICES` belong to one process.
numpy arrays (frames, crops) become ``{"ndarray": {"dtype", "shape", "data"}}`` with the values as a flat
list, bytes become ``{"bytes": <base64>}``; :func:`decode` turns both back.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from ..records import DEVICES, Batch

__all__ = ["encode", "decode", "by_device", "by_code", "batch_state", "batch_from_state"]


def encode(value: Any) -> Any:
    """A record value (or a structure of them) as JSON values."""
    if isinstance(value, np.ndarray):
        return {"ndarray": {"dtype": value.dtype.str, "shape": list(value.shape), "data": value.ravel().tolist()}}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (tuples come back as lists)."""
    if isinstance(value, dict):
        if len(value) == 1 and "ndarray" in value and isinstance(value["ndarray"], dict):
            a = value["ndarray"]
            return np.array(a["data"], dtype=np.dtype(a["dtype"])).reshape(a["shape"])
        if len(value) == 1 and "bytes" in value and isinstance(value["bytes"], str):
            return base64.b64decode(value["bytes"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def by_device(per_code: dict[int, Any]) -> dict[str, Any]:
    """``{device code: value}`` -> ``{device id: value}`` (values encoded)."""
    names = DEVICES.names
    return {names[c]: encode(v) for c, v in per_code.items()}


def by_code(per_device: dict[str, Any]) -> dict[int, Any]:
    """``{device id: value}`` -> ``{device code: value}`` in this process (values decoded)."""
    return {DEVICES[d]: decode(v) for d, v in per_device.items()}


def batch_state(batch: Batch) -> list[dict[str, Any]]:
    """The rows of a batch as records with encoded values."""
    return [{**r, "values": encode(r["values"])} for r in batch.to_records()]


def batch_from_state(records: list[dict[str, Any]]) -> Batch:
    """The inverse of :func:`batch_state`."""
    return Batch.from_records([{**r, "values": decode(r["values"])} for r in records])
