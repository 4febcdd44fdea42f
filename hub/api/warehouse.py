"""The model warehouse: signed model bundles (BentoML ``.bento`` archives) by name and version.

Upload (admin): ``PUT /api/v1/models/{name}/versions/{version}/bundle`` with the archive as the
body and three headers: ``X-Sha256`` (of the body), ``X-Manifest`` (the canonical signed
manifest, base64url) and ``X-Signature`` (Ed25519 over the manifest, base64). The hub checks the
body against the digest and the manifest against the name, version, digest and size before it
keeps anything; the signature is kept for the nodes, which verify it against their trusted keys
before anything is unpickled. Versions are immutable: the same bundle again is a no-op (200), a
different one is refused (409).

Download (admin or any node token): metadata at ``.../versions/{version}``, the archive at
``.../versions/{version}/bundle``.
"""

import base64
import binascii
import hashlib
import os
import re
import uuid
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from ..auth import Principal
from ..core import Hub
from ..db import ModelDeployment, ModelVersion, Node, bump_revision, deleted, deployed_version, set_deployment
from ..desired import pinned_models
from .deps import Admin, Caller, Db, HubDep, hub_router
from .names import NAME, checked_name, checked_target

__all__ = ["router"]

router = hub_router(tags=["models"])


def _view(m: ModelVersion) -> dict[str, Any]:
    return {"name": m.name, "version": m.version, "sha256": m.sha256, "size": m.size, "key_id": m.key_id,
            "metrics": m.metrics or {}, "created_at": m.created_at,
            "manifest": base64.urlsafe_b64encode(m.manifest.encode()).decode(), "signature": m.signature}


class DeploymentPut(BaseModel):
    version: str = Field(pattern=NAME, description="a version in the warehouse")


@router.put("/api/v1/models/{name}/versions/{version}/bundle")
async def put_bundle(name: str, version: str, request: Request, _: Admin,
                     x_sha256: Annotated[str, Header(pattern=r"^[0-9a-f]{64}$")],
                     x_manifest: Annotated[str, Header(max_length=8000)],
                     x_signature: Annotated[str, Header(max_length=200)], hub: HubDep) -> JSONResponse:
    """Store a signed bundle; the manifest must name this model, version, digest and size."""
    checked_name("model name", name)
    checked_name("version", version)
    try:
        manifest_bytes = base64.urlsafe_b64decode(x_manifest.encode())
        manifest = orjson.loads(manifest_bytes)
        base64.b64decode(x_signature.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "X-Manifest must be base64url JSON and X-Signature base64") from None
    if not isinstance(manifest, dict):
        raise HTTPException(422, "the manifest must be a JSON object")
    for key, want in (("name", name), ("version", version), ("sha256", x_sha256)):
        if manifest.get(key) != want:
            raise HTTPException(422, f"manifest {key} is {manifest.get(key)!r:.80}, the upload says {want!r}")
    key_id = manifest.get("key_id")
    if not isinstance(key_id, str) or not re.fullmatch(r"[0-9a-f]{16}", key_id):
        raise HTTPException(422, "manifest key_id: expected 16 hex characters (edgeloop keys init)")
    folder = hub.models_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
        if digest.hexdigest() != x_sha256:
            raise HTTPException(422, f"body SHA-256 is {digest.hexdigest()}, X-Sha256 says {x_sha256}: "
                                     "upload damaged")
        if manifest.get("size") != size:
            raise HTTPException(422, f"manifest size is {manifest.get('size')!r:.40}, the body has {size} bytes")
        with hub.sessions() as s:
            old = s.scalars(sa.select(ModelVersion).where(ModelVersion.name == name,
                                                          ModelVersion.version == version)).first()
            if old is not None:
                if old.sha256 == x_sha256 and old.signature == x_signature:
                    return JSONResponse({**_view(old), "stored": False}, status_code=200)
                raise HTTPException(409, f"{name} version {version} exists with another bundle: versions "
                                         "are immutable, publish a new version")
            path = folder / f"{version}.bento"
            os.replace(tmp, path)
            metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else None
            row = ModelVersion(name=name, version=version, sha256=x_sha256, size=size, path=str(path),
                               manifest=manifest_bytes.decode(), signature=x_signature, key_id=key_id,
                               metrics=metrics)
            s.add(row)
            s.commit()
            return JSONResponse({**_view(row), "stored": True}, status_code=201)
    finally:
        tmp.unlink(missing_ok=True)


