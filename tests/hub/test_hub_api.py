"""The hub's HTTP API on a real database: SQLite (a file) and PostgreSQL (a fresh database per module).

Every test talks to ``hub.app.create_app`` through FastAPI's TestClient and checks
status codes, bodies and what the database holds afterwards. Spec errors must be the
node's own messages, computed here with the node's own loaders.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from edge_runtime.devices.catalog import load_catalog
from edge_runtime.operators.base import SpecError
from edge_runtime.pipeline import parse_pipeline
from edge_runtime.testing import wait_for
from hub.app import create_app
from hub.core import Hub, HubSettings
from hub.db import Base
from tests.kit.hub import ADMIN, DATABASES, PgDatabase, pg_available

AUTH = {"Authorization": f"Bearer {ADMIN}"}
MISSING = "missing token: send 'Authorization: Bearer <token>'"
INVALID = "invalid, expired or revoked token"
NEEDS_ADMIN = "this needs the admin token"

PUMP = {"name": "pump", "description": "a centrifugal pump",
        "properties": {"temperature": {"type": "number", "unit": "degC", "min": -40, "max": 250},
                       "vibration": {"type": "number", "unit": "mm/s", "min": 0, "max": 100},
                       "running": {"type": "boolean"}},
        "services": {"stop": {}}}
FAN = {"name": "fan", "properties": {"rpm": {"type": "integer", "min": 0}}}
OVERHEAT = {"name": "pump-overheat", "product": "pump",
            "steps": [{"device_input": {"properties": ["temperature", "vibration"]}},
                      {"filter": "temperature > 80"},
                      {"time_window": {"size": "10s"}},
                      {"aggregate": {"temperature": "mean", "vibration": "max"}},
                      {"alert": {"level": "WARN", "message": "pump {device} looks anomalous"}}]}
STOP = {"name": "pump-stop", "product": "pump",
        "steps": [{"device_input": {"properties": ["temperature", "running"]}},
                  {"filter": "running and temperature > 110"},
                  {"notification": {"level": "ERROR", "message": "{device} is far too hot"}}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- a hub per test on a database per module ------------------------------------------------------
@pytest.fixture(scope="module", params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The module's database: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('hub-sqlite')}/hub.db"
        return
    reason = pg_available()
    if reason:
        pytest.skip(reason)
    db = PgDatabase()
    try:
        yield db.url
    finally:
        db.drop()


class HubUnderTest:
    """The hub's app over a TestClient, with helpers that read the database directly."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.app = create_app(hub.settings, hub=hub)
        self.client = TestClient(self.app)
        self.media_dir = hub.media_dir

    # requests as the admin
    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers={**AUTH, **kw.pop("headers", {})}, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers={**AUTH, **kw.pop("headers", {})}, **kw)

    def put(self, url: str, **kw: Any) -> Any:
        return self.client.put(url, headers={**AUTH, **kw.pop("headers", {})}, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.client.delete(url, headers={**AUTH, **kw.pop("headers", {})}, **kw)

    def ok(self, response: Any, status: int = 200) -> Any:
        assert response.status_code == status, f"{response.status_code}: {response.text}"
        return response.json()

    def node(self, name: str, group: str = "default") -> str:
        """Create a node; returns its first token."""
        return self.ok(self.post("/api/v1/nodes", json={"name": name, "group": group}), 201)["token"]

    # the database, read directly
    def rows(self, table: str) -> list[dict[str, Any]]:
        t = Base.metadata.tables[table]
        with self.hub.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(t).order_by(*t.primary_key.columns))]

    def count(self, table: str) -> int:
        return len(self.rows(table))

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table (to show that a refused request changed nothing)."""
        return {t: self.rows(t) for t in Base.metadata.tables}

    def media_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.media_dir)) for p in self.media_dir.rglob("*"))


@pytest.fixture
def make_hub(db_url: str, tmp_path: Path) -> Iterator[Callable[..., HubUnderTest]]:
    """Build hubs on the module's database, emptied first: ``make_hub(offline_after=0.5)``."""
    made: list[HubUnderTest] = []

    def make(**settings: Any) -> HubUnderTest:
        hub = Hub(HubSettings(db_url=db_url, data_dir=str(tmp_path / f"hub{len(made)}"), **settings))
        with hub.engine.begin() as c:
            for table in reversed(Base.metadata.sorted_tables):
                if table.name != "revision":  # the migration's counter row stays: the ETag cache relies on it
                    c.execute(table.delete())
        hub.ensure_admin_token(ADMIN)
        made.append(HubUnderTest(hub))
        return made[-1]

    yield make
    for h in made:
        h.client.close()
        h.hub.close()  # stores the heartbeats it holds, stops its writer thread
        h.hub.engine.dispose()


@pytest.fixture
def api(make_hub: Callable[..., HubUnderTest]) -> HubUnderTest:
    return make_hub()


