"""API fuzzing of the hub with schemathesis: no request, well-formed or not, makes it answer 5xx.

Cases come from the hub's own OpenAPI document, with two additions made here:

* the free-form bodies get the shape the hub checks by hand (upload items, product and
  pipeline specs), so that generated requests get past the first check and reach
  validation, storage and the desired-state computation;
* a dictionary of hostile values (integers beyond 64 bits, NUL, ``.`` and ``..``, long
  text) is mixed into generated strings and integers, where hypothesis alone rarely goes.

Three callers fuzz every operation, each against its own seeded hub on a real SQLite
database: the admin (the whole API), a node with its own token (its node pinned in the
path, so that bodies get past the permission check) and nobody (no Authorization header).
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from hub.app import create_app
from hub.core import HubSettings
from tests.kit import examples
from tests.kit.hub import ADMIN

NODE = "fuzz-node"
PRODUCT = {"name": "pump", "properties": {"temperature": {"type": "number"}, "running": {"type": "boolean"}}}
PIPELINE = {"name": "hot", "product": "pump",
            "steps": [{"device_input": {"properties": ["temperature"]}}, {"filter": "temperature > 80"},
                      {"alert": {"level": "WARN", "message": "{device} is hot"}}]}

# bounded so that the whole file runs in well under 90 s on two cores
FUZZ = settings(max_examples=examples(25), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

HOSTILE = ["\x00", "a\x00b", ".", "..", "../x", "x" * 300, "%00", "\u00e9\u6f22", "-1",
           2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1]
CONFIG = SchemathesisConfig.from_dict({
    "dictionaries": {"hostile": {"values": HOSTILE}},
    "generation": {"dictionaries": {"string": {"dictionary": "hostile", "probability": 0.15},
                                    "integer": {"dictionary": "hostile", "probability": 0.15}}},
})

# the shapes the hub checks by hand, as JSON Schema (documented in hub/uploads.py, the node's spec loaders)
ITEM = {"type": "object", "required": ["id", "kind"], "properties": {
    "id": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,64}$"},
    "kind": {"enum": ["record", "alert", "notification"]},
    "device": {"type": "string", "maxLength": 100}, "instance": {"type": "string", "maxLength": 100},
    "seq": {"type": "integer", "minimum": 0}, "ts": {"type": "number"},
    "values": {"type": "object"}, "level": {"type": "string"}, "message": {"type": "string"}}}
PROPERTY = {"type": "object", "required": ["type"], "properties": {
    "type": {"enum": ["number", "integer", "boolean", "string", "image", "text"]},
    "unit": {"type": "string"}, "min": {"type": "number"}, "max": {"type": "number"}}}
PRODUCT_SPEC = {"type": "object", "required": ["name", "properties"], "properties": {
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"},
    "description": {"type": "string"},
    "properties": {"type": "object", "minProperties": 1, "additionalProperties": PROPERTY},
    "services": {"type": "object"}, "events": {"type": "object"}}}
STEP = {"anyOf": [
    {"type": "object", "required": ["device_input"], "additionalProperties": False,
     "properties": {"device_input": {"type": "object", "properties": {"properties": {"type": "array", "items": {"type": "string"}}}}}},
    {"type": "object", "required": ["filter"], "additionalProperties": False, "properties": {"filter": {"type": "string"}}},
    {"type": "object", "required": ["sample"], "additionalProperties": False,
     "properties": {"sample": {"type": "object", "properties": {"every": {"type": "integer"}}}}},
    {"type": "object", "required": ["alert"], "additionalProperties": False,
     "properties": {"alert": {"type": "object", "properties": {"level": {"type": "string"}, "message": {"type": "string"}}}}},
]}
PIPELINE_SPEC = {"type": "object", "required": ["name", "steps"], "properties": {
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,120}$"}, "product": {"type": "string"},
    "description": {"type": "string"}, "version": {"type": "integer"},
    "steps": {"type": "array", "minItems": 1, "maxItems": 4, "items": STEP}, "uplink": {"type": "object"}}}


def refined(doc: dict[str, Any]) -> dict[str, Any]:
    """The hub's OpenAPI document with the hand-checked bodies described."""
    doc = copy.deepcopy(doc)
    schemas, paths = doc["components"]["schemas"], doc["paths"]
    schemas["Uploads"]["properties"]["items"]["items"] = ITEM
    for path, method, spec in (("/api/v1/products/{name}", "put", PRODUCT_SPEC),
                               ("/api/v1/pipelines", "post", PIPELINE_SPEC)):
        paths[path][method]["requestBody"]["content"]["application/json"]["schema"] = spec
    return doc


