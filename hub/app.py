"""The hub's HTTP API (FastAPI): nodes, tokens, products, pipelines, assignments, uploads, media.

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>``. The admin
token may do everything; a node token may only register, heartbeat, read its own
desired state and write its own uploads and media. Errors are 4xx with a
``detail`` message that says what is wrong and where; nothing is stored half-way.
"""


import hashlib
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any, AsyncIterator

import orjson
import sqlalchemy as sa
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from edge_runtime.metrics import CONTENT_TYPE as METRICS_TYPE

from . import auth
from .dashboard import add_dashboard
from .db import Assignment, Media, Node, PipelineVersion, Product, Rollout, Token, Upload, set_assignment
from .metrics import RequestMetrics, RequestStats, hub_metrics
from .rollouts import RolloutController, RolloutError
from .rollouts import view as rollout_view
from .service import Hub, HubSettings, SpecRejected
from .uploads import UploadError, check_item, json_problem, store_items
from .warehouse import add_warehouse

__all__ = ["create_app"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_NAME = re.compile(NAME)
_MEDIA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # not '.' or '..': the id is a file name
BIGINT = 2**63 - 1  # integers in paths and queries go to the database: keep them in its range


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit with 413 before reading them all."""

    def __init__(self, app: Any, max_body: int, max_media: int, max_bundle: int = 1 << 30) -> None:
        self.app, self.max_body, self.max_media, self.max_bundle = app, max_body, max_media, max_bundle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self.max_bundle if path.endswith("/bundle") else self.max_media if "/media/" in path else self.max_body
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                return await _too_large(send, limit)
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, limit)


class _TooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it on (it answers 400 to others)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


async def _too_large(send: Any, limit: int) -> None:
    body = orjson.dumps({"detail": f"request body is larger than {limit} bytes"})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- request bodies (documented in the OpenAPI description) ---------------------------------
class NodeCreate(BaseModel):
    name: str = Field(pattern=NAME, description="node id: the MQTT username and topic prefix too")
    group: str = Field("default", pattern=NAME)


class TokenCreate(BaseModel):
    note: str = Field("", max_length=200, pattern=r"^[^\x00]*$")
    ttl: float | None = Field(None, gt=0, description="seconds until the token expires")


class Register(BaseModel):
    version: str = Field("", max_length=40)
    hostname: str = Field("", max_length=200)
    capabilities: list[str] = Field(default_factory=list, max_length=100)


class Heartbeat(BaseModel):
    instances: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    models: dict[str, Any] = Field(default_factory=dict)
    counters: dict[str, Any] = Field(default_factory=dict)
    queues: dict[str, Any] = Field(default_factory=dict)
    outbox: dict[str, Any] = Field(default_factory=dict)
    video: dict[str, Any] = Field(default_factory=dict, description="per camera: frames, reconnects, stalls, corrupt frames, drops")
    errors: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    desired_etag: str | None = Field(None, max_length=64)


class AssignmentPut(BaseModel):
    pipeline: str = Field(pattern=r"^[A-Za-z0-9_. \-]{1,100}$")
    version: int | None = Field(None, ge=1, le=BIGINT, description="a pipeline version; none: always the newest")
    devices: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None, max_length=10000, description="bound devices; none: every device of the pipeline's product")
    params: dict[str, Any] | None = Field(
        None, max_length=200, description="values of the pipeline's declared params (none: its defaults)")


class RolloutCreate(BaseModel):
    model: str | None = Field(None, pattern=NAME, description="a model in the warehouse (or name a pipeline)")
    pipeline: str | None = Field(None, pattern=r"^[A-Za-z0-9_. \-]{1,100}$",
                                 description="a pipeline at the hub (or name a model)")
    version: str = Field(pattern=NAME, description="the version to roll out (in the warehouse, or the pipeline's)")
    group: str = Field(pattern=NAME, description="the node group to roll out to")
    canary: int = Field(1, ge=1, le=10000, description="how many nodes of the group get the version first")
    watch_s: float = Field(60.0, ge=0, le=7 * 86400,
                           description="seconds the canaries must serve it with passing checks before promotion")
    checks: dict[str, Any] | None = Field(
        None, description="rollback thresholds: max_error_rate (dead letters per heartbeat), min_heartbeats, "
                          "max_confidence_drop, min_records")


class Uploads(BaseModel):
    items: list[Any] = Field(max_length=10000)


def _no_nul(request: Request) -> None:
    """NUL cannot be stored in PostgreSQL text, not even compared: refuse it in paths and queries."""
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise HTTPException(422, "NUL characters are not allowed in the URL")


def create_app(settings: HubSettings | None = None, hub: Hub | None = None) -> FastAPI:
    settings = settings or HubSettings.from_env()
    hub = hub or Hub(settings)
    rollouts = RolloutController(hub)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        rollouts.start()  # under a server (uvicorn); a TestClient outside `with` runs no lifespan
        try:
            yield
        finally:
            rollouts.stop()

    app = FastAPI(title="EdgeLoop hub", version="1", description=__doc__, dependencies=[Depends(_no_nul)],
                  lifespan=lifespan)
    app.state.hub = hub
    app.state.rollouts = rollouts
    app.add_middleware(BodyLimit, max_body=settings.max_body, max_media=settings.max_media,
                       max_bundle=settings.max_bundle)
    request_stats = RequestStats()
    app.add_middleware(RequestMetrics, stats=request_stats)

    async def db() -> AsyncIterator[Session]:  # annotations here are evaluated eagerly: FastAPI reads them
        # An async generator on purpose: its clean-up (returning the connection to the pool) runs on the
        # event loop. A sync one would need a worker thread for it, and with every thread waiting for a
        # pooled connection held by sessions waiting to be closed, the hub deadlocks under load.
        s = hub.sessions()
        try:
            yield s
        finally:
            s.close()

    # Dependencies below use short sessions of their own, closed before they return: a request never holds a
    # pooled connection while it waits for its next worker thread (that deadlocks a busy hub).
    def any_principal(authorization: Annotated[str | None, Header(description="Bearer <token>")] = None) -> auth.Principal:
        if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 200:
            raise HTTPException(401, "missing token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        p = hub.principal_for(authorization[7:].strip())
        if p is None:
            raise HTTPException(401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"})
        return p

    def principal(p: Annotated[auth.Principal, Depends(any_principal)]) -> auth.Principal:
        """The admin or a node: a metrics token may read /metrics and nothing else."""
        if p.kind == "metrics":
            raise HTTPException(403, "a metrics token may only read /metrics")
        return p

    def admin(p: Annotated[auth.Principal, Depends(principal)]) -> auth.Principal:
        if not p.admin:
            raise HTTPException(403, "this needs the admin token")
        return p

    def _node(node: str) -> Node:
        with hub.sessions() as s:
            n = s.get(Node, node)
        if n is None:
            raise HTTPException(404, f"unknown node {node!r}")
        return n  # detached, attributes loaded

    def node_or_admin(node: str, p: Annotated[auth.Principal, Depends(principal)]) -> Node:
        if not p.admin and p.node != node:
            raise HTTPException(403, f"a token of node {p.node!r} cannot act for node {node!r}")
        return _node(node)

    def own_node(node: str, p: Annotated[auth.Principal, Depends(principal)]) -> Node:
        if p.node != node:
            raise HTTPException(403, f"only node {node!r}'s own token may do this")
        n = hub.node_for(node)
        if n is None:
            raise HTTPException(404, f"unknown node {node!r}")
        return n

    Admin = Annotated[auth.Principal, Depends(admin)]
    Db = Annotated[Session, Depends(db)]
    add_warehouse(app, hub, principal=principal, admin=admin, db=db)
    add_dashboard(app, hub, rollouts)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(p: Annotated[auth.Principal, Depends(any_principal)]) -> PlainTextResponse:
        """Prometheus metrics: the admin token or a metrics token (``POST /api/v1/tokens/metrics``), which can
        read nothing else."""
        if p.kind not in ("admin", "metrics"):
            raise HTTPException(403, "metrics need the admin token or a metrics token")
        return PlainTextResponse(hub_metrics(hub, request_stats), media_type=METRICS_TYPE)

    @app.post("/api/v1/tokens/metrics", status_code=201, tags=["tokens"])
    def create_metrics_token(body: TokenCreate, s: Db, _: Admin) -> dict[str, Any]:
        """A token for a Prometheus scraper: it may read /metrics and nothing else."""
        tid, token = auth.issue(s, "metrics", note=body.note, ttl=body.ttl)
        s.commit()
        return {"kind": "metrics", "token_id": tid, "token": token}

    @app.exception_handler(SpecRejected)
    async def _spec(_: Request, exc: SpecRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(UploadError)
    async def _upload(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RolloutError)
    async def _rollout(_: Request, exc: RolloutError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        """Liveness and database reachability (no token needed)."""
        with hub.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
        return {"status": "ok", "time": time.time()}

    # -- nodes and tokens (admin) -----------------------------------------------------------
    @app.post("/api/v1/nodes", status_code=201, tags=["nodes"])
    def create_node(body: NodeCreate, s: Db, _: Admin) -> dict[str, Any]:
        """Create a node and its first token (shown once)."""
        if s.get(Node, body.name) is not None:
            raise HTTPException(409, f"node {body.name!r} exists; create another token with POST .../tokens")
        s.add(Node(name=body.name, group=body.group))
        s.flush()
        tid, token = auth.issue(s, "node", node=body.name, note="first token")
        s.commit()
        return {"name": body.name, "group": body.group, "token_id": tid, "token": token}

    @app.get("/api/v1/nodes", tags=["nodes"])
    def list_nodes(s: Db, _: Admin) -> list[dict[str, Any]]:
        now = time.time()
        return [hub.node_view(n, now) for n in s.scalars(sa.select(Node).order_by(Node.name))]

    @app.get("/api/v1/nodes/{node}", tags=["nodes"])
    def get_node(n: Annotated[Node, Depends(node_or_admin)]) -> dict[str, Any]:
        return hub.node_view(n)

    @app.delete("/api/v1/nodes/{node}", tags=["nodes"])
    def delete_node(node: str, s: Db, _: Admin) -> dict[str, Any]:
        n = s.get(Node, node)
        if n is None:
            raise HTTPException(404, f"unknown node {node!r}")
        s.execute(sa.update(Token).where(Token.node == node).values(revoked_at=time.time()))
        s.execute(sa.delete(Assignment).where(Assignment.target == f"node:{node}"))
        s.delete(n)
        hub.bump(s)
        s.commit()
        hub.tokens_changed()
        return {"deleted": node}

    @app.post("/api/v1/nodes/{node}/tokens", status_code=201, tags=["tokens"])
    def create_token(node: str, body: TokenCreate, s: Db, _: Admin) -> dict[str, Any]:
        if s.get(Node, node) is None:
            raise HTTPException(404, f"unknown node {node!r}")
        tid, token = auth.issue(s, "node", node=node, note=body.note, ttl=body.ttl)
        s.commit()
        return {"node": node, "token_id": tid, "token": token}

    @app.get("/api/v1/tokens", tags=["tokens"])
    def list_tokens(s: Db, _: Admin) -> list[dict[str, Any]]:
        return [{"id": t.id, "kind": t.kind, "node": t.node, "note": t.note, "created_at": t.created_at,
                 "expires_at": t.expires_at, "revoked_at": t.revoked_at}
                for t in s.scalars(sa.select(Token).order_by(Token.id))]

    @app.delete("/api/v1/tokens/{token_id}", tags=["tokens"])
    def revoke_token(token_id: Annotated[int, Path(ge=1, le=BIGINT)], s: Db, p: Admin) -> dict[str, Any]:
        t = s.get(Token, token_id)
        if t is None:
            raise HTTPException(404, f"unknown token id {token_id}")
        if t.id == p.token_id:
            raise HTTPException(409, "refusing to revoke the token this request uses")
        t.revoked_at = t.revoked_at or time.time()
        s.commit()
        hub.tokens_changed()
        return {"revoked": token_id}

    # -- the agent's endpoints (node token, own node only) --------------------------------------
    @app.post("/api/v1/nodes/{node}/register", tags=["agent"])
    def register(body: Register, n: Annotated[Node, Depends(own_node)], s: Db) -> dict[str, Any]:
        n = s.merge(n)
        n.registered_at = n.last_seen = time.time()
        n.info = body.model_dump()
        s.commit()
        return {"node": n.name, "group": n.group, "heartbeat_interval": settings.heartbeat_interval,
                "uplink_topic": f"edgeloop/{n.name}/uplink", "ack_topic": f"edgeloop/{n.name}/uplink/ack"}

    @app.post("/api/v1/nodes/{node}/heartbeat", tags=["agent"])
    def heartbeat(body: Heartbeat, n: Annotated[Node, Depends(own_node)], s: Db) -> dict[str, Any]:
        hb = body.model_dump()
        problem = json_problem(hb, "heartbeat")
        if problem:
            raise HTTPException(422, problem)
        hub.record_heartbeat(n.name, hb)
        etag = hub.desired_etag(s, n)
        s.rollback()  # read only: the connection goes back at once
        return {"desired_etag": etag, "changed": etag != body.desired_etag}

    @app.get("/api/v1/nodes/{node}/desired", tags=["agent"])
    def desired(n: Annotated[Node, Depends(node_or_admin)], s: Db, response: Response,
                if_none_match: Annotated[str | None, Header()] = None) -> Any:
        """The node's desired state; 304 when the ETag in If-None-Match is current."""
        doc = hub.desired(s, n)
        if if_none_match and if_none_match.strip('"') == doc["etag"]:
            return Response(status_code=304, headers={"ETag": f'"{doc["etag"]}"'})
        response.headers["ETag"] = f'"{doc["etag"]}"'
        return doc

    @app.post("/api/v1/nodes/{node}/uploads", tags=["agent"])
    def upload(body: Uploads, n: Annotated[Node, Depends(own_node)]) -> dict[str, Any]:
        """Records, alerts and notifications over HTTP (the same items as the MQTT uplink); idempotent by id."""
        items = [check_item(it, i) for i, it in enumerate(body.items)]
        stored = store_items(hub.engine, {n.name: items})
        return {"stored": stored, "duplicates": len(items) - stored}

    @app.put("/api/v1/nodes/{node}/media/{media_id}", tags=["agent"])
    async def put_media(media_id: str, request: Request, n: Annotated[Node, Depends(own_node)],
                        x_sha256: Annotated[str, Header(pattern=r"^[0-9a-f]{64}$")],
                        content_type: Annotated[str, Header(max_length=100)] = "application/octet-stream",
                        x_upload_id: Annotated[str | None, Header(max_length=64)] = None) -> JSONResponse:
        """A media file (e.g. an alert's JPEG); stored once per id, checked against its SHA-256."""
        if not _MEDIA_ID.match(media_id):
            raise HTTPException(422, f"media id {media_id!r}: letters, digits and _ . -, starting with a letter or digit (at most 64)")
        data = await request.body()
        digest = hashlib.sha256(data).hexdigest()
        if digest != x_sha256:
            raise HTTPException(422, f"body SHA-256 is {digest}, X-Sha256 says {x_sha256}: upload damaged")
        return await _store_media(n.name, media_id, data, digest, content_type, x_upload_id)

    async def _store_media(node: str, media_id: str, data: bytes, digest: str, ctype: str,
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

    # -- products, pipelines, assignments (admin) ------------------------------------------------
    @app.put("/api/v1/products/{name}", tags=["products"])
    def put_product(name: str, s: Db, _: Admin, spec: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """Create or update a product (the same YAML mapping a node's products file holds)."""
        checked = hub.check_product(spec)
        if checked != name:
            raise HTTPException(422, f"the path says product {name!r}, the spec's name is {checked!r}")
        p = s.get(Product, name)
        if p is None:
            s.add(p := Product(name=name, spec=spec, version=1))
        elif p.spec != spec:
            p.spec, p.version, p.updated_at = spec, p.version + 1, time.time()
        hub.bump(s)
        s.commit()
        return {"name": name, "version": p.version}

    @app.get("/api/v1/products", tags=["products"])
    def list_products(s: Db, _: Admin) -> list[dict[str, Any]]:
        return [{"name": p.name, "version": p.version, "spec": p.spec}
                for p in s.scalars(sa.select(Product).order_by(Product.name))]

    @app.post("/api/v1/pipelines", tags=["pipelines"])
    def put_pipeline(s: Db, _: Admin, response: Response, spec: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """Validate a pipeline spec exactly as a node would; a changed spec becomes a new version."""
        row, created = hub.put_pipeline(s, spec)
        s.commit()
        response.status_code = 201 if created else 200
        return {"name": row.name, "version": row.version, "created": created}

    @app.get("/api/v1/pipelines", tags=["pipelines"])
    def list_pipelines(s: Db, _: Admin) -> list[dict[str, Any]]:
        rows = s.execute(sa.select(PipelineVersion.name, sa.func.max(PipelineVersion.version),
                                   sa.func.count()).group_by(PipelineVersion.name).order_by(PipelineVersion.name))
        return [{"name": r[0], "latest": r[1], "versions": r[2]} for r in rows]

    @app.get("/api/v1/pipelines/{name}", tags=["pipelines"])
    def get_pipeline(name: str, s: Db, _: Admin,
                     version: Annotated[int | None, Query(ge=1, le=BIGINT)] = None) -> dict[str, Any]:
        pv = hub.pipeline_version(s, name, version)
        if pv is None:
            raise HTTPException(404, f"no pipeline {name!r}" + (f" version {version}" if version else ""))
        return {"name": pv.name, "version": pv.version, "spec": pv.spec, "created_at": pv.created_at}

    @app.put("/api/v1/assignments/{target}/{instance}", tags=["assignments"])
    def put_assignment(target: str, instance: str, body: AssignmentPut, s: Db, _: Admin) -> dict[str, Any]:
        """Run a pipeline instance on a node (``node:<name>``) or every node of a group (``group:<name>``)."""
        kind, _sep, name = target.partition(":")
        if kind not in ("node", "group") or not _NAME.match(name):
            raise HTTPException(422, f"target {target!r}: expected node:<name> or group:<name>")
        if not _NAME.match(instance):
            raise HTTPException(422, f"instance {instance!r}: letters, digits and _ . - only (at most 64)")
        if kind == "node" and s.get(Node, name) is None:
            raise HTTPException(404, f"unknown node {name!r}")
        pv = hub.pipeline_version(s, body.pipeline, body.version)
        if pv is None:
            raise HTTPException(404, f"no pipeline {body.pipeline!r}" + (f" version {body.version}" if body.version else ""))
        hub.check_instance(s, pv.spec, body.params, f"pipeline {pv.name} v{pv.version}")
        set_assignment(s, target, instance, pv.name, body.version, body.devices, body.params)
        hub.bump(s)
        s.commit()
        return {"target": target, "instance": instance, "pipeline": pv.name, "version": body.version or pv.version,
                "devices": body.devices, "params": body.params or None}

    @app.get("/api/v1/assignments", tags=["assignments"])
    def list_assignments(s: Db, _: Admin) -> list[dict[str, Any]]:
        return [{"target": a.target, "instance": a.instance, "pipeline": a.pipeline, "version": a.version,
                 "devices": a.devices, "params": a.params} for a in s.scalars(sa.select(Assignment).order_by(Assignment.id))]

    @app.delete("/api/v1/assignments/{target}/{instance}", tags=["assignments"])
    def delete_assignment(target: str, instance: str, s: Db, _: Admin) -> dict[str, Any]:
        n = s.execute(sa.delete(Assignment).where(Assignment.target == target, Assignment.instance == instance)).rowcount
        if not n:
            raise HTTPException(404, f"no assignment {instance!r} for {target!r}")
        hub.bump(s)
        s.commit()
        return {"deleted": f"{target}/{instance}"}

    # -- what nodes uploaded (admin) ---------------------------------------------------------------
    @app.get("/api/v1/uploads", tags=["uploads"])
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

    @app.get("/api/v1/alerts", tags=["uploads"])
    def list_alerts(s: Db, a: Admin, after: Annotated[int, Query(ge=0, le=BIGINT)] = 0,
                    limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
        return list_uploads(s, a, kind="alert", after=after, limit=limit)

    @app.get("/api/v1/media/{node}/{media_id}", tags=["uploads"])
    def get_media(node: str, media_id: str, s: Db, _: Admin) -> FileResponse:
        m = s.get(Media, f"{node}/{media_id}")
        if m is None or not FsPath(m.path).exists():
            raise HTTPException(404, f"no media {media_id!r} from node {node!r}")
        return FileResponse(m.path, media_type=m.content_type)

    # -- model and pipeline rollouts (admin): canaries, promotion, automatic rollback (hub/rollouts.py) -----
    @app.post("/api/v1/rollouts", status_code=201, tags=["rollouts"])
    def start_rollout(body: RolloutCreate, s: Db, _: Admin) -> dict[str, Any]:
        """Roll ``model:version`` (or ``pipeline`` and its ``version``: the group's instances of it must be
        pinned to a version) out to a group: ``canary`` nodes first (online ones first, by name), the whole
        group after ``watch_s`` seconds of passing checks; rolled back when a canary refuses it, its dead
        letters grow or (models) its confidence drops (see ``checks``)."""
        return rollouts.create(s, model=body.model, pipeline=body.pipeline, version=body.version, group=body.group,
                               canary=body.canary, watch_s=body.watch_s, checks=body.checks)

    @app.get("/api/v1/rollouts", tags=["rollouts"])
    def list_rollouts(s: Db, _: Admin, model: Annotated[str | None, Query(max_length=64)] = None,
                      pipeline: Annotated[str | None, Query(max_length=100)] = None,
                      limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> list[dict[str, Any]]:
        """Rollouts, newest first (``model`` or ``pipeline``: only that one's)."""
        q = sa.select(Rollout).order_by(Rollout.id.desc()).limit(limit)
        if model:
            q = q.where(Rollout.model == model, Rollout.kind == "model")
        if pipeline:
            q = q.where(Rollout.model == pipeline, Rollout.kind == "pipeline")
        return [rollout_view(r) for r in s.scalars(q)]

    @app.get("/api/v1/rollouts/{rollout_id}", tags=["rollouts"])
    def get_rollout(rollout_id: Annotated[int, Path(ge=1, le=BIGINT)], s: Db, _: Admin) -> dict[str, Any]:
        """A rollout's state and its nodes: pending, installing, serving, failed or offline, with reasons."""
        r = s.get(Rollout, rollout_id)
        if r is None:
            raise HTTPException(404, f"no rollout {rollout_id}")
        return rollout_view(r)

    @app.post("/api/v1/rollouts/{rollout_id}/promote", tags=["rollouts"])
    def promote_rollout(rollout_id: Annotated[int, Path(ge=1, le=BIGINT)], s: Db, _: Admin) -> dict[str, Any]:
        """Give the whole group the version now (a canary rollout only)."""
        return rollouts.promote(s, rollout_id)

    @app.post("/api/v1/rollouts/{rollout_id}/rollback", tags=["rollouts"])
    def rollback_rollout(rollout_id: Annotated[int, Path(ge=1, le=BIGINT)], s: Db, _: Admin) -> dict[str, Any]:
        """Put the canaries (and, once rolling, the group) back on the previous version now."""
        return rollouts.rollback(s, rollout_id)

    return app