# -- every route, with a request that would succeed for the right caller ------------------------------
def route_requests(node: str, token_id: int) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(method, route path) -> (URL, request arguments) for every route but /health."""
    data = b"jpeg bytes"
    return {
        ("POST", "/api/v1/nodes"): ("/api/v1/nodes", {"json": {"name": "intruder"}}),
        ("GET", "/api/v1/nodes"): ("/api/v1/nodes", {}),
        ("GET", "/api/v1/nodes/{node}"): (f"/api/v1/nodes/{node}", {}),
        ("DELETE", "/api/v1/nodes/{node}"): (f"/api/v1/nodes/{node}", {}),
        ("POST", "/api/v1/nodes/{node}/tokens"): (f"/api/v1/nodes/{node}/tokens", {"json": {"note": "x"}}),
        ("GET", "/api/v1/tokens"): ("/api/v1/tokens", {}),
        ("DELETE", "/api/v1/tokens/{token_id}"): (f"/api/v1/tokens/{token_id}", {}),
        ("POST", "/api/v1/nodes/{node}/register"): (f"/api/v1/nodes/{node}/register", {"json": {"version": "1"}}),
        ("POST", "/api/v1/nodes/{node}/heartbeat"): (f"/api/v1/nodes/{node}/heartbeat", {"json": {}}),
        ("GET", "/api/v1/nodes/{node}/desired"): (f"/api/v1/nodes/{node}/desired", {}),
        ("POST", "/api/v1/nodes/{node}/uploads"): (f"/api/v1/nodes/{node}/uploads",
                                                   {"json": {"items": [{"id": "i1", "kind": "record"}]}}),
        ("PUT", "/api/v1/nodes/{node}/media/{media_id}"): (f"/api/v1/nodes/{node}/media/m1",
                                                           {"content": data, "headers": {"X-Sha256": sha(data)}}),
        ("PUT", "/api/v1/products/{name}"): ("/api/v1/products/fan", {"json": FAN}),
        ("GET", "/api/v1/products"): ("/api/v1/products", {}),
        ("POST", "/api/v1/pipelines"): ("/api/v1/pipelines", {"json": STOP}),
        ("GET", "/api/v1/pipelines"): ("/api/v1/pipelines", {}),
        ("GET", "/api/v1/pipelines/{name}"): ("/api/v1/pipelines/pump-overheat", {}),
        ("PUT", "/api/v1/assignments/{target}/{instance}"): (f"/api/v1/assignments/node:{node}/hot",
                                                             {"json": {"pipeline": "pump-overheat"}}),
        ("GET", "/api/v1/assignments"): ("/api/v1/assignments", {}),
        ("DELETE", "/api/v1/assignments/{target}/{instance}"): ("/api/v1/assignments/group:line-1/hot", {}),
        ("GET", "/api/v1/uploads"): ("/api/v1/uploads", {}),
        ("GET", "/api/v1/alerts"): ("/api/v1/alerts", {}),
        ("GET", "/api/v1/media/{node}/{media_id}"): (f"/api/v1/media/{node}/m0", {}),
        ("PUT", "/api/v1/models/{name}/versions/{version}/bundle"): (
            "/api/v1/models/m/versions/2/bundle",
            {"content": data, "headers": {"X-Sha256": sha(data), "X-Manifest": "e30=", "X-Signature": "AA=="}}),
        ("GET", "/api/v1/models"): ("/api/v1/models", {}),
        ("GET", "/api/v1/models/{name}/versions/{version}"): ("/api/v1/models/m/versions/1", {}),
        ("GET", "/api/v1/models/{name}/versions/{version}/bundle"): ("/api/v1/models/m/versions/1/bundle", {}),
        ("PUT", "/api/v1/models/{name}/deployments/{target}"): (f"/api/v1/models/m/deployments/node:{node}",
                                                               {"json": {"version": "1"}}),
        ("GET", "/api/v1/models/{name}/deployments"): ("/api/v1/models/m/deployments", {}),
        ("DELETE", "/api/v1/models/{name}/deployments/{target}"): ("/api/v1/models/m/deployments/group:line-1", {}),
        ("POST", "/api/v1/rollouts"): ("/api/v1/rollouts", {"json": {"model": "m", "version": "1", "group": "line-1"}}),
        ("GET", "/api/v1/rollouts"): ("/api/v1/rollouts", {}),
        ("GET", "/api/v1/rollouts/{rollout_id}"): ("/api/v1/rollouts/1", {}),
        ("POST", "/api/v1/rollouts/{rollout_id}/promote"): ("/api/v1/rollouts/1/promote", {}),
        ("POST", "/api/v1/rollouts/{rollout_id}/rollback"): ("/api/v1/rollouts/1/rollback", {}),
        ("GET", "/api/v1/models/{name}/drift"): ("/api/v1/models/m/drift", {}),
        ("PUT", "/api/v1/models/{name}/drift/settings"): ("/api/v1/models/m/drift/settings",
                                                          {"json": {"threshold": 0.3, "sustain_s": 60}}),
        ("GET", "/metrics"): ("/metrics", {}),
        ("POST", "/api/v1/tokens/metrics"): ("/api/v1/tokens/metrics", {"json": {"note": "prometheus"}}),
    }


AGENT = {("POST", "/api/v1/nodes/{node}/register"), ("POST", "/api/v1/nodes/{node}/heartbeat"),
         ("POST", "/api/v1/nodes/{node}/uploads"), ("PUT", "/api/v1/nodes/{node}/media/{media_id}")}
OWN_OR_ADMIN = {("GET", "/api/v1/nodes/{node}"), ("GET", "/api/v1/nodes/{node}/desired")}
ANY_TOKEN = {("GET", "/api/v1/models/{name}/versions/{version}"),  # nodes download model bundles
             ("GET", "/api/v1/models/{name}/versions/{version}/bundle")}
METRICS = {("GET", "/metrics")}  # the admin or a metrics token (tests/hub/test_dashboard.py)


def app_routes(app: Any) -> set[tuple[str, str]]:
    """The API's routes (the dashboard's pages, left out of the schema, are tested below)."""
    return {(m, r.path) for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema for m in r.methods}


def call(client: TestClient, method: str, url: str, auth: dict[str, str], kw: dict[str, Any]) -> Any:
    kw = dict(kw)
    headers = {**kw.pop("headers", {}), **auth}
    return client.request(method, url, headers=headers, **kw)


def seeded(api: HubUnderTest) -> dict[str, Any]:
    """Two nodes in a group, a product, a pipeline, an assignment, an alert and a media file."""
    a, b = api.node("node-a", "line-1"), api.node("node-b", "line-1")
    api.ok(api.put("/api/v1/products/pump", json=PUMP))
    api.ok(api.post("/api/v1/pipelines", json=OVERHEAT), 201)
    api.ok(api.put("/api/v1/assignments/group:line-1/hot", json={"pipeline": "pump-overheat"}))
    api.ok(api.client.post("/api/v1/nodes/node-b/uploads", headers=bearer(b),
                           json={"items": [{"id": "b1", "kind": "alert", "device": "p1"}]}))
    api.ok(api.client.put("/api/v1/nodes/node-b/media/m0", content=b"m0", headers={**bearer(b), "X-Sha256": sha(b"m0")}),
           201)
    tokens = {t["node"]: t["id"] for t in api.ok(api.get("/api/v1/tokens")) if t["node"]}
    return {"a": a, "b": b, "a_id": tokens["node-a"], "b_id": tokens["node-b"]}


# -- authentication -----------------------------------------------------------------------------
def test_health_needs_no_token(api: HubUnderTest) -> None:
    r = api.client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and isinstance(r.json()["time"], float)


def test_every_other_endpoint_refuses_a_missing_or_bad_token_and_changes_nothing(api: HubUnderTest) -> None:
    s = seeded(api)
    reqs = route_requests("node-b", s["b_id"])
    assert app_routes(api.app) == set(reqs) | {("GET", "/health")}, "a route without a case here"
    before = api.snapshot()
    for (method, _path), (url, kw) in reqs.items():
        for auth, detail in (({}, MISSING), ({"Authorization": "Basic YWRtaW46YWRtaW4="}, MISSING),
                             ({"Authorization": "Bearer "}, INVALID), (bearer("eln_not-a-token"), INVALID),
                             (bearer(ADMIN + "x"), INVALID)):
            r = call(api.client, method, url, auth, kw)
            assert r.status_code == 401, (method, url, auth, r.text)
            assert r.json() == {"detail": detail}, (method, url)
            assert r.headers["WWW-Authenticate"] == "Bearer"
    assert api.snapshot() == before
    assert api.client.get("/api/v1/media/node-b/m0", headers=AUTH).content == b"m0"


def test_every_dashboard_page_sends_a_visitor_without_a_session_to_sign_in(api: HubUnderTest) -> None:
    open_ = {"/ui", "/ui/login", "/ui/static/{name}"}
    pages = {(m, r.path) for r in api.app.routes if isinstance(r, APIRoute) and r.path.startswith("/ui")
             for m in r.methods if r.path not in open_}
    assert len(pages) == 10
    before = api.snapshot()
    for method, path in pages:
        url = path.replace("{rollout_id}", "1").replace("{node}", "node-b").replace("{media_id}", "m0")
        r = api.client.request(method, url, follow_redirects=False, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="), (method, url)
    assert api.snapshot() == before


# -- nodes --------------------------------------------------------------------------------------------
def test_node_create_shows_the_token_once_and_refuses_duplicates(api: HubUnderTest) -> None:
    body = api.ok(api.post("/api/v1/nodes", json={"name": "edge-1", "group": "line-1"}), 201)
    assert set(body) == {"name", "group", "token_id", "token"}
    assert (body["name"], body["group"]) == ("edge-1", "line-1")
    assert body["token"].startswith("eln_") and len(body["token"]) > 40
    r = api.post("/api/v1/nodes", json={"name": "edge-1", "group": "other"})
    assert r.status_code == 409 and "'edge-1' exists" in r.json()["detail"]
    assert [(n["name"], n["group"]) for n in api.rows("nodes")] == [("edge-1", "line-1")]
    assert [(t["kind"], t["node"]) for t in api.rows("tokens")] == [("admin", None), ("node", "edge-1")]
    # shown once: no later answer carries it
    for url in ("/api/v1/nodes", "/api/v1/nodes/edge-1", "/api/v1/tokens"):
        assert body["token"] not in api.get(url).text
    assert api.ok(api.client.get("/api/v1/nodes/edge-1", headers=bearer(body["token"])))["name"] == "edge-1"


@pytest.mark.parametrize("name", ["", "bad name", "-lead", "x" * 65, "a/b", "über"])
def test_node_names_are_checked(api: HubUnderTest, name: str) -> None:
    r = api.post("/api/v1/nodes", json={"name": name})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]
    assert api.rows("nodes") == []


def test_node_ls_is_online_after_a_heartbeat_and_offline_after_offline_after(make_hub: Any) -> None:
    api = make_hub(offline_after=3.0)  # short, yet with room for a loaded machine between heartbeat and list
    token = api.node("edge-1")
    api.node("edge-2")

    def listed() -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in api.ok(api.get("/api/v1/nodes"))}

    assert [n["online"] for n in listed().values()] == [False, False]
    reg = api.ok(api.client.post("/api/v1/nodes/edge-1/register", headers=bearer(token),
                                 json={"version": "1.2", "hostname": "box", "capabilities": ["modbus"]}))
    assert reg["uplink_topic"] == "edgeloop/edge-1/uplink" and reg["heartbeat_interval"] == 10.0
    hb = {"counters": {"records": 7}, "queues": {"in": 1}, "instances": [{"name": "hot", "state": "running"}]}
    api.ok(api.client.post("/api/v1/nodes/edge-1/heartbeat", headers=bearer(token), json=hb))
    now = listed()
    assert now["edge-1"]["online"] is True and now["edge-2"]["online"] is False
    assert now["edge-1"]["counters"] == {"records": 7} and now["edge-1"]["instances"] == hb["instances"]
    assert now["edge-1"]["info"] == {"version": "1.2", "hostname": "box", "capabilities": ["modbus"]}
    assert now["edge-1"]["heartbeats"] == 1
    wait_for(lambda: listed()["edge-1"]["online"] is False, timeout=10, what="edge-1 to go offline")
    assert api.ok(api.get("/api/v1/nodes/edge-1"))["online"] is False
    row = api.rows("nodes")[0]
    assert row["last_seen"] == now["edge-1"]["last_seen"] and row["heartbeats"] == 1
    api.ok(api.client.post("/api/v1/nodes/edge-1/heartbeat", headers=bearer(token), json={}))
    assert listed()["edge-1"]["online"] is True


def test_delete_node_revokes_its_tokens_and_drops_its_assignments(api: HubUnderTest) -> None:
    s = seeded(api)
    api.ok(api.put("/api/v1/assignments/node:node-a/mine", json={"pipeline": "pump-overheat"}))
    assert api.ok(api.delete("/api/v1/nodes/node-a")) == {"deleted": "node-a"}
    r = api.client.get("/api/v1/nodes/node-a/desired", headers=bearer(s["a"]))
    assert r.status_code == 401 and r.json()["detail"] == INVALID
    assert api.get("/api/v1/nodes/node-a").status_code == 404
    assert [a["target"] for a in api.rows("assignments")] == ["group:line-1"]
    assert [t["node"] for t in api.rows("tokens")] == [None, "node-b"]
    assert api.delete("/api/v1/nodes/node-a").status_code == 404


# -- least privilege ------------------------------------------------------------------------------------
def test_a_node_token_acts_only_for_its_own_node(api: HubUnderTest) -> None:
    s = seeded(api)
    a = bearer(s["a"])
    before = api.snapshot()
    for key in AGENT | OWN_OR_ADMIN:
        url, kw = route_requests("node-b", s["b_id"])[key]
        r = call(api.client, key[0], url, a, kw)
        assert r.status_code == 403, (key, r.text)
        expected = ("a token of node 'node-a' cannot act for node 'node-b'" if key in OWN_OR_ADMIN
                    else "only node 'node-b''s own token may do this")
        assert r.json() == {"detail": expected}
    assert api.snapshot() == before  # no heartbeat, upload, registration or media of node-b's was made by node-a
    # its own: fine
    assert api.ok(api.client.get("/api/v1/nodes/node-a/desired", headers=a))["node"] == "node-a"
    assert api.ok(api.client.post("/api/v1/nodes/node-a/heartbeat", headers=a, json={}))["changed"] is True


def test_a_node_token_cannot_call_any_admin_endpoint(api: HubUnderTest) -> None:
    s = seeded(api)
    reqs = route_requests("node-a", s["a_id"])  # even about its own node
    admin_only = set(reqs) - AGENT - OWN_OR_ADMIN - ANY_TOKEN - METRICS
    assert len(admin_only) == 30  # the drift series and its settings too
    before = api.snapshot()
    for key in sorted(admin_only):
        url, kw = reqs[key]
        r = call(api.client, key[0], url, bearer(s["a"]), kw)
        assert (r.status_code, r.json()) == (403, {"detail": NEEDS_ADMIN}), (key, r.text)
    assert api.snapshot() == before
    assert api.client.get("/api/v1/nodes/node-a", headers=bearer(s["a"])).status_code == 200  # still valid


def test_admin_reads_any_desired_state_but_cannot_post_as_a_node(api: HubUnderTest) -> None:
    seeded(api)
    for node in ("node-a", "node-b"):
        doc = api.ok(api.get(f"/api/v1/nodes/{node}/desired"))
        assert doc["node"] == node and [i["instance"] for i in doc["instances"]] == ["hot"]
    r = api.post("/api/v1/nodes/node-a/heartbeat", json={})
    assert r.status_code == 403 and r.json()["detail"] == "only node 'node-a''s own token may do this"
    assert api.rows("nodes")[0]["heartbeats"] == 0
    assert api.get("/api/v1/nodes/ghost/desired").status_code == 404


# -- tokens ---------------------------------------------------------------------------------------------
def test_a_revoked_token_is_refused_at_once(api: HubUnderTest) -> None:
    first = api.node("edge-1")
    spare = api.ok(api.post("/api/v1/nodes/edge-1/tokens", json={"note": "spare"}), 201)
    assert set(spare) == {"node", "token_id", "token"} and spare["node"] == "edge-1"
    url = "/api/v1/nodes/edge-1/desired"
    assert api.client.get(url, headers=bearer(spare["token"])).status_code == 200
    assert api.ok(api.delete(f"/api/v1/tokens/{spare['token_id']}")) == {"revoked": spare["token_id"]}
    r = api.client.get(url, headers=bearer(spare["token"]))
    assert (r.status_code, r.json()) == (401, {"detail": INVALID})
    assert api.client.get(url, headers=bearer(first)).status_code == 200
    listed = {t["id"]: t for t in api.ok(api.get("/api/v1/tokens"))}
    assert listed[spare["token_id"]]["revoked_at"] is not None and listed[spare["token_id"]]["note"] == "spare"
    assert [t["revoked_at"] is None for i, t in listed.items() if i != spare["token_id"]] == [True, True]
    revoked_at = listed[spare["token_id"]]["revoked_at"]
    api.ok(api.delete(f"/api/v1/tokens/{spare['token_id']}"))  # again: still revoked, at the first time
    assert {t["id"]: t["revoked_at"] for t in api.rows("tokens")}[spare["token_id"]] == revoked_at
    assert api.delete("/api/v1/tokens/999999").status_code == 404
    admin_id = next(t["id"] for t in api.rows("tokens") if t["kind"] == "admin")
    r = api.delete(f"/api/v1/tokens/{admin_id}")
    assert r.status_code == 409 and "refusing to revoke" in r.json()["detail"]
    assert api.get("/api/v1/tokens").status_code == 200


def test_an_expired_token_is_refused(api: HubUnderTest) -> None:
    api.node("edge-1")
    t = api.ok(api.post("/api/v1/nodes/edge-1/tokens", json={"note": "short", "ttl": 1.5}), 201)
    row = next(r for r in api.rows("tokens") if r["id"] == t["token_id"])
    assert row["expires_at"] - row["created_at"] == pytest.approx(1.5, abs=0.05)
    url = "/api/v1/nodes/edge-1/desired"
    assert api.client.get(url, headers=bearer(t["token"])).status_code == 200
    wait_for(lambda: api.client.get(url, headers=bearer(t["token"])).status_code == 401, timeout=10,
             what="the token to expire")
    assert api.client.get(url, headers=bearer(t["token"])).json() == {"detail": INVALID}
    for ttl in (0, -1, "soon"):
        assert api.post("/api/v1/nodes/edge-1/tokens", json={"ttl": ttl}).status_code == 422
    assert api.count("tokens") == 3


def test_tokens_are_stored_hashed(api: HubUnderTest) -> None:
    tokens = [ADMIN, api.node("edge-1"), api.ok(api.post("/api/v1/nodes/edge-1/tokens", json={}), 201)["token"]]
    rows = api.rows("tokens")
    assert sorted(r["hash"] for r in rows) == sorted(sha(t.encode()) for t in tokens)
    dump = json.dumps(api.snapshot(), default=str)
    for token in tokens:
        assert token not in dump
    assert all(t not in api.get("/api/v1/tokens").text for t in tokens)
    assert "hash" not in api.ok(api.get("/api/v1/tokens"))[0]


# -- products ---------------------------------------------------------------------------------------------
def test_product_versions_change_only_when_the_spec_does(api: HubUnderTest) -> None:
    assert api.ok(api.put("/api/v1/products/pump", json=PUMP)) == {"name": "pump", "version": 1}
    assert api.ok(api.put("/api/v1/products/pump", json=json.loads(json.dumps(PUMP)))) == {"name": "pump", "version": 1}
    changed = {**PUMP, "description": "a bigger pump"}
    assert api.ok(api.put("/api/v1/products/pump", json=changed)) == {"name": "pump", "version": 2}
    assert api.ok(api.put("/api/v1/products/fan", json=FAN)) == {"name": "fan", "version": 1}
    assert api.ok(api.get("/api/v1/products")) == [{"name": "fan", "version": 1, "spec": FAN},
                                                   {"name": "pump", "version": 2, "spec": changed}]
    assert [(r["name"], r["version"]) for r in api.rows("products")] == [("fan", 1), ("pump", 2)]


def _node_product_error(spec: Any) -> str:
    with pytest.raises(SpecError) as err:
        load_catalog([], products_data=[("<product>", spec)])
    return str(err.value)


@pytest.mark.parametrize("spec", [
    {"name": "pump"},
    {"name": "pump", "properties": {"t": {"type": "numbr"}}},
    {"name": "pump", "properties": {"t": {"type": "number"}}, "colour": "red"},
    {"name": "pump", "properties": {"t": {"type": "number"}}, "services": [1]},
    {"name": "bad name", "properties": {"t": {"type": "number"}}},
    {"products": "pump"},
], ids=["no-properties", "bad-type", "unknown-key", "bad-services", "bad-name", "products-not-a-list"])
def test_an_invalid_product_gets_the_nodes_message(api: HubUnderTest, spec: dict[str, Any]) -> None:
    api.ok(api.put("/api/v1/products/pump", json=PUMP))
    r = api.put("/api/v1/products/pump", json=spec)
    assert r.status_code == 422
    assert r.json() == {"detail": _node_product_error(spec)}
    assert api.ok(api.get("/api/v1/products")) == [{"name": "pump", "version": 1, "spec": PUMP}]


def test_a_product_whose_name_is_not_the_paths_is_refused(api: HubUnderTest) -> None:
    r = api.put("/api/v1/products/fan", json=PUMP)
    assert (r.status_code, r.json()) == (422, {"detail": "the path says product 'fan', the spec's name is 'pump'"})
    assert api.rows("products") == []


@pytest.mark.parametrize(("spec", "detail"), [
    ({"products": []}, "<product>: expected one product, got 0"),
    ({"products": [PUMP, FAN]}, "<product>: expected one product, got 2"),
    ({"name": "p" * 65, "properties": {"t": {"type": "number"}}},
     "<product>, field 'name': the hub keeps product names of at most 64 characters, got 65"),
    ({"name": "pump", "properties": {"t": {"type": "number", "max": 10**30}}},
     "<product>, field 'properties.t.max': integer out of the 64-bit range"),
], ids=["empty-document", "two-products", "name-too-long-to-store", "number-beyond-64-bits"])
def test_products_the_hub_cannot_keep_are_refused_not_a_500(api: HubUnderTest, spec: Any, detail: str) -> None:
    name = spec.get("name", "pump")
    r = api.put(f"/api/v1/products/{name}", json=spec)
    assert (r.status_code, r.json()) == (422, {"detail": detail})
    assert api.rows("products") == []


# -- pipelines ----------------------------------------------------------------------------------------------
def test_pipeline_versions_are_created_only_for_changed_specs(api: HubUnderTest) -> None:
    r = api.post("/api/v1/pipelines", json=OVERHEAT)
    assert (r.status_code, r.json()) == (201, {"name": "pump-overheat", "version": 1, "created": True})
    r = api.post("/api/v1/pipelines", json=dict(reversed(list(OVERHEAT.items()))))  # same spec, other key order
    assert (r.status_code, r.json()) == (200, {"name": "pump-overheat", "version": 1, "created": False})
    v2 = {**OVERHEAT, "steps": [*OVERHEAT["steps"][:1], {"filter": "temperature > 90"}, *OVERHEAT["steps"][2:]]}
    r = api.post("/api/v1/pipelines", json=v2)
    assert (r.status_code, r.json()) == (201, {"name": "pump-overheat", "version": 2, "created": True})
    api.ok(api.post("/api/v1/pipelines", json=STOP), 201)
    assert api.ok(api.get("/api/v1/pipelines")) == [{"name": "pump-overheat", "latest": 2, "versions": 2},
                                                    {"name": "pump-stop", "latest": 1, "versions": 1}]
    latest = api.ok(api.get("/api/v1/pipelines/pump-overheat"))
    assert (latest["version"], latest["spec"]) == (2, v2)
    assert api.ok(api.get("/api/v1/pipelines/pump-overheat", params={"version": 1}))["spec"] == OVERHEAT
    r = api.get("/api/v1/pipelines/pump-overheat", params={"version": 3})
    assert (r.status_code, r.json()) == (404, {"detail": "no pipeline 'pump-overheat' version 3"})
    assert api.get("/api/v1/pipelines/nope").json() == {"detail": "no pipeline 'nope'"}
    assert [(p["name"], p["version"]) for p in api.rows("pipelines")] == [
        ("pump-overheat", 1), ("pump-overheat", 2), ("pump-stop", 1)]


BAD_PIPELINES = [
    {"name": "p", "steps": []},
    {"name": "p", "steps": [{"device_input": {}}, {"filtr": "x > 1"}]},
    {"name": "p", "steps": [{"device_input": {}}, {"filter": "x >"}]},
    {"name": "p", "steps": [{"device_input": {}}, {"filter": "__import__('os')"}]},
    {"name": "p", "steps": [{"filter": "x > 1"}]},
    {"name": "p", "steps": [{"device_input": {}}, {"aggregate": {"t": "mean"}}]},
    {"name": "p", "steps": [{"device_input": {}}, {"time_window": {"size": "ten"}}]},
    {"name": "p", "steps": [{"device_input": {"colour": "red"}}]},
    {"name": "p", "colour": "red", "steps": [{"device_input": {}}]},
    {"steps": [{"device_input": {}}]},
    {"name": "p", "steps": [{"device_input": {}}], "uplink": 5},
    {"name": "p", "product": 7, "steps": [{"device_input": {}}]},
]


@pytest.mark.parametrize("spec", BAD_PIPELINES, ids=[f"bad{i}" for i in range(len(BAD_PIPELINES))])
def test_an_invalid_pipeline_gets_the_nodes_message_and_nothing_is_stored(api: HubUnderTest, spec: Any) -> None:
    api.ok(api.post("/api/v1/pipelines", json=OVERHEAT), 201)
    before = api.ok(api.get("/api/v1/pipelines"))
    with pytest.raises(SpecError) as err:
        parse_pipeline(spec, file="<pipeline>")
    r = api.post("/api/v1/pipelines", json=spec)
    assert (r.status_code, r.json()) == (422, {"detail": str(err.value)})
    assert api.ok(api.get("/api/v1/pipelines")) == before
    assert api.count("pipelines") == 1


@pytest.mark.parametrize(("spec", "detail"), [
    ({**STOP, "name": "q" * 101}, "<pipeline>, field 'name': the hub keeps pipeline names of at most 100 characters, got 101"),
    ({**STOP, "steps": [*STOP["steps"], {"sample": {"every": 10**30}}]},
     "<pipeline>, field 'steps[3].sample.every': integer out of the 64-bit range"),
    ({**STOP, "description": 2**64}, "<pipeline>, field 'description': integer out of the 64-bit range"),
], ids=["name-too-long-to-store", "step-number-beyond-64-bits", "description-beyond-64-bits"])
def test_pipelines_the_hub_cannot_keep_are_refused_not_a_500(api: HubUnderTest, spec: Any, detail: str) -> None:
    parse_pipeline(spec, file="<pipeline>")  # valid for a node
    r = api.post("/api/v1/pipelines", json=spec)
    assert (r.status_code, r.json()) == (422, {"detail": detail})
    assert api.rows("pipelines") == []


# -- assignments and desired state ------------------------------------------------------------------------------
def desired(api: HubUnderTest, node: str, **headers: str) -> Any:
    return api.get(f"/api/v1/nodes/{node}/desired", headers=headers)


def test_assignment_params_are_checked_and_a_new_version_must_take_its_followers_params(api: HubUnderTest) -> None:
    api.node("n1", "line-1")
    api.ok(api.put("/api/v1/products/pump", json=PUMP))
    tmpl = {"name": "tmpl", "product": "pump", "params": {"limit": 80},
            "steps": [{"device_input": {}}, {"filter": "temperature > ${limit}"}]}
    api.ok(api.post("/api/v1/pipelines", json=tmpl), 201)
    for params, detail in (({"limit": "hot"}, "parameter 'limit': expected a number like its default 80, got 'hot'"),
                           ({"limt": 1}, "unknown parameter 'limt'"),
                           ({"limit": 2**70}, "<assignment>, field 'params.limit': integer out of the 64-bit range")):
        r = api.put("/api/v1/assignments/group:line-1/t", json={"pipeline": "tmpl", "params": params})
        assert r.status_code == 422 and detail in r.json()["detail"], r.json()
    r = api.put("/api/v1/assignments/group:line-1/t", content=b'{"pipeline": "tmpl", "params": {"limit": NaN}}',
                headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "NaN and infinity are not JSON numbers" in r.json()["detail"], r.json()
    api.ok(api.put("/api/v1/assignments/group:line-1/t", json={"pipeline": "tmpl", "params": {"limit": 90}}))
    (inst,) = desired(api, "n1").json()["instances"]
    assert (inst["version"], inst["params"]) == (1, {"limit": 90})
    # the assignment follows the newest version: a version that no longer takes its params is refused
    renamed = {**tmpl, "params": {"threshold": 80}, "steps": [{"device_input": {}}, {"filter": "temperature > ${threshold}"}]}
    r = api.post("/api/v1/pipelines", json=renamed)
    assert r.status_code == 422 and "unknown parameter 'limit'" in r.json()["detail"] and \
        "for assignment group:line-1/t, which follows the newest version" in r.json()["detail"], r.json()
    api.ok(api.put("/api/v1/assignments/group:line-1/t", json={"pipeline": "tmpl", "version": 1, "params": {"limit": 90}}))
    api.ok(api.post("/api/v1/pipelines", json=renamed), 201)  # pinned: it waits for a rollout


def test_assignments_resolve_into_desired_state_with_etags(api: HubUnderTest) -> None:
    t1 = api.node("n1", "line-1")
    api.node("n2", "line-1")
    api.node("n3", "line-2")
    api.ok(api.put("/api/v1/products/pump", json=PUMP))
    api.ok(api.put("/api/v1/products/fan", json=FAN))
    api.ok(api.post("/api/v1/pipelines", json=OVERHEAT), 201)
    api.ok(api.post("/api/v1/pipelines", json=STOP), 201)
    empty = desired(api, "n1")
    assert empty.json()["instances"] == [] and empty.json()["products"] == []
    assert empty.headers["ETag"] == f'"{empty.json()["etag"]}"'

    # to a group: every node of the group
    body = api.ok(api.put("/api/v1/assignments/group:line-1/watch", json={"pipeline": "pump-overheat"}))
    assert body == {"target": "group:line-1", "instance": "watch", "pipeline": "pump-overheat", "version": 1,
                    "devices": None, "params": None}
    for node in ("n1", "n2"):
        doc = desired(api, node).json()
        assert doc["instances"] == [{"instance": "watch", "pipeline": "pump-overheat", "version": 1, "spec": OVERHEAT,
                                     "devices": None}]
        assert doc["products"] == [{"name": "pump", "version": 1, "spec": PUMP}]
    assert desired(api, "n3").json()["instances"] == []
    group_etag, n2_etag = desired(api, "n1").json()["etag"], desired(api, "n2").json()["etag"]
    assert group_etag != empty.json()["etag"]

    # node-specific overrides the group's instance of the same name
    api.ok(api.put("/api/v1/assignments/node:n1/watch", json={"pipeline": "pump-stop", "devices": ["p1", "p2"]}))
    r = desired(api, "n1")
    doc = r.json()
    assert doc["instances"] == [{"instance": "watch", "pipeline": "pump-stop", "version": 1, "spec": STOP,
                                 "devices": ["p1", "p2"]}]
    assert doc["etag"] != group_etag and r.headers["ETag"] == f'"{doc["etag"]}"'
    assert desired(api, "n2").json()["etag"] == n2_etag  # the others still run the group's

    # If-None-Match: 304 while current, 200 with the new one once changed
    r = desired(api, "n1", **{"If-None-Match": f'"{doc["etag"]}"'})
    assert (r.status_code, r.content, r.headers["ETag"]) == (304, b"", f'"{doc["etag"]}"')
    assert desired(api, "n1", **{"If-None-Match": doc["etag"]}).status_code == 304
    assert desired(api, "n1", **{"If-None-Match": f'"{group_etag}"'}).status_code == 200

    # the heartbeat says whether the node's copy is current
    hb = api.client.post("/api/v1/nodes/n1/heartbeat", headers=bearer(t1), json={"desired_etag": doc["etag"]})
    assert api.ok(hb) == {"desired_etag": doc["etag"], "changed": False}
    hb = api.client.post("/api/v1/nodes/n1/heartbeat", headers=bearer(t1), json={"desired_etag": group_etag})
    assert api.ok(hb) == {"desired_etag": doc["etag"], "changed": True}

    # changing the assignment changes the etag (and the 304 stops)
    api.ok(api.put("/api/v1/assignments/node:n1/watch", json={"pipeline": "pump-stop", "devices": ["p1"]}))
    r = desired(api, "n1", **{"If-None-Match": f'"{doc["etag"]}"'})
    assert r.status_code == 200 and r.json()["etag"] != doc["etag"] and r.json()["instances"][0]["devices"] == ["p1"]
    hb = api.client.post("/api/v1/nodes/n1/heartbeat", headers=bearer(t1), json={"desired_etag": doc["etag"]})
    assert api.ok(hb) == {"desired_etag": r.json()["etag"], "changed": True}

    assert api.ok(api.get("/api/v1/assignments")) == [
        {"target": "group:line-1", "instance": "watch", "pipeline": "pump-overheat", "version": None, "devices": None,
         "params": None},
        {"target": "node:n1", "instance": "watch", "pipeline": "pump-stop", "version": None, "devices": ["p1"],
         "params": None}]

    # delete: the node falls back to its group's
    assert api.ok(api.delete("/api/v1/assignments/node:n1/watch")) == {"deleted": "node:n1/watch"}
    assert desired(api, "n1").json()["etag"] == group_etag
    r = api.delete("/api/v1/assignments/node:n1/watch")
    assert (r.status_code, r.json()) == (404, {"detail": "no assignment 'watch' for 'node:n1'"})
    assert [(a["target"], a["instance"]) for a in api.rows("assignments")] == [("group:line-1", "watch")]


def test_an_assignment_follows_the_newest_version_unless_pinned(api: HubUnderTest) -> None:
    api.node("n1")
    api.ok(api.post("/api/v1/pipelines", json=OVERHEAT), 201)
    api.ok(api.put("/api/v1/assignments/node:n1/follow", json={"pipeline": "pump-overheat"}))
    api.ok(api.put("/api/v1/assignments/node:n1/pinned", json={"pipeline": "pump-overheat", "version": 1}))
    v2 = {**OVERHEAT, "steps": [*OVERHEAT["steps"][:1], {"filter": "temperature > 95"}, *OVERHEAT["steps"][2:]]}
    api.ok(api.post("/api/v1/pipelines", json=v2), 201)
    got = {i["instance"]: (i["version"], i["spec"]) for i in desired(api, "n1").json()["instances"]}
    assert got == {"follow": (2, v2), "pinned": (1, OVERHEAT)}
    r = api.put("/api/v1/assignments/node:n1/x", json={"pipeline": "pump-overheat", "version": 9})
    assert (r.status_code, r.json()) == (404, {"detail": "no pipeline 'pump-overheat' version 9"})


@pytest.mark.parametrize(("url", "body", "status", "detail"), [
    ("/api/v1/assignments/node:ghost/i", {"pipeline": "pump-overheat"}, 404, "unknown node 'ghost'"),
    ("/api/v1/assignments/host:n1/i", {"pipeline": "pump-overheat"}, 422,
     "target 'host:n1': expected node:<name> or group:<name>"),
    ("/api/v1/assignments/n1/i", {"pipeline": "pump-overheat"}, 422, "target 'n1': expected node:<name> or group:<name>"),
    ("/api/v1/assignments/group:bad name/i", {"pipeline": "pump-overheat"}, 422,
     "target 'group:bad name': expected node:<name> or group:<name>"),
    ("/api/v1/assignments/node:n1/-i", {"pipeline": "pump-overheat"}, 422,
     "instance '-i': letters, digits and _ . - only (at most 64)"),
    ("/api/v1/assignments/node:n1/i", {"pipeline": "nope"}, 404, "no pipeline 'nope'"),
])
def test_bad_assignments_are_refused(api: HubUnderTest, url: str, body: Any, status: int, detail: str) -> None:
    api.node("n1")
    api.ok(api.post("/api/v1/pipelines", json=OVERHEAT), 201)
    r = api.put(url, json=body)
    assert (r.status_code, r.json()) == (status, {"detail": detail})
    assert api.rows("assignments") == []


# -- uploads ------------------------------------------------------------------------------------------------------
def upload(api: HubUnderTest, node: str, token: str, items: list[Any]) -> Any:
    return api.client.post(f"/api/v1/nodes/{node}/uploads", headers=bearer(token), json={"items": items})


def test_uploads_are_stored_once_per_id(api: HubUnderTest) -> None:
    t = api.node("n1")
    items = [{"id": "r1", "kind": "record", "device": "p1", "seq": 1, "ts": 10.5, "values": {"t": 81.5}},
             {"id": "a1", "kind": "alert", "device": "p1", "instance": "hot", "level": "WARN", "message": "hot"},
             {"id": "n1", "kind": "notification", "message": "stopped"}]
    assert api.ok(upload(api, "n1", t, items)) == {"stored": 3, "duplicates": 0}
    assert api.ok(upload(api, "n1", t, items)) == {"stored": 0, "duplicates": 3}
    again = [items[0], {"id": "r2", "kind": "record", "device": "p1", "seq": 2}, items[0]]
    assert api.ok(upload(api, "n1", t, again)) == {"stored": 1, "duplicates": 2}
    rows = api.rows("uploads")
    assert [(r["id"], r["kind"], r["device"], r["seq"], r["instance"], r["ts"]) for r in rows] == [
        ("n1/r1", "record", "p1", 1, None, 10.5), ("n1/a1", "alert", "p1", None, "hot", None),
        ("n1/n1", "notification", None, None, None, None), ("n1/r2", "record", "p1", 2, None, None)]
    got = api.ok(api.get("/api/v1/uploads"))["items"]
    assert [{k: v for k, v in g.items() if k not in ("node", "cursor", "received_at")} for g in got] == [
        *items, again[1]]
    assert all(isinstance(g["received_at"], float) for g in got)  # when the hub stored it
    assert {g["node"] for g in got} == {"n1"}


BAD_ITEMS = [
    ("not an object", "items[1]: expected an object, got str"),
    ({"kind": "record"}, "items[1].id: expected 1-64 characters"),
    ({"id": "a b", "kind": "record"}, "items[1].id: "),
    ({"id": "x" * 65, "kind": "record"}, "items[1].id: "),
    ({"id": "b", "kind": "metric"}, "items[1].kind: expected one of record, alert, notification"),
    ({"id": "b", "kind": "record", "seq": -1}, "items[1].seq: expected a non-negative integer"),
    ({"id": "b", "kind": "record", "seq": True}, "items[1].seq: "),
    ({"id": "b", "kind": "record", "ts": "noon"}, "items[1].ts: expected epoch seconds"),
    ({"id": "b", "kind": "record", "device": 5}, "items[1].device: "),
    ({"id": "b", "kind": "record", "device": "p" * 101}, "items[1].device: "),
    ({"id": "b", "kind": "record", "instance": ["x"]}, "items[1].instance: "),
    # what the database or the serialisers cannot take: refused by name, not a 500 (or a silent half-store)
    ({"id": "b", "kind": "record", "device": "p\x001"}, "items[1].device: "),
    ({"id": "b", "kind": "record", "instance": "i\x00"}, "items[1].instance: "),
    ({"id": "b", "kind": "record", "values": {"big": 10**30}}, "items[1].values.big: integer out of the 64-bit range"),
    ({"id": "b", "kind": "record", "values": [1, -(2**64)]}, "items[1].values[1]: integer out of the 64-bit range"),
    ({"id": "b", "kind": "record", "values": json.loads("[" * 40 + "]" * 40)}, "items[1].values"),
]


@pytest.mark.parametrize(("bad", "detail"), BAD_ITEMS, ids=[f"bad{i}" for i in range(len(BAD_ITEMS))])
def test_one_bad_item_refuses_the_whole_batch_naming_it(api: HubUnderTest, bad: Any, detail: str) -> None:
    t = api.node("n1")
    batch = [{"id": "g0", "kind": "record"}, bad, {"id": "g2", "kind": "alert"}]
    r = upload(api, "n1", t, batch)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(detail), r.json()
    assert api.rows("uploads") == []
    assert api.ok(api.get("/api/v1/uploads")) == {"items": [], "next": 0}


def test_deep_nesting_is_refused_by_name(api: HubUnderTest) -> None:
    t = api.node("n1")
    r = upload(api, "n1", t, [{"id": "d", "kind": "record", "values": json.loads('{"a":' * 300 + "1" + "}" * 300)}])
    assert r.status_code == 422 and r.json()["detail"].startswith("items[0].values.a.a.")
    assert r.json()["detail"].endswith("nested more than 32 levels deep")
    assert api.rows("uploads") == []


def test_a_timestamp_beyond_int64_is_stored_as_a_number(api: HubUnderTest) -> None:
    t = api.node("n1")
    assert api.ok(upload(api, "n1", t, [{"id": "t", "kind": "record", "ts": 2**63}])) == {"stored": 1, "duplicates": 0}
    assert api.rows("uploads")[0]["ts"] == float(2**63)
    assert api.ok(api.get("/api/v1/uploads"))["items"][0]["ts"] == 2**63


def test_upload_ids_are_per_node(api: HubUnderTest) -> None:
    t1, t2 = api.node("n1"), api.node("n2")
    assert api.ok(upload(api, "n1", t1, [{"id": "same", "kind": "record", "values": {"v": 1}}]))["stored"] == 1
    assert api.ok(upload(api, "n2", t2, [{"id": "same", "kind": "record", "values": {"v": 2}}]))["stored"] == 1
    got = api.ok(api.get("/api/v1/uploads"))["items"]
    assert [(g["node"], g["id"], g["values"]) for g in got] == [("n1", "same", {"v": 1}), ("n2", "same", {"v": 2})]
    assert [r["id"] for r in api.rows("uploads")] == ["n1/same", "n2/same"]


def pages(api: HubUnderTest, url: str, **query: Any) -> list[list[dict[str, Any]]]:
    out, after = [], 0
    while True:
        page = api.ok(api.get(url, params={**query, "after": after}))
        if not page["items"]:
            assert page["next"] == after
            return out
        assert [i["cursor"] for i in page["items"]] == sorted(i["cursor"] for i in page["items"])
        assert page["items"][0]["cursor"] > after and page["next"] == page["items"][-1]["cursor"]
        out.append(page["items"])
        after = page["next"]


def test_uploads_filter_by_node_device_and_kind_with_cursor_paging(api: HubUnderTest) -> None:
    t1, t2 = api.node("n1"), api.node("n2")
    kinds = ["record", "alert", "notification"]
    mine = [{"id": f"i{i}", "kind": kinds[i % 3], "device": f"d{i % 2}", "seq": i} for i in range(9)]
    theirs = [{"id": f"j{i}", "kind": kinds[i % 3], "device": "d0", "seq": i} for i in range(4)]
    api.ok(upload(api, "n1", t1, mine[:5]))
    api.ok(upload(api, "n2", t2, theirs))
    api.ok(upload(api, "n1", t1, mine[5:]))

    def ids(ps: list[list[dict[str, Any]]]) -> list[str]:
        return [f"{i['node']}/{i['id']}" for p in ps for i in p]

    everything = pages(api, "/api/v1/uploads", limit=4)
    assert [len(p) for p in everything] == [4, 4, 4, 1]
    assert ids(everything) == [f"n1/i{i}" for i in range(5)] + [f"n2/j{i}" for i in range(4)] + [
        f"n1/i{i}" for i in range(5, 9)]
    by_node = pages(api, "/api/v1/uploads", node="n1", limit=2)
    assert [len(p) for p in by_node] == [2, 2, 2, 2, 1] and ids(by_node) == [f"n1/i{i}" for i in range(9)]
    assert ids(pages(api, "/api/v1/uploads", device="d1", limit=3)) == [f"n1/i{i}" for i in (1, 3, 5, 7)]
    assert ids(pages(api, "/api/v1/uploads", kind="alert", limit=2)) == ["n1/i1", "n1/i4", "n2/j1", "n1/i7"]
    assert ids(pages(api, "/api/v1/uploads", node="n2", device="d0", kind="record")) == ["n2/j0", "n2/j3"]
    assert pages(api, "/api/v1/uploads", node="n3") == []
    alerts = pages(api, "/api/v1/alerts", limit=1)
    assert ids(alerts) == ["n1/i1", "n1/i4", "n2/j1", "n1/i7"] and all(a["kind"] == "alert" for p in alerts for a in p)
    for bad in ({"kind": "metric"}, {"limit": 0}, {"limit": 10001}, {"after": -1}):
        assert api.get("/api/v1/uploads", params=bad).status_code == 422
    assert api.count("uploads") == 13


# -- media -----------------------------------------------------------------------------------------------------------
def put_media(api: HubUnderTest, token: str, media_id: str, data: Any, digest: str, **headers: str) -> Any:
    return api.client.put(f"/api/v1/nodes/n1/media/{media_id}", content=data,
                          headers={**bearer(token), "X-Sha256": digest, **headers})


def test_media_is_stored_once_per_id_and_checked_against_its_sha256(make_hub: Any) -> None:
    api = make_hub(max_media=1000, max_body=2000)
    t = api.node("n1")
    jpeg = b"\xff\xd8\xff" + bytes(range(256)) * 2
    r = put_media(api, t, "cam1.jpg", jpeg, sha(jpeg), **{"Content-Type": "image/jpeg", "X-Upload-Id": "a1"})
    assert (r.status_code, r.json()) == (201, {"id": "cam1.jpg", "stored": True})
    r = put_media(api, t, "cam1.jpg", jpeg, sha(jpeg))
    assert (r.status_code, r.json()) == (200, {"id": "cam1.jpg", "stored": False})
    other = jpeg[::-1]
    r = put_media(api, t, "cam1.jpg", other, sha(other))
    assert (r.status_code, r.json()) == (409, {"detail": "media 'cam1.jpg' exists with other content"})
    r = put_media(api, t, "cam2.jpg", jpeg, sha(other))
    assert r.status_code == 422
    assert r.json() == {"detail": f"body SHA-256 is {sha(jpeg)}, X-Sha256 says {sha(other)}: upload damaged"}
    assert put_media(api, t, "cam3.jpg", jpeg, "not-a-sha").status_code == 422
    got = api.get("/api/v1/media/n1/cam1.jpg")
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, jpeg, "image/jpeg")
    assert api.get("/api/v1/media/n1/cam2.jpg").status_code == 404
    assert api.client.get("/api/v1/media/n1/cam1.jpg", headers=bearer(t)).status_code == 403
    assert [(m["id"], m["node"], m["upload_id"], m["size"], m["sha256"], m["content_type"])
            for m in api.rows("media")] == [("n1/cam1.jpg", "n1", "n1/a1", len(jpeg), sha(jpeg), "image/jpeg")]
    assert api.media_files() == ["n1", "n1/cam1.jpg"]
    assert (api.media_dir / "n1" / "cam1.jpg").read_bytes() == jpeg


def test_oversized_bodies_get_413_and_nothing_is_stored(make_hub: Any) -> None:
    api = make_hub(max_media=1000, max_body=2000)
    t = api.node("n1")
    big = b"x" * 1001
    for content in (big, iter([big[:600], big[600:]])):  # declared length, and chunked
        r = put_media(api, t, "big", content, sha(big))
        assert (r.status_code, r.json()) == (413, {"detail": "request body is larger than 1000 bytes"})
    ok = b"y" * 1000
    assert put_media(api, t, "fits", ok, sha(ok)).status_code == 201
    items = [{"id": f"i{i}", "kind": "record", "values": {"pad": "z" * 100}} for i in range(20)]
    raw = json.dumps({"items": items}).encode()
    assert len(raw) > 2000
    for content in (raw, iter([raw[:1500], raw[1500:]])):
        r = api.client.post("/api/v1/nodes/n1/uploads", content=content,
                            headers={**bearer(t), "Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (413, {"detail": "request body is larger than 2000 bytes"})
    assert api.rows("uploads") == []
    assert [m["id"] for m in api.rows("media")] == ["n1/fits"]
    assert api.media_files() == ["n1", "n1/fits"]


@pytest.mark.parametrize("media_id", ["%2E", "%2E%2E", ".hidden", "a%20b", "x" * 65])
def test_media_ids_that_are_not_plain_file_names_are_refused(api: HubUnderTest, media_id: str) -> None:
    t = api.node("n1")
    r = put_media(api, t, media_id, b"data", sha(b"data"))
    assert r.status_code == 422 and "media id" in r.json()["detail"], r.text
    assert api.rows("media") == [] and api.media_files() == []
    assert put_media(api, t, "fine", b"data", sha(b"data")).status_code == 201  # the node's folder is still usable


def test_longest_node_and_media_ids_fit_the_stored_key(api: HubUnderTest) -> None:
    node = "n" * 64
    t = api.node(node)

    def put(media_id: str, **headers: str) -> Any:
        return api.client.put(f"/api/v1/nodes/{node}/media/{media_id}", content=b"d",
                              headers={**bearer(t), "X-Sha256": sha(b"d"), **headers})

    assert put("m" * 64, **{"X-Upload-Id": "u" * 64}).status_code == 201  # 64 + 1 + 64 characters (migration 0002)
    r = put("m" * 65)
    assert r.status_code == 422 and "at most 64" in r.json()["detail"]
    assert [(m["id"], m["upload_id"]) for m in api.rows("media")] == [(f"{node}/{'m' * 64}", f"{node}/{'u' * 64}")]


# -- values no database can take -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "url", "kw"), [
    ("GET", "/api/v1/nodes/a%00b", {}),
    ("DELETE", "/api/v1/nodes/a%00b", {}),
    ("GET", "/api/v1/pipelines/p%00", {}),
    ("GET", "/api/v1/uploads?device=d%00", {}),
    ("GET", "/api/v1/uploads?node=%00", {}),
    ("DELETE", "/api/v1/assignments/node:x/i%00", {}),
    ("GET", "/api/v1/media/n1/m%00", {}),
])
def test_nul_in_the_url_is_refused_not_a_500(api: HubUnderTest, method: str, url: str, kw: Any) -> None:
    r = api.client.request(method, url, headers=AUTH, **kw)
    assert (r.status_code, r.json()) == (422, {"detail": "NUL characters are not allowed in the URL"})


def test_every_route_checks_its_url_for_nul_before_anything_else(api: HubUnderTest) -> None:
    """Each router brings the check along (hub.api.deps.hub_router), the dashboard's too: without a token,
    without a body, a NUL in the query is what every route answers first."""
    routes = [r for r in api.app.routes if isinstance(r, APIRoute)]
    assert len(routes) == 54  # the API's 40 and the dashboard's 14
    for route in routes:
        url = re.sub(r"\{[^}]+\}", "x", route.path) + "?q=a%00b"
        for method in route.methods:
            r = api.client.request(method, url, follow_redirects=False)
            assert r.status_code == 422, f"{method} {route.path}: {r.status_code} {r.text[:200]}"
            assert r.json() == {"detail": "NUL characters are not allowed in the URL"}, f"{method} {route.path}"


@pytest.mark.parametrize(("method", "url", "kw", "loc"), [
    ("DELETE", f"/api/v1/tokens/{2**63}", {}, ["path", "token_id"]),
    ("DELETE", f"/api/v1/tokens/{-(2**63) - 1}", {}, ["path", "token_id"]),
    ("GET", f"/api/v1/uploads?after={2**63}", {}, ["query", "after"]),
    ("GET", f"/api/v1/alerts?after={10**30}", {}, ["query", "after"]),
    ("GET", f"/api/v1/pipelines/p?version={2**63}", {}, ["query", "version"]),
    ("PUT", "/api/v1/assignments/group:g/i", {"json": {"pipeline": "p", "version": 2**63}}, ["body", "version"]),
    ("POST", "/api/v1/nodes/n1/tokens", {"json": {"note": "a\x00b"}}, ["body", "note"]),
])
def test_values_beyond_the_database_are_refused_not_a_500(api: HubUnderTest, method: str, url: str, kw: Any,
                                                          loc: list[str]) -> None:
    api.node("n1")
    before = api.snapshot()
    r = api.client.request(method, url, headers=AUTH, **kw)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text
    assert api.snapshot() == before


def test_a_heartbeat_the_hub_could_not_serve_back_is_refused(api: HubUnderTest) -> None:
    t = api.node("n1")
    deep = '{"counters": ' + '{"a": ' * 300 + "1" + "}" * 300 + "}"
    for body, detail in ((deep, "nested more than 32 levels deep"), ('{"counters": {"x": NaN}}', "NaN and infinity"),
                         ('{"models": {"m": {"size": 1e400}}}', "NaN and infinity"),
                         ('{"errors": [{"n": ' + str(10**20) + "}]}", "integer out of the 64-bit range")):
        r = api.client.post("/api/v1/nodes/n1/heartbeat", content=body,
                            headers={**bearer(t), "Content-Type": "application/json"})
        assert r.status_code == 422 and detail in r.json()["detail"] and r.json()["detail"].startswith("heartbeat."), r.text
    assert api.rows("nodes")[0]["heartbeats"] == 0
    assert api.ok(api.get("/api/v1/nodes"))[0]["counters"] == {}
    assert api.ok(api.get("/api/v1/nodes/n1"))["heartbeats"] == 0


# -- the OpenAPI document ---------------------------------------------------------------------------------------------
def test_the_openapi_document_lists_every_route(api: HubUnderTest) -> None:
    doc = api.ok(api.client.get("/openapi.json"))
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routes = app_routes(api.app)
    assert listed == routes
    assert len(routes) == 40
    for path, ops in doc["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op.get("parameters", [])}
            assert (path == "/health") == ("authorization" not in names), path


# -- drift: scores nodes report in heartbeats --------------------------------------------------------------
def _drift_beat(api: HubUnderTest, node: str, token: str, score: Any, *, model: str = "pump", version: str = "1",
                **extra: Any) -> None:
    summary = {"score": score, "worst": "temp", "rows": 2000, "psi": {"temp": score, "vib": 0.01},
               "psi_confidence": 0.02, "positive_rate": 0.1, "ref_positive_rate": 0.1, **extra}
    hb = {"models": {"models": {model: {"active": version, "drift": {version: summary}}}}}
    api.ok(api.client.post(f"/api/v1/nodes/{node}/heartbeat", headers=bearer(token), json=hb))
    api.hub.heartbeats.flush()


def test_drift_from_heartbeats_is_a_series_with_a_sustained_alarm_and_a_metric(make_hub: Callable[..., HubUnderTest]) -> None:
    api = make_hub(drift_every_s=0)
    a, b = api.node("n1"), api.node("n2")
    got = api.ok(api.get("/api/v1/models/pump/drift"))
    assert got["nodes"] == {} and got["alarm"] is False and got["threshold"] == 0.25 and got["default"] is True
    assert api.ok(api.put("/api/v1/models/pump/drift/settings", json={"threshold": 0.25, "sustain_s": 0}))[
        "threshold"] == 0.25
    _drift_beat(api, "n1", a, 0.05)
    _drift_beat(api, "n2", b, 0.04)
    _drift_beat(api, "n1", a, 0.4)  # one point over: a spike, not yet drift
    got = api.ok(api.get("/api/v1/models/pump/drift"))
    assert got["nodes"]["n1"]["score"] == 0.4 and got["nodes"]["n1"]["alarm"] is False and got["alarm"] is False
    _drift_beat(api, "n1", a, 0.5)
    got = api.ok(api.get("/api/v1/models/pump/drift"))
    assert got["alarm"] is True and got["alarm_nodes"] == ["n1"] and got["nodes"]["n2"]["alarm"] is False
    assert got["nodes"]["n1"]["worst"] == "temp" and got["nodes"]["n1"]["detail"]["psi"]["temp"] == 0.5
    assert [[p[1] for p in s["points"]] for s in got["series"]] == [[0.05, 0.4, 0.5], [0.04]]
    assert got["over_since"] == pytest.approx(got["series"][0]["points"][1][0], abs=1e-3)
    only = api.ok(api.get("/api/v1/models/pump/drift?node=n2"))
    assert list(only["nodes"]) == ["n2"]
    metrics = api.client.get("/metrics", headers=AUTH).text
    assert 'edgeloop_model_drift{model="pump",version="1",node="n1"} 0.5' in metrics, [x for x in metrics.splitlines() if "drift" in x and "http" not in x]
    # the alarm needs the stretch to last sustain_s
    api.ok(api.put("/api/v1/models/pump/drift/settings", json={"threshold": 0.25, "sustain_s": 3600}))
    assert api.ok(api.get("/api/v1/models/pump/drift"))["alarm"] is False
    # a node's drift is the admin's to read; bad settings are refused with what is wrong
    assert api.client.get("/api/v1/models/pump/drift", headers=bearer(a)).status_code == 403
    r = api.put("/api/v1/models/pump/drift/settings", json={"threshold": -1, "sustain_s": 0})
    assert r.status_code == 422 and "threshold" in r.text


def test_hostile_drift_summaries_are_dropped_not_stored_and_break_nothing(make_hub: Callable[..., HubUnderTest]) -> None:
    api = make_hub(drift_every_s=0)
    t = api.node("n1")
    _drift_beat(api, "n1", t, 1e300)  # a number no PSI is
    _drift_beat(api, "n1", t, "high", rows=-5)
    _drift_beat(api, "n1", t, 0.1, model="../etc", version="..")  # names that are not names
    _drift_beat(api, "n1", t, 0.1, version="x" * 65)
    _drift_beat(api, "n1", t, 0.1, worst="\u0000\n<script>", psi={"\u0007": 1, "ok": 1e9})
    got = api.ok(api.get("/api/v1/models/pump/drift"))
    assert [p[1] for p in got["series"][0]["points"]] == [None, None, 0.1], got
    assert got["nodes"]["n1"]["detail"]["worst"] is None and got["nodes"]["n1"]["detail"]["psi"] == {"ok": None}
    assert {r["model"] for r in api.rows("model_drift")} == {"pump"}
    assert api.client.get("/metrics", headers=AUTH).status_code == 200
    page = api.client.get("/ui/models", headers=AUTH)  # the dashboard draws the series it kept
    assert page.status_code == 200 and 'figure class="drift" data-model="pump"' in page.text, page.text[-500:]
