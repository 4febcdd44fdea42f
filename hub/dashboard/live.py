"""Live device values for the dashboard: the newest values per device from the uploaded records, and the
server-sent event stream that keeps a page up to date (values as records arrive, nodes every few seconds)."""

import asyncio
import json
import time
from typing import Any, AsyncIterator, Mapping

import orjson
import sqlalchemy as sa
from fastapi import Request

from ..client import record_values
from ..core import Hub
from ..db import Node, Upload

__all__ = ["RECENT_RECORDS", "STREAM_S", "event_stream", "latest_values", "node_views", "scalar"]

MAX_FIELDS = 16          # values shown per device
RECENT_RECORDS = 5000    # the live table starts from the newest this many records
STREAM_S = 300.0         # an event stream's longest life (the browser reconnects and goes on)


def scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _values(body: Mapping[str, Any]) -> dict[str, Any]:
    """A record's values as a person reads them: scalars only, internal fields (``_...``) left out."""
    vals = record_values(body)
    out: dict[str, Any] = {}
    for k, v in vals.items():
        if k.startswith("_") or not scalar(v):
            continue
        out[k] = round(v, 4) if isinstance(v, float) else v
        if len(out) >= MAX_FIELDS:
            break
    return out


def _device_row(pk: int, node: str, device: str | None, ts: float | None, body: str) -> dict[str, Any]:
    doc = orjson.loads(body)
    return {"cursor": pk, "node": node, "device": device or "-", "ts": ts, "values": _values(doc)}


def latest_values(engine: sa.Engine, after: int = 0, limit: int = RECENT_RECORDS) -> tuple[list[dict[str, Any]], int]:
    """The newest values per device among records stored after ``after`` (at most ``limit`` of the newest
    when ``after`` is 0), and the cursor to continue from."""
    with engine.connect() as c:
        q = sa.select(Upload.pk, Upload.node, Upload.device, Upload.ts, Upload.body).where(Upload.kind == "record")
        if after:
            rows = c.execute(q.where(Upload.pk > after).order_by(Upload.pk).limit(limit)).all()
        else:
            rows = list(reversed(c.execute(q.order_by(Upload.pk.desc()).limit(limit)).all()))
    latest: dict[tuple[str, str | None], Any] = {}
    for r in rows:
        latest[(r.node, r.device)] = r
    cursor = rows[-1].pk if rows else after
    return [_device_row(r.pk, r.node, r.device, r.ts, r.body) for r in latest.values()], cursor


def node_views(hub: Hub) -> list[dict[str, Any]]:
    """Every node as the API shows it, by name."""
    now = time.time()
    with hub.sessions() as s:
        return [hub.node_view(n, now) for n in s.scalars(sa.select(Node).order_by(Node.name))]


async def event_stream(request: Request, hub: Hub, token: str, after: int, every: float,
                       only: str) -> AsyncIterator[bytes]:
    """The events of one stream (see :func:`hub.dashboard.pages.events`), from cursor ``after``."""
    cursor, last_nodes, last_auth = after, 0.0, time.monotonic()
    ends = time.monotonic() + STREAM_S
    if not cursor:
        _, cursor = await asyncio.to_thread(latest_values, hub.engine, 0, 1)
    yield b"retry: 2000\n\n"
    while time.monotonic() < ends and not await request.is_disconnected():
        if time.monotonic() - last_auth > 5.0:
            last_auth = time.monotonic()
            p = await asyncio.to_thread(hub.principal_for, token)
            if p is None or not p.admin:
                yield b"event: signed-out\ndata: {}\n\n"
                return
        rows: list[dict[str, Any]] = []
        if only != "nodes":
            rows, cursor = await asyncio.to_thread(latest_values, hub.engine, cursor)
        for row in rows:
            yield f"event: values\nid: {row['cursor']}\ndata: {json.dumps(row)}\n\n".encode()
        if only != "values" and time.monotonic() - last_nodes >= 2.0:
            last_nodes = time.monotonic()
            nodes = await asyncio.to_thread(node_views, hub)
            summary = [{"name": n["name"], "online": n["online"], "last_seen": n["last_seen"],
                        "counters": n["counters"]} for n in nodes]
            yield f"event: nodes\ndata: {json.dumps(summary)}\n\n".encode()
        elif not rows:
            yield b": keep-alive\n\n"
        await asyncio.sleep(every)
