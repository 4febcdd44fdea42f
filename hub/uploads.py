"""Storing what nodes upload, once per id, whether it came over MQTT or HTTP."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import orjson
import sqlalchemy as sa

from .db import Upload, insert_ignore

__all__ = ["KINDS", "UploadError", "check_item", "store_items"]

KINDS = ("record", "alert", "notification")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class UploadError(ValueError):
    """An uploaded item that cannot be stored; the message names the item and the field."""


def check_item(item: Any, index: int) -> dict[str, Any]:
    where = f"items[{index}]"
    if not isinstance(item, dict):
        raise UploadError(f"{where}: expected an object, got {type(item).__name__}")
    iid = item.get("id")
    if not isinstance(iid, str) or not _ID.match(iid):
        raise UploadError(f"{where}.id: expected 1-64 characters of letters, digits and _ . : -, got {iid!r:.80}")
    kind = item.get("kind")
    if kind not in KINDS:
        raise UploadError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r:.40}")
    device = item.get("device")
    if device is not None and (not isinstance(device, str) or len(device) > 100):
        raise UploadError(f"{where}.device: expected a device id of at most 100 characters")
    seq = item.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**62):
        raise UploadError(f"{where}.seq: expected a non-negative integer, got {seq!r:.40}")
    ts = item.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)):
        raise UploadError(f"{where}.ts: expected epoch seconds, got {ts!r:.40}")
    instance = item.get("instance")
    if instance is not None and (not isinstance(instance, str) or len(instance) > 100):
        raise UploadError(f"{where}.instance: expected an instance name of at most 100 characters")
    return item


def store_items(engine: sa.Engine, by_node: dict[str, list[dict[str, Any]]]) -> int:
    """Insert checked items of several nodes in one transaction; returns how many were new."""
    now = time.time()
    rows = [{"id": f"{node}/{it['id']}", "node": node, "kind": it["kind"], "device": it.get("device"),
             "seq": it.get("seq"), "instance": it.get("instance"), "ts": it.get("ts"), "received_at": now,
             "body": orjson.dumps(it).decode()} for node, items in by_node.items() for it in items]
    if not rows:
        return 0
    stmt = insert_ignore(engine, Upload.__table__, "id")
    with engine.begin() as conn:
        result = conn.execute(stmt, rows)
    n = result.rowcount
    return n if isinstance(n, int) and n >= 0 else len(rows)