@router.get("/api/v1/models")
def list_models(s: Db, _: Admin) -> list[dict[str, Any]]:
    rows = s.scalars(sa.select(ModelVersion).order_by(ModelVersion.name, ModelVersion.id)).all()
    out: dict[str, dict[str, Any]] = {}
    for m in rows:
        e = out.setdefault(m.name, {"name": m.name, "versions": [], "latest": None})
        e["versions"].append({"version": m.version, "sha256": m.sha256, "size": m.size,
                              "metrics": m.metrics or {}, "created_at": m.created_at})
        e["latest"] = m.version
    return list(out.values())


def _get(s: Session, name: str, version: str) -> ModelVersion:
    m = s.scalars(sa.select(ModelVersion).where(ModelVersion.name == name,
                                                ModelVersion.version == version)).first()
    if m is None:
        raise HTTPException(404, f"no model {name!r} version {version!r}")
    return m


def _readable(s: Session, hub: Hub, p: Principal, name: str, version: str) -> ModelVersion:
    """The version, if ``p`` may read it: the admin any; a node only the version deployed to it (to the
    node itself, else to its group) and those its pipeline instances pin, the least it needs."""
    m = _get(s, name, version)
    if p.admin:
        return m
    node = s.get(Node, p.node)
    served = None
    if node is not None:
        served = deployed_version(s, f"node:{node.name}", name) or deployed_version(s, f"group:{node.group}", name)
        if served != version and (name, version) in pinned_models(s, node):
            return m
    if served != version:
        raise HTTPException(403, f"model {name!r} version {version!r} is not deployed to node {p.node!r} "
                                 f"(it is to serve {served or 'no version'}) and none of its pipeline "
                                 "instances pins it: a node may download only what it is to serve")
    return m


@router.get("/api/v1/models/{name}/versions/{version}")
def get_model(name: str, version: str, s: Db, p: Caller, hub: HubDep) -> dict[str, Any]:
    """A version's manifest (base64url, as signed), signature, digest and metrics. A node may read only
    the version deployed to it."""
    return _view(_readable(s, hub, p, name, version))


@router.get("/api/v1/models/{name}/versions/{version}/bundle")
def get_bundle(name: str, version: str, s: Db, p: Caller, hub: HubDep) -> FileResponse:
    """The signed bundle. A node may download only the version deployed to it."""
    m = _readable(s, hub, p, name, version)
    return FileResponse(m.path, media_type="application/octet-stream",
                        headers={"X-Sha256": m.sha256, "X-Signature": m.signature})


# -- deployments: which version each node or group serves (desired state) -----------------------
@router.put("/api/v1/models/{name}/deployments/{target}")
def put_deployment(name: str, target: str, body: DeploymentPut, s: Db, _: Admin) -> dict[str, Any]:
    """Serve ``name`` at ``body.version`` on a node (``node:<name>``) or a group (``group:<name>``); the
    version must be in the warehouse. Nodes pick it up with their desired state."""
    kind, who = checked_target(target)
    if kind == "node" and s.get(Node, who) is None:
        raise HTTPException(404, f"unknown node {who!r}")
    _get(s, name, body.version)
    set_deployment(s, target, name, body.version)
    bump_revision(s)
    s.commit()
    return {"name": name, "target": target, "version": body.version}


@router.get("/api/v1/models/{name}/deployments")
def list_deployments(name: str, s: Db, _: Admin) -> list[dict[str, Any]]:
    rows = s.scalars(sa.select(ModelDeployment).where(ModelDeployment.name == name)
                     .order_by(ModelDeployment.target)).all()
    return [{"name": d.name, "target": d.target, "version": d.version, "created_at": d.created_at} for d in rows]


@router.delete("/api/v1/models/{name}/deployments/{target}")
def delete_deployment(name: str, target: str, s: Db, _: Admin) -> dict[str, Any]:
    n = deleted(s, sa.delete(ModelDeployment).where(ModelDeployment.target == target, ModelDeployment.name == name))
    if not n:
        raise HTTPException(404, f"model {name!r} is not deployed to {target!r}")
    bump_revision(s)
    s.commit()
    return {"deleted": f"{name}@{target}"}
