"""The hub's dashboard and /metrics against a real hub process; the pages in headless Chromium.

The hub is ``edgeloop hub serve`` on SQLite. What the pages show is put there the way nodes put it: a node's
token uploads records and an alert with its JPEG over the API, a SIMULATED node (edgeloop.devkit.simfleet: a real model
store that downloads, verifies and loads signed bundles, and heartbeats) serves a model, and a canary rollout
is started through the API. The browser is Debian's chromium driven by Playwright's Python client (no
browser download); `make deps` installs it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import cv2
import httpx
import numpy as np
import pytest

from edge_runtime.hubclient import HubClient
from edge_runtime.signing import init_keys
from edgeloop.devkit import simfleet
from hub.client import start_rollout
from hub.dashboard import COOKIE, csrf_value
from tests.kit.hub import ADMIN, HubProcess, drift_point, wait_for

MODEL = "dmodel"


def jpeg() -> bytes:
    img = np.zeros((120, 160, 3), np.uint8)
    cv2.rectangle(img, (40, 30), (120, 90), (0, 0, 255), -1)
    return cv2.imencode(".jpg", img)[1].tobytes()


class Fleet:
    def __init__(self, hub: HubProcess, tmp: Path) -> None:
        self.hub, self.tmp = hub, tmp
        self.admin = hub.admin()
        made = self.admin.post("/api/v1/nodes", {"name": "cam-node", "group": "street"})
        self.node = HubClient(hub.url, made["token"])
        self.node_token = made["token"]
        self.seq = 0

    def record(self, device: str, **values: Any) -> None:
        self.seq += 1
        item = {"id": uuid.uuid4().hex, "kind": "record", "device": device, "seq": self.seq, "ts": time.time(),
                "record": {"device": device, "ts": time.time(), "values": values}}
        assert self.node.post("/api/v1/nodes/cam-node/uploads", {"items": [item]})["stored"] == 1

    def alert(self, device: str, message: str) -> str:
        data = jpeg()
        mid = f"alert-{uuid.uuid4().hex}.jpg"
        status = self.node.put_media("cam-node", mid, data, sha256=hashlib.sha256(data).hexdigest(),
                                     content_type="image/jpeg")
        assert status in (200, 201), status
        item = {"id": uuid.uuid4().hex, "kind": "alert", "device": device, "ts": time.time(), "level": "critical",
                "message": message, "image": {"media": mid, "size": len(data)}}
        assert self.node.post("/api/v1/nodes/cam-node/uploads", {"items": [item]})["stored"] == 1
        return mid


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("dashboard")
    hub = HubProcess(tmp / "hub", heartbeat=1.0).start()
    try:
        yield Fleet(hub, tmp)
    finally:
        hub.stop()


def ui(fleet: Fleet, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=fleet.hub.url, timeout=10, **kw)


# -- without a browser: sign-in, refusals, escaping, metrics ----------------------------------------------
def test_pages_need_the_admin_token_and_sign_in_sets_a_strict_cookie(fleet: Fleet) -> None:
    with ui(fleet) as c:
        r = c.get("/ui/alerts")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/alerts"
        assert c.get("/ui/login").status_code == 200
        bad = c.post("/ui/login", data={"token": "nope", "next": "/ui/"})
        assert bad.status_code == 200 and "unknown, expired or revoked token" in bad.text
        node = c.post("/ui/login", data={"token": fleet.node_token, "next": "/ui/"})
        assert "that is not an admin token" in node.text and COOKIE not in node.cookies
        # another site as `next` is not followed: only dashboard paths
        ok = c.post("/ui/login", data={"token": ADMIN, "next": "https://evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert c.get("/ui/").status_code == 200
    with ui(fleet, headers={"Authorization": f"Bearer {fleet.node_token}"}) as c:
        r = c.get("/ui/")
        assert r.status_code == 403 and "needs the admin token" in r.json()["detail"]


def test_a_form_without_its_csrf_value_changes_nothing(fleet: Fleet) -> None:
    with ui(fleet, cookies={COOKIE: ADMIN}) as c:
        r = c.post("/ui/rollouts/1/rollback", data={"csrf": "forged"})
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
        r = c.post("/ui/rollouts/999999/rollback", data={"csrf": csrf_value(ADMIN)})
        assert r.status_code == 303 and "no%20rollout%20999999" in r.headers["location"]


def test_a_node_cannot_plant_a_page_through_its_media(fleet: Fleet) -> None:
    """Nodes choose their media's content type: the dashboard serves only raster images inline; anything
    else is a sandboxed download, so a node's token cannot run script on the dashboard's origin."""
    page = b"<script>fetch('/ui/models')</script>"
    status = fleet.node.put_media("cam-node", "evil.html", page, sha256=hashlib.sha256(page).hexdigest(),
                                  content_type="text/html")
    assert status in (200, 201)
    with ui(fleet, cookies={COOKIE: ADMIN}) as c:
        r = c.get("/ui/media/cam-node/evil.html")
        img = c.get(f"/ui/media/cam-node/{fleet.alert('cam-9', 'x')}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment") and "sandbox" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert img.headers["content-type"] == "image/jpeg" and img.content[:2] == b"\xff\xd8"


def test_field_text_is_escaped_not_run(fleet: Fleet) -> None:
    fleet.record("<script>alert(1)</script>", level="<b>x</b>")
    with ui(fleet, cookies={COOKIE: ADMIN}) as c:
        page = c.get("/ui/devices").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page


def test_the_pipelines_page_shows_versions_assignments_and_what_nodes_run(fleet: Fleet) -> None:
    spec = {"name": "overheat", "product": "pump", "params": {"limit": 80, "note": "ok"},
            "steps": [{"device_input": {}}, {"filter": "temperature > ${limit}"}]}
    fleet.admin.post("/api/v1/pipelines", spec)
    fleet.admin.put("/api/v1/assignments/group:street/hot", {"pipeline": "overheat", "version": 1,
                                                             "params": {"limit": 90, "note": "<i>x</i>"}})
    fleet.node.post("/api/v1/nodes/cam-node/heartbeat", {"instances": [
        {"instance": "hot", "pipeline": "overheat", "source": "hub", "version": 1, "processed": 42}], "errors": [
        {"instance": "cold", "pipeline": "overheat", "version": 2, "error": "device 'p9' is not bound"}]})
    with ui(fleet, cookies={COOKIE: ADMIN}) as c:
        r = c.get("/ui/pipelines")
    assert r.status_code == 200, r.text
    page = r.text
    section = page[page.index('data-pipeline="overheat"'):]
    assert 'limit=80' in section and 'data-instance="group:street/hot"' in section and "limit=90" in section
    assert "note=" in section and "<i>" not in section  # a param's text is escaped, never markup
    assert 'data-running="cam-node/hot"' in section and "v1" in section and "42" in section
    assert "v2 refused: device &#39;p9&#39; is not bound" in section


def test_hub_metrics_need_a_token_and_a_metrics_token_reads_nothing_else(fleet: Fleet) -> None:
    with ui(fleet) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": f"Bearer {fleet.node_token}"}).status_code == 403
    made = fleet.admin.post("/api/v1/tokens/metrics", {"note": "prometheus"})
    assert made["kind"] == "metrics"
    fleet.record("pump-9", temperature=71.5)
    with ui(fleet, headers={"Authorization": f"Bearer {made['token']}"}) as c:
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert c.get("/api/v1/nodes").status_code == 403
        assert c.get("/ui/").status_code == 403  # not a dashboard token either
        refused = c.get("/api/v1/models/any/versions/1")  # nor a model reader (nodes may read the warehouse)
        assert refused.status_code == 403 and "only read /metrics" in refused.json()["detail"]
    lines = r.text.splitlines()
    stored = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.startswith("edgeloop_hub_uploads_stored{")}
    assert stored['edgeloop_hub_uploads_stored{kind="record"}'] >= 1
    assert any(ln.startswith('edgeloop_hub_http_requests_total{method="POST",route="/api/v1/nodes/{node}/uploads",status="200"}')
               for ln in lines), r.text[:3000]
    assert '# TYPE edgeloop_hub_http_request_duration_seconds histogram' in lines
    assert any(ln.startswith('edgeloop_hub_http_request_duration_seconds_bucket{') and 'le="+Inf"' in ln for ln in lines)


# -- in the browser --------------------------------------------------------------------------------------
def test_the_dashboard_in_a_browser(fleet: Fleet, browser: Any) -> None:
    from playwright.sync_api import expect

    """Sign in; a node online with its model; an alert's JPEG shows; a live value updates without a reload;
    a click rolls a canary back (the hub's API agrees); no console errors or failed requests on any page."""
    keys = fleet.tmp / "keys"
    init_keys(keys)
    for version, seed in (("1", 1), ("2", 2)):
        simfleet.publish(fleet.admin, simfleet.make_bundle(fleet.tmp / "bundles", MODEL, version, seed), MODEL,
                         version, keys)
    fleet.admin.put(f"/api/v1/models/{MODEL}/deployments/group:street", {"version": "1"})
    sim = simfleet.SimNode(fleet.hub.url, fleet.admin, "sim-1", "street", fleet.tmp / "nodes", keys,
                           model=MODEL).start()
    try:
        wait_for(lambda: sim.serving() == "1", 30, "sim-1 to serve version 1")
        fleet.record("pump-1", temperature=70.0, running=True)
        fleet.alert("cam-3", "sewage dumping at the drain")
        rollout = start_rollout(fleet.admin, MODEL, "2", "street", canary=1, watch_s=3600)
        assert rollout["state"] == "canary"

        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}")
                if "/ui/events" not in r.url else None)  # the event stream is cut when a page is left
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

        page.goto(f"{fleet.hub.url}/ui/")
        assert page.url.endswith("/ui/login?next=/ui/")
        page.fill("input[name=token]", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{fleet.hub.url}/ui/")
        row = page.locator('tr[data-node="sim-1"]')
        assert row.locator(".state .badge").inner_text() == "online"
        assert f"{MODEL}:" in row.inner_text()

        page.goto(f"{fleet.hub.url}/ui/alerts")
        img = page.locator('figure.alert[data-device="cam-3"] img')
        img.wait_for()
        # Playwright's assertions, not wait_for_function: its string predicates are compiled in the page, which
        # the dashboard's Content-Security-Policy (script-src 'self', no 'unsafe-eval') rightly refuses
        expect(img).to_have_js_property("complete", True)
        expect(img).to_have_js_property("naturalWidth", 160)
        assert "sewage dumping at the drain" in page.locator("figure.alert").first.inner_text()

        page.goto(f"{fleet.hub.url}/ui/devices")
        expect(page.locator("#live")).to_have_text("live")
        cell = page.locator('tr[data-key="cam-node/pump-1"] [data-field="temperature"] b')
        assert cell.inner_text() == "70.0"
        fleet.record("pump-1", temperature=88.25, running=True)
        expect(cell).to_have_text("88.25", timeout=15000)
        fleet.record("pump-new", pressure=3.5)  # a device the page has not seen gets a row
        page.wait_for_selector('tr[data-key="cam-node/pump-new"]', timeout=15000)

        page.goto(f"{fleet.hub.url}/ui/pipelines")
        page.wait_for_selector("h1")
        assert page.locator("h1").inner_text() == "Pipelines"

        page.goto(f"{fleet.hub.url}/ui/models")
        r_row = page.locator(f'tr[data-rollout="{rollout["id"]}"]')
        assert r_row.locator(".state").inner_text() == "canary"
        page.once("dialog", lambda d: d.accept())
        r_row.locator("button.rollback").click()
        page.wait_for_selector("#done")
        assert "rollback -> rolled_back" in page.locator("#done").inner_text()
        assert page.locator(f'tr[data-rollout="{rollout["id"]}"] .state').inner_text() == "rolled_back"
        assert fleet.admin.get(f"/api/v1/rollouts/{rollout['id']}")["state"] == "rolled_back"
        wait_for(lambda: sim.serving() == "1", 30, "the canary back on version 1")

        # the model's drift chart: a node's scores over time (from its heartbeats) and the threshold
        fleet.admin.put(f"/api/v1/models/{MODEL}/drift/settings", {"threshold": 0.25, "sustain_s": 0})
        for score in (0.05, 0.1, 0.4, 0.45):
            drift_point(fleet.admin, fleet.node, "cam-node", MODEL, "1",
                        {"score": score, "worst": "brightness", "rows": 500, "psi": {"brightness": score}})
        page.goto(f"{fleet.hub.url}/ui/models")
        chart = page.locator(f'figure.drift[data-model="{MODEL}"]')
        line = chart.locator('polyline.series[data-node="cam-node"]')
        expect(line).to_have_count(1)
        xy = [tuple(map(float, p.split(","))) for p in line.get_attribute("points").split()]
        assert len(xy) == 4 and [a[0] for a in xy] == sorted(a[0] for a in xy), xy  # four points, in time order
        threshold_y = float(chart.locator("line.threshold").get_attribute("y1"))
        assert chart.locator("line.threshold").get_attribute("data-threshold") == "0.25"
        assert xy[0][1] > threshold_y > xy[3][1], (xy, threshold_y)  # below the line, then above it (SVG y down)
        assert "drift alarm" in chart.inner_text() and "cam-node (version 1): 0.45 drift" in chart.inner_text()
        assert problems == [], problems
    finally:
        sim.stop()
