"""Storing what nodes upload, once per id, whether it came over MQTT or HTTP."""

from __future__ import annotations

import math
import re
import time
from typing import Any, cast

import orjson
import sqlalchemy as sa

from .db import Upload, insert_ignore

__all__ = ["KINDS", "MAX_DEPTH", "UploadError", "check_item", "json_problem", "spec_problem", "store_items"]

KINDS = ("record", "alert", "notification")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
MAX_DEPTH = 32  # nesting levels of stored JSON documents: far more than any item needs, far less than serialisers allow


def json_problem(value: Any, where: str) -> str | None:
    """Why decoded JSON cannot be stored and served back (naming where), or None.

    Python's json accepts what orjson, PostgreSQL and response serialisation refuse:
    integers beyond 64 bits, NaN and infinities, and nesting hundreds of levels deep.
    """
    found = _problem(value, 0)
    return None if found is None else f"{where}{''.join(reversed(found[0]))}: {found[1]}"


def spec_problem(spec: Any, file: str) -> str | None:
    """:func:`json_problem` worded like the node's spec errors: ``<file>, field 'a.b[2]': ...``."""
    found = _problem(spec, 0)
    return None if found is None else f"{file}, field {''.join(reversed(found[0])).lstrip('.')!r}: {found[1]}"


def _problem(value: Any, depth: int) -> tuple[list[str], str] | None:
    if isinstance(value, dict):
        children: Any = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    elif isinstance(value, float):
        return None if math.isfinite(value) else ([], "NaN and infinity are not JSON numbers")
    elif isinstance(value, int) and not isinstance(value, bool):
        return None if -(2**63) <= value < 2**64 else ([], "integer out of the 64-bit range")
    else:
        return None
    if depth >= MAX_DEPTH:
        return [], f"nested more than {MAX_DEPTH} levels deep"
    for k, v in children:
        found = _problem(v, depth + 1)
        if found is not None:
            found[0].append(f"[{k}]" if isinstance(k, int) else f".{k:.40}")
            return found
    return None


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
    if device is not None and (not isinstance(device, str) or len(device) > 100 or "\x00" in device):
        raise UploadError(f"{where}.device: expected a device id of at most 100 characters, without NUL")
    seq = item.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**62):
        raise UploadError(f"{where}.seq: expected a non-negative integer, got {seq!r:.40}")
    ts = item.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)):
        raise UploadError(f"{where}.ts: expected epoch seconds, got {ts!r:.40}")
    instance = item.get("instance")
    if instance is not None and (not isinstance(instance, str) or len(instance) > 100 or "\x00" in instance):
        raise UploadError(f"{where}.instance: expected an instance name of at most 100 characters, without NUL")
    problem = json_problem(item, where)
    if problem:
        raise UploadError(problem)
    return item


def store_items(engine: sa.Engine, by_node: dict[str, list[dict[str, Any]]]) -> int:
    """Insert checked items of several nodes in one transaction; returns how many were new."""
    now = time.time()
    rows = [{"id": f"{node}/{it['id']}", "node": node, "kind": it["kind"], "device": it.get("device"),
             "seq": it.get("seq"), "instance": it.get("instance"), "ts": it.get("ts"), "received_at": now,
             "body": orjson.dumps(it).decode()} for node, items in by_node.items() for it in items]
    if not rows:
        return 0
    if engine.dialect.name == "postgresql":
        # psycopg's executemany of one plain statement (pipelined) is ~4x faster than SQLAlchemy's
        # multi-VALUES batches with RETURNING here, and its rowcount is the number of new rows
        with engine.begin() as conn:
            cur = conn.exec_driver_sql(_PG_INSERT, [tuple(r[c] for c in _COLS) for r in rows])
            return cur.rowcount
    # SQLite: count what RETURNING gives back (rowcount of an executemany is not reliable everywhere)
    table = cast(sa.Table, Upload.__table__)
    stmt = insert_ignore(engine, table, "id").returning(table.c.pk)
    with engine.begin() as conn:
        return len(conn.execute(stmt, rows).all())


_COLS = ("id", "node", "kind", "device", "seq", "instance", "ts", "received_at", "body")
_PG_INSERT = ("INSERT INTO uploads (id, node, kind, device, seq, instance, ts, received_at, body) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING")
