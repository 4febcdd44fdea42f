"""The dashboard's pages: nodes, alerts (with their media), shared pipelines, live device values (and their
event stream), models (with their drift charts) and rollouts (with the promote and rollback buttons), sign-in
and static files."""

import time
from pathlib import Path as FsPath
from typing import Annotated, Any, Mapping
from urllib.parse import quote

import orjson
import sqlalchemy as sa
from fastapi import Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from ..api.deps import HubDep, Rollouts, hub_router
from ..api.names import BIGINT, is_name
from ..client import ACTIVE
from ..core import Hub
from ..db import Assignment, Media, ModelDeployment, ModelDrift, ModelVersion, Node, PipelineVersion, Rollout, Upload
from ..drift import drift_view
from ..rollouts.controller import RolloutController
from ..rollouts.views import view as rollout_view
from .charts import drift_chart
from .live import event_stream, latest_values, node_views, scalar
from .session import COOKIE, Token, check_csrf, csrf_value, form, safe_next

__all__ = ["router"]

INLINE_MEDIA = ("image/jpeg", "image/png", "image/webp", "image/gif")
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "favicon.svg": "image/svg+xml"}
TEMPLATES = FsPath(__file__).parents[1] / "templates"

router = hub_router(include_in_schema=False)
RolloutId = Annotated[int, Path(ge=1, le=BIGINT)]

