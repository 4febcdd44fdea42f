"""The hub's model warehouse: signed bundles stored once per version, checked before they are kept."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from fastapi.testclient import TestClient

from hub.app import create_app
from hub.core import HubSettings
from tests.kit.hub import ADMIN

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def hub(tmp_path):
    app = create_app(HubSettings(db_url=f"sqlite:///{tmp_path}/hub.db", data_dir=str(tmp_path / "data"),
                                 admin_token=ADMIN, max_bundle=4096))
    with TestClient(app) as client:
        client.hub = app.state.hub
        yield client
    app.state.hub.close()


def bundle_headers(data: bytes, *, name: str = "pump_anomaly", version: str = "3", **override: object) -> dict:
    manifest = {"name": name, "version": version, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                "created": 1.0, "metrics": {"f1": 0.91}, "key_id": "0123456789abcdef", **override}
    raw = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
    return {**AUTH, "X-Sha256": hashlib.sha256(data).hexdigest(),
            "X-Manifest": base64.urlsafe_b64encode(raw).decode(), "X-Signature": base64.b64encode(b"s" * 64).decode()}


def put(hub: TestClient, data: bytes, headers: dict, name: str = "pump_anomaly", version: str = "3"):
    return hub.put(f"/api/v1/models/{name}/versions/{version}/bundle", content=data, headers=headers)


def files(hub: TestClient) -> list[str]:
    return sorted(p.name for p in hub.hub.models_dir.rglob("*") if p.is_file())


def test_store_list_and_download(hub):
    data = b"bento archive bytes" * 10
    r = put(hub, data, bundle_headers(data))
    assert r.status_code == 201 and r.json()["stored"] is True and r.json()["metrics"] == {"f1": 0.91}
    assert put(hub, data, bundle_headers(data)).json()["stored"] is False  # the same bundle again: no-op
    models = hub.get("/api/v1/models", headers=AUTH).json()
    assert [(m["name"], m["latest"], [v["version"] for v in m["versions"]]) for m in models] == [
        ("pump_anomaly", "3", ["3"])]
    meta = hub.get("/api/v1/models/pump_anomaly/versions/3", headers=AUTH).json()
    assert base64.urlsafe_b64decode(meta["manifest"]) == base64.urlsafe_b64decode(bundle_headers(data)["X-Manifest"])
    token = hub.post("/api/v1/nodes", json={"name": "edge-1"}, headers=AUTH).json()["token"]
    node = {"Authorization": f"Bearer {token}"}
    assert hub.put("/api/v1/models/pump_anomaly/deployments/node:edge-1", json={"version": "3"},
                   headers=AUTH).status_code == 200
    got = hub.get("/api/v1/models/pump_anomaly/versions/3/bundle", headers=node)
    assert got.status_code == 200 and got.content == data and got.headers["x-sha256"] == meta["sha256"]
    refused = put(hub, b"x", {**bundle_headers(b"x", version="4"), **node}, version="4")
    assert refused.status_code == 403  # nodes download, only the admin publishes
    assert hub.get("/api/v1/models/pump_anomaly/versions/9", headers=node).status_code == 404


def test_versions_are_immutable(hub):
    assert put(hub, b"one", bundle_headers(b"one")).status_code == 201
    r = put(hub, b"two", bundle_headers(b"two"))
    assert r.status_code == 409 and "immutable" in r.json()["detail"]
    assert hub.get("/api/v1/models/pump_anomaly/versions/3/bundle", headers=AUTH).content == b"one"
    assert files(hub) == ["3.bento"]


@pytest.mark.parametrize(("headers", "detail"), [
    ({"X-Sha256": "0" * 64}, "upload damaged"),
    ({"manifest": {"name": "intrusion"}}, "manifest name is 'intrusion'"),
    ({"manifest": {"version": "2"}}, "manifest version is '2'"),
    ({"manifest": {"size": 1}}, "manifest size is 1"),
    ({"manifest": {"key_id": "nope"}}, "manifest key_id"),
    ({"X-Manifest": "%%%"}, "base64url JSON"),
    ({"X-Signature": "not base64!"}, "base64"),
], ids=["digest", "name", "version", "size", "key-id", "manifest", "signature"])
def test_inconsistent_uploads_are_refused_and_leave_nothing(hub, headers, detail):
    data = b"bento"
    h = bundle_headers(data, **headers.pop("manifest", {}))
    if headers.get("X-Sha256"):  # a body that does not match its digest: the manifest agrees with the header
        h = bundle_headers(data, sha256=headers["X-Sha256"])
    h.update(headers)
    r = put(hub, data, h)
    assert r.status_code == 422 and detail in r.json()["detail"], r.text
    assert hub.get("/api/v1/models", headers=AUTH).json() == [] and files(hub) == []


def test_oversized_bundle_413(hub):
    data = b"x" * 5000
    r = put(hub, data, bundle_headers(data))
    assert r.status_code == 413 and "4096" in r.json()["detail"]
    assert files(hub) == []


def test_a_node_may_download_only_the_version_it_is_to_serve(hub):
    for v in ("3", "4", "5"):
        assert put(hub, v.encode() * 8, bundle_headers(v.encode() * 8, version=v), version=v).status_code == 201
    tokens = {n: hub.post("/api/v1/nodes", json={"name": n, "group": "line-1"}, headers=AUTH).json()["token"]
              for n in ("edge-1", "edge-2")}

    def fetch(node: str, version: str) -> int:
        h = {"Authorization": f"Bearer {tokens[node]}"}
        meta = hub.get(f"/api/v1/models/pump_anomaly/versions/{version}", headers=h).status_code
        bundle = hub.get(f"/api/v1/models/pump_anomaly/versions/{version}/bundle", headers=h)
        assert bundle.status_code == meta
        return meta

    assert fetch("edge-1", "3") == 403  # nothing deployed: nothing to download
    hub.put("/api/v1/models/pump_anomaly/deployments/group:line-1", json={"version": "3"}, headers=AUTH)
    hub.put("/api/v1/models/pump_anomaly/deployments/node:edge-2", json={"version": "4"}, headers=AUTH)
    assert [fetch("edge-1", v) for v in ("3", "4", "5")] == [200, 403, 403]
    assert [fetch("edge-2", v) for v in ("3", "4", "5")] == [403, 200, 403]  # its own deployment wins
    refused = hub.get("/api/v1/models/pump_anomaly/versions/5/bundle", headers={"Authorization": f"Bearer {tokens['edge-1']}"})
    assert "not deployed to node 'edge-1' (it is to serve 3)" in refused.json()["detail"]
    assert hub.get("/api/v1/models/pump_anomaly/versions/5/bundle", headers=AUTH).status_code == 200  # the admin
    hub.put("/api/v1/models/pump_anomaly/deployments/group:line-1", json={"version": "5"}, headers=AUTH)
    assert [fetch("edge-1", v) for v in ("3", "5")] == [403, 200]  # a new deployment moves the permission


def test_deployments_reach_desired_states_node_over_group(hub):
    for v in ("3", "4"):
        assert put(hub, v.encode() * 8, bundle_headers(v.encode() * 8, version=v), version=v).status_code == 201
    tokens = {n: hub.post("/api/v1/nodes", json={"name": n, "group": "line-1"}, headers=AUTH).json()["token"]
              for n in ("edge-1", "edge-2")}

    def desired(node: str) -> dict:
        return hub.get(f"/api/v1/nodes/{node}/desired", headers={"Authorization": f"Bearer {tokens[node]}"}).json()

    before = desired("edge-1")
    assert "models" not in before  # no deployments: desired states stay as they were
    r = hub.put("/api/v1/models/pump_anomaly/deployments/group:line-1", json={"version": "3"}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"name": "pump_anomaly", "target": "group:line-1", "version": "3"}
    assert hub.put("/api/v1/models/pump_anomaly/deployments/node:edge-2", json={"version": "4"},
                   headers=AUTH).status_code == 200
    one, two = desired("edge-1"), desired("edge-2")
    assert one["models"] == {"pump_anomaly": {"version": "3"}} and one["etag"] != before["etag"]
    assert two["models"] == {"pump_anomaly": {"version": "4"}}  # node-specific wins
    listed = hub.get("/api/v1/models/pump_anomaly/deployments", headers=AUTH).json()
    assert [(d["target"], d["version"]) for d in listed] == [("group:line-1", "3"), ("node:edge-2", "4")]
    # refused: a version the warehouse lacks, a bad target, an unknown node, a node token
    assert hub.put("/api/v1/models/pump_anomaly/deployments/group:line-1", json={"version": "9"},
                   headers=AUTH).status_code == 404
    assert hub.put("/api/v1/models/pump_anomaly/deployments/everyone", json={"version": "3"},
                   headers=AUTH).status_code == 422
    assert hub.put("/api/v1/models/pump_anomaly/deployments/node:ghost", json={"version": "3"},
                   headers=AUTH).status_code == 404
    assert hub.put("/api/v1/models/pump_anomaly/deployments/node:edge-1", json={"version": "4"},
                   headers={"Authorization": f"Bearer {tokens['edge-1']}"}).status_code == 403
    assert desired("edge-1")["models"] == {"pump_anomaly": {"version": "3"}}
    assert hub.delete("/api/v1/models/pump_anomaly/deployments/node:edge-2", headers=AUTH).status_code == 200
    assert desired("edge-2")["models"] == {"pump_anomaly": {"version": "3"}}
    assert hub.delete("/api/v1/models/pump_anomaly/deployments/node:edge-2", headers=AUTH).status_code == 404


def test_pins_of_versions_the_warehouse_lacks_are_refused_where_they_would_reach_nodes(hub):
    """An assignment pinning a missing version is refused (422, naming those there); so is a new pipeline
    version that an assignment following the newest version would make pin one. A model the warehouse does
    not know may be a node's own, and is allowed."""
    assert put(hub, b"bundle-1", bundle_headers(b"bundle-1", version="1"), version="1").status_code == 201
    assert put(hub, b"bundle-10", bundle_headers(b"bundle-10", version="10"), version="10").status_code == 201
    spec = {"name": "score", "params": {"model": "pump_anomaly"},
            "steps": [{"device_input": {}}, {"apply_model": {"model": "${model}", "inputs": ["x"]}}]}
    assert hub.post("/api/v1/pipelines", json=spec, headers=AUTH).status_code == 201

    def assign(instance: str, params: dict) -> object:
        return hub.put(f"/api/v1/assignments/group:g/{instance}", json={"pipeline": "score", "params": params},
                       headers=AUTH)

    bad = assign("a", {"model": "pump_anomaly:2"})
    assert bad.status_code == 422 and "pins model 'pump_anomaly' version '2'" in bad.json()["detail"]
    assert "(it has 1, 10)" in bad.json()["detail"]
    assert assign("a", {"model": "pump_anomaly:10"}).status_code == 200
    assert assign("b", {"model": "own_model:3"}).status_code == 200  # not in the warehouse: the node's own
    # a version 2 that also pins pump_anomaly:2 in a step of its own: the assignments following it would pin it
    v2 = {**spec, "steps": [{"device_input": {}}, {"apply_model": {"model": "${model}", "inputs": ["x"]}},
                            {"apply_model": {"model": "pump_anomaly:2", "inputs": ["x"], "output": "old"}}]}
    refused = hub.post("/api/v1/pipelines", json=v2, headers=AUTH)
    assert refused.status_code == 422, refused.text
    assert "version '2'" in refused.json()["detail"] and "group:g/a" in refused.json()["detail"]
    assert hub.get("/api/v1/pipelines/score", headers=AUTH).json()["version"] == 1
