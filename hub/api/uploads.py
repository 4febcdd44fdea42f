"""What nodes upload: records, alerts and notifications over HTTP (the same items as the MQTT uplink) and media
files (an alert's JPEG), written by the node's own token; read back by the admin."""

import hashlib
from pathlib import Path as FsPath
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from ..core import Hub
from ..db import Media, Upload
from ..uploads import check_item, store_items
from .deps import Admin, Db, HubDep, OwnNode, hub_router
from .names import BIGINT, checked_name

__all__ = ["router"]

router = hub_router()


class Uploads(BaseModel):
    items: list[Any] = Field(max_length=10000)


# -- the agent's (node token, own node only) ---------------------------------------------------------
@router.post("/api/v1/nodes/{node}/uploads", tags=["agent"])
def upload(body: Uploads, n: OwnNode, hub: HubDep) -> dict[str, Any]:
    """Records, alerts and notifications over HTTP (the same items as the MQTT uplink); idempotent by id."""
    items = [check_item(it, i) for i, it in enumerate(body.items)]
    stored = store_items(hub.engine, {n.name: items})
    return {"stored": stored, "duplicates": len(items) - stored}


@router.put("/api/v1/nodes/{node}/media/{media_id}", tags=["agent"])
async def put_media(media_id: str, request: Request, n: OwnNode,
                    x_sha256: Annotated[str, Header(pattern=r"^[0-9a-f]{64}$")],
                    hub: HubDep,
                    content_type: Annotated[str, Header(max_length=100)] = "application/octet-stream",
                    x_upload_id: Annotated[str | None, Header(max_length=64)] = None) -> JSONResponse:
    """A media file (e.g. an alert's JPEG); stored once per id, checked against its SHA-256."""
    checked_name("media id", media_id)  # not '.' or '..': the id is a file name
    data = await request.body()
    digest = hashlib.sha256(data).hexdigest()
    if digest != x_sha256:
        raise HTTPException(422, f"body SHA-256 is {digest}, X-Sha256 says {x_sha256}: upload damaged")
    return _store_media(hub, n.name, media_id, data, digest, content_type, x_upload_id)


def _store_media(hub: Hub, node: str, media_id: str, data: bytes, digest: str, ctype: str,
                 upload_id: str | None) -> JSONResponse:
    key = f"{node}/{media_id}"
    with hub.sessions() as s:
        old = s.get(Media, key)
        if old is not None:
            if old.sha256 != digest:
                raise HTTPException(409, f"media {media_id!r} exists with other content")
            return JSONResponse({"id": media_id, "stored": False}, status_code=200)
        path = hub.media_dir / node / media_id
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        s.add(Media(id=key, node=node, upload_id=upload_id and f"{node}/{upload_id}", content_type=ctype,
                    size=len(data), sha256=digest, path=str(path)))
        try:
            s.commit()
        except sa.exc.IntegrityError:  # the same file raced in twice
            s.rollback()
            return JSONResponse({"id": media_id, "stored": False}, status_code=200)
    return JSONResponse({"id": media_id, "stored": True}, status_code=201)


# -- what nodes uploaded (admin) ---------------------------------------------------------------------
@router.get("/api/v1/uploads", tags=["uploads"])
def list_uploads(s: Db, _: Admin, node: Annotated[str | None, Query(max_length=64)] = None,
                 device: Annotated[str | None, Query(max_length=100)] = None,
                 kind: Annotated[str | None, Query(pattern="^(record|alert|notification)$")] = None,
                 after: Annotated[int, Query(ge=0, le=BIGINT, description="return items stored after this cursor")] = 0,
                 limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> dict[str, Any]:
    q = sa.select(Upload.pk, Upload.node, Upload.body, Upload.received_at).where(Upload.pk > after) \
        .order_by(Upload.pk).limit(limit)
    if node:
        q = q.where(Upload.node == node)
    if device:
        q = q.where(Upload.device == device)
    if kind:
        q = q.where(Upload.kind == kind)
    rows = s.execute(q).all()
    return {"items": [{**orjson.loads(r.body), "node": r.node, "cursor": r.pk, "received_at": r.received_at}
                      for r in rows],
            "next": rows[-1].pk if rows else after}


@router.get("/api/v1/alerts", tags=["uploads"])
def list_alerts(s: Db, a: Admin, after: Annotated[int, Query(ge=0, le=BIGINT)] = 0,
                limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
    return list_uploads(s, a, kind="alert", after=after, limit=limit)


@router.get("/api/v1/media/{node}/{media_id}", tags=["uploads"])
def get_media(node: str, media_id: str, s: Db, _: Admin) -> FileResponse:
    m = s.get(Media, f"{node}/{media_id}")
    if m is None or not FsPath(m.path).exists():
        raise HTTPException(404, f"no media {media_id!r} from node {node!r}")
    return FileResponse(m.path, media_type=m.content_type)