_env = Environment(loader=PackageLoader("hub", "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    s = max(0.0, time.time() - t)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.0f} h ago"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


_env.filters["ago"] = _ago
_env.filters["when"] = _when


def page(name: str, token: str | None, **ctx: Any) -> HTMLResponse:
    html = _env.get_template(name).render(csrf=csrf_value(token) if token else "", now=time.time(), **ctx)
    return HTMLResponse(html, headers={
        "Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
                                   "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"})


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/login")
def login_page(next: str = "/ui/", error: str = "") -> HTMLResponse:
    return page("login.html", None, next=safe_next(next), error=error)


@router.post("/ui/login")
async def login(request: Request, hub: HubDep) -> Response:
    fields = await form(request)
    token, nxt = fields.get("token", "").strip(), safe_next(fields.get("next", "/ui/"))
    p = await run_in_threadpool(hub.principal_for, token) if token and len(token) <= 200 else None
    if p is None or not p.admin:
        why = "that is not an admin token" if p is not None else "unknown, expired or revoked token"
        return page("login.html", None, next=nxt, error=why)
    resp = RedirectResponse(nxt, status_code=303)
    ttl = None if p.expires_at is None else max(1, int(p.expires_at - time.time()))
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/ui", max_age=ttl,
                    secure=request.url.scheme == "https")
    return resp


@router.post("/ui/logout")
async def logout(request: Request, token: Token) -> Response:
    check_csrf(token, await form(request))
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


@router.get("/ui/")
def nodes_page(token: Token, hub: HubDep) -> HTMLResponse:
    return page("nodes.html", token, active="nodes", nodes=node_views(hub))


@router.get("/ui/alerts")
def alerts_page(token: Token, hub: HubDep, limit: int = 50) -> HTMLResponse:
    limit = max(1, min(limit, 500))
    with hub.sessions() as s:
        rows = s.execute(sa.select(Upload.pk, Upload.node, Upload.device, Upload.ts, Upload.received_at,
                                   Upload.body).where(Upload.kind == "alert")
                         .order_by(Upload.pk.desc()).limit(limit)).all()
    alerts = []
    for r in rows:
        doc = orjson.loads(r.body)
        image = doc.get("image") if isinstance(doc.get("image"), dict) else {}
        extra = {k: v for k, v in doc.items() if k not in ("id", "kind", "device", "ts", "image", "seq",
                                                           "instance", "message", "level", "record")
                 and scalar(v)}
        alerts.append({"node": r.node, "device": r.device or "-", "ts": r.ts, "received_at": r.received_at,
                       "message": doc.get("message") or doc.get("alert") or "", "level": doc.get("level", ""),
                       "media": image.get("media"), "extra": extra, "instance": doc.get("instance", ""),
                       "media_ok": isinstance(image.get("media"), str) and is_name(image["media"])})
    return page("alerts.html", token, active="alerts", alerts=alerts)


@router.get("/ui/media/{node}/{media_id}")
def media(node: str, media_id: str, _: Token, hub: HubDep) -> FileResponse:
    """A node's media file. Nodes choose the content type: only raster images are served as such (shown
    inline); anything else is a download, so a node cannot plant a page or script on this origin."""
    with hub.sessions() as s:
        m = s.get(Media, f"{node}/{media_id}")
    if m is None or not FsPath(m.path).exists():
        raise HTTPException(404, f"no media {media_id!r} from node {node!r}")
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'; sandbox"}
    ctype = (m.content_type or "").split(";")[0].strip().lower()
    if ctype in INLINE_MEDIA:
        return FileResponse(m.path, media_type=ctype, headers=headers)
    return FileResponse(m.path, media_type="application/octet-stream", filename=media_id,
                        headers=headers)  # Content-Disposition: attachment


@router.get("/ui/pipelines")
def pipelines_page(token: Token, hub: HubDep) -> HTMLResponse:
    """Shared pipelines: versions (declared params), assignments (version or newest, devices, params), what
    each node runs of them (from heartbeats), and pipeline rollouts."""
    now = time.time()
    with hub.sessions() as s:
        versions = s.scalars(sa.select(PipelineVersion).order_by(PipelineVersion.name, PipelineVersion.version)).all()
        assigns = s.scalars(sa.select(Assignment).order_by(Assignment.pipeline, Assignment.target,
                                                           Assignment.instance)).all()
        views = [hub.node_view(n, now) for n in s.scalars(sa.select(Node).order_by(Node.name))]
        outs = [rollout_view(r) for r in s.scalars(sa.select(Rollout).where(Rollout.kind == "pipeline")
                                                   .order_by(Rollout.id.desc()).limit(50))]
        pipes: dict[str, dict[str, Any]] = {}
        for v in versions:
            e = pipes.setdefault(v.name, {"name": v.name, "versions": [], "assignments": [], "running": []})
            e["versions"].append({"version": v.version,
                                  "params": v.spec.get("params") if isinstance(v.spec.get("params"), dict) else {}})
        for a in assigns:
            if a.pipeline in pipes:
                pipes[a.pipeline]["assignments"].append(
                    {"target": a.target, "instance": a.instance, "version": a.version, "devices": a.devices,
                     "params": a.params or {}})
    for n in views:
        for i in n["instances"]:
            if isinstance(i, Mapping) and i.get("source") == "hub" and i.get("pipeline") in pipes:
                pipes[i["pipeline"]]["running"].append({"node": n["name"], "online": n["online"],
                                                        "instance": i.get("instance"), "version": i.get("version"),
                                                        "processed": i.get("processed")})
        for e in n["errors"]:
            if isinstance(e, Mapping) and e.get("pipeline") in pipes:
                pipes[e["pipeline"]]["running"].append({"node": n["name"], "online": n["online"],
                                                        "instance": e.get("instance"), "version": e.get("version"),
                                                        "error": e.get("error")})
    return page("pipelines.html", token, active="pipelines", pipelines=list(pipes.values()), rollouts=outs)


@router.get("/ui/devices")
def devices_page(token: Token, hub: HubDep) -> HTMLResponse:
    rows, cursor = latest_values(hub.engine)
    rows.sort(key=lambda r: (r["node"], r["device"]))
    return page("devices.html", token, active="devices", devices=rows, cursor=cursor)


@router.get("/ui/events")
async def events(request: Request, token: Token, hub: HubDep, after: Annotated[int, Query(ge=0, le=BIGINT)] = 0,
                 every: Annotated[float, Query(ge=0.1, le=10.0)] = 0.5,
                 only: Annotated[str, Query(pattern="^(values|nodes|all)$")] = "all",
                 last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """Server-sent events: ``values`` (a device's newest values) as records arrive, ``nodes`` (online
    state and counters) every few seconds. A stream lasts at most ``STREAM_S`` and stops as soon as its
    token is revoked; the browser reconnects by itself and resumes from ``Last-Event-ID``."""
    if last_event_id and last_event_id.isdigit() and int(last_event_id) < 2**63:
        after = max(after, int(last_event_id))
    return StreamingResponse(event_stream(request, hub, token, after, every, only), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/ui/models")
def models_page(token: Token, hub: HubDep, done: str = "", error: str = "") -> HTMLResponse:
    with hub.sessions() as s:
        versions = s.scalars(sa.select(ModelVersion).order_by(ModelVersion.name, ModelVersion.id)).all()
        deployments = s.scalars(sa.select(ModelDeployment).order_by(ModelDeployment.name,
                                                                     ModelDeployment.target)).all()
        outs = [rollout_view(r) for r in s.scalars(sa.select(Rollout).order_by(Rollout.id.desc()).limit(50))]
        models: dict[str, dict[str, Any]] = {}
        for m in versions:
            e = models.setdefault(m.name, {"name": m.name, "versions": [], "deployed": []})
            e["versions"].append({"version": m.version, "size": m.size, "created_at": m.created_at,
                                  "metrics": {k: v for k, v in (m.metrics or {}).items() if scalar(v)}})
        for d in deployments:
            models.setdefault(d.name, {"name": d.name, "versions": [], "deployed": []})["deployed"].append(
                {"target": d.target, "version": d.version})
        now = time.time()
        drifting = s.scalars(sa.select(ModelDrift.model).where(ModelDrift.ts >= now - 86400).distinct()).all()
        for name in drifting:
            if is_name(name):
                models.setdefault(name, {"name": name, "versions": [], "deployed": []})
        for name, e in models.items():
            view = drift_view(s, name, now=now)
            e["drift"] = drift_chart(view, now=now) if view["series"] else None
    return page("models.html", token, active="models", models=list(models.values()), rollouts=outs,
                rollback_states=(*ACTIVE, "done"), done=done, error=error)


async def _act(request: Request, token: str, rollout_id: int, action: str, hub: Hub,
               rollouts: RolloutController) -> Response:
    check_csrf(token, await form(request))

    def act() -> Any:  # the controller's lock and a commit: off the event loop
        with hub.sessions() as s:
            return getattr(rollouts, action)(s, rollout_id)

    try:
        got = await run_in_threadpool(act)
    except Exception as e:  # RolloutError and friends: shown on the page, nothing changed
        detail = getattr(e, "detail", None) or str(e)
        return RedirectResponse(f"/ui/models?error={quote(f'rollout {rollout_id}: {detail}')}", status_code=303)
    state = got.get("state", "") if isinstance(got, dict) else ""
    return RedirectResponse(f"/ui/models?done={quote(f'rollout {rollout_id}: {action} -> {state}')}",
                            status_code=303)


@router.post("/ui/rollouts/{rollout_id}/rollback")
async def ui_rollback(request: Request, token: Token, rollout_id: RolloutId, hub: HubDep,
                      rollouts: Rollouts) -> Response:
    return await _act(request, token, rollout_id, "rollback", hub, rollouts)


@router.post("/ui/rollouts/{rollout_id}/promote")
async def ui_promote(request: Request, token: Token, rollout_id: RolloutId, hub: HubDep,
                     rollouts: Rollouts) -> Response:
    return await _act(request, token, rollout_id, "promote", hub, rollouts)


@router.get("/ui/static/{name}")
def static(name: str) -> FileResponse:
    path = TEMPLATES / "static" / name
    ctype = STATIC.get(name)
    if ctype is None or not path.exists():
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, media_type=ctype, headers={"Cache-Control": "max-age=300"})