class Fuzzed:
    """A hub on a fresh SQLite database, seeded with a node (and its token), a product, a pipeline, assignments."""

    def __init__(self, tmp: Path) -> None:
        self.app = create_app(HubSettings(db_url=f"sqlite:///{tmp}/hub.db", data_dir=str(tmp), admin_token=ADMIN,
                                          max_body=64 << 10, max_media=64 << 10))
        admin = {"Authorization": f"Bearer {ADMIN}"}
        with TestClient(self.app) as c:
            r = c.post("/api/v1/nodes", json={"name": NODE, "group": "line-1"}, headers=admin)
            assert r.status_code == 201, r.text
            self.node_token = r.json()["token"]
            assert c.put("/api/v1/products/pump", json=PRODUCT, headers=admin).status_code == 200
            assert c.post("/api/v1/pipelines", json=PIPELINE, headers=admin).status_code == 201
            for target in (f"node:{NODE}", "group:line-1"):
                r = c.put(f"/api/v1/assignments/{target}/hot", json={"pipeline": "hot"}, headers=admin)
                assert r.status_code == 200, r.text
            r = c.post(f"/api/v1/nodes/{NODE}/uploads", headers={"Authorization": f"Bearer {self.node_token}"},
                       json={"items": [{"id": "a1", "kind": "alert", "device": "p1", "seq": 1, "ts": 1.0}]})
            assert r.status_code == 200, r.text

    def dispose(self) -> None:
        self.app.state.hub.engine.dispose()


def _load_schema() -> Any:
    with tempfile.TemporaryDirectory(prefix="hub-fuzz-schema-") as tmp:  # the document needs no database; the app does
        app = create_app(HubSettings(db_url=f"sqlite:///{tmp}/hub.db", data_dir=tmp))
        doc = app.openapi()
        app.state.hub.engine.dispose()
    return schemathesis.openapi.from_dict(refined(doc), config=CONFIG)


schema = _load_schema()
_PRODUCT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


@pytest.fixture(scope="module")
def hubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fuzzed]]:
    """One seeded hub per caller, so that what one run changes (deletions, revocations) does not steer another."""
    made = {who: Fuzzed(tmp_path_factory.mktemp(f"fuzz-{who}")) for who in ("admin", "node", "anonymous")}
    yield made
    for f in made.values():
        f.dispose()


def _no_server_error(case: Any, hub: Fuzzed, headers: dict[str, str] | None) -> None:
    response = case.call(app=hub.app, headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n{case.as_curl_command()}")
    case.validate_response(response, checks=[not_a_server_error])


@schema.parametrize()
@FUZZ
def test_fuzz_as_admin(case: Any, hubs: dict[str, Fuzzed]) -> None:
    name = case.body.get("name") if isinstance(case.body, dict) else None
    if case.operation.path == "/api/v1/products/{name}" and isinstance(name, str) and _PRODUCT_NAME.match(name):
        case.path_parameters["name"] = name  # path and spec agree: the product gets stored
    _no_server_error(case, hubs["admin"], {"Authorization": f"Bearer {ADMIN}"})


@schema.parametrize()
@FUZZ
def test_fuzz_as_a_node(case: Any, hubs: dict[str, Fuzzed]) -> None:
    hub = hubs["node"]
    if case.path_parameters and "node" in case.path_parameters:
        case.path_parameters["node"] = NODE  # its own node: past the permission check, into validation and storage
    _no_server_error(case, hub, {"Authorization": f"Bearer {hub.node_token}"})


@schema.parametrize()
@FUZZ
def test_fuzz_without_a_token(case: Any, hubs: dict[str, Fuzzed]) -> None:
    if case.headers:
        case.headers.pop("authorization", None)
    _no_server_error(case, hubs["anonymous"], None)
