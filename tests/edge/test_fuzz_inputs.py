"""Fuzzing what comes from outside a node: device payloads, pipeline specs, product and device specs.

Hypothesis generates the inputs. The promise under test: bad input gets a clear error naming what is
wrong, and nothing else happens; a node never crashes on it.

- MQTT payloads (any bytes, any JSON) through the real MQTT connector's parser: a Record whose values
  passed the product's checks and whose time is a finite number, or None and exactly one dead letter
  with a reason; no exception.
- Pipeline specs (any operator names, any parameters) through the validator: a Plan, or a SpecError
  whose message says where; no other exception.
- Products and device bindings likewise.

``EDGELOOP_FUZZ_EXAMPLES`` raises the number of examples (``make chaos`` runs 2,000 per property).
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime import jsonio
from edge_runtime.connectors import NodeContext
from edge_runtime.connectors.mqtt import MqttConnector
from edge_runtime.devices.bus import DeviceBus
from edge_runtime.devices.catalog import load_catalog
from edge_runtime.mqtt import BrokerConfig
from edge_runtime.operators.base import REGISTRY, SpecError
from edge_runtime.pipeline import parse_pipeline
from tests.kit import examples

EXAMPLES = int(os.environ.get("EDGELOOP_FUZZ_EXAMPLES", examples(300)))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PRODUCTS = [("products.yaml", {"products": [{"name": "pump", "properties": {
    "temperature": {"type": "number", "min": -40, "max": 250}, "running": {"type": "boolean"},
    "mode": {"type": "string", "enum": ["auto", "manual"]}, "count": {"type": "integer"},
    "label": {"type": "string"}}}]})]
DEVICES = [("devices.yaml", {"devices": [{"id": "pump-1", "product": "pump", "connector": "mqtt",
                                          "topic": "plant/p1", "ts_field": "t",
                                          "mapping": {"temperature": "a.temp", "running": "on", "mode": "mode",
                                                      "count": "n", "label": "label"}}]})]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
keys = st.sampled_from(["t", "a", "on", "mode", "n", "label", "temp", "x"])
payload_objects = st.dictionaries(keys, st.one_of(json_values, st.dictionaries(st.sampled_from(["temp", "b"]),
                                                                               json_values, max_size=2)),
                                  max_size=6)


class Letters:
    """What the parser files: (reason, device) per dead letter (the bus's DeadLetterSink interface)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str | None]] = []
        self.total = 0

    def add(self, *, source: str, reason: str, device: str | None = None, raw: Any = None, record: Any = None) -> None:
        self.items.append((reason, device))

    def flush(self) -> int:
        return 0


@pytest.fixture(scope="module")
def connector() -> MqttConnector:
    catalog = load_catalog([], [], products_data=PRODUCTS, devices_data=DEVICES)
    ctx = NodeContext("fuzz", catalog, DeviceBus("fuzz", dead_letters=Letters()), None, BrokerConfig(port=1), None)
    return MqttConnector(ctx, list(catalog.devices.values()))


def check_parse(conn: MqttConnector, topic: str, payload: bytes) -> None:
    letters = conn.bus.dead_letters
    letters.items.clear()
    rec = conn.parse(topic, payload, 1_800_000_000.0)
    if rec is None:
        assert len(letters.items) == 1 and letters.items[0][0], letters.items
        return
    assert letters.items == []
    assert rec["device"] == "pump-1" and rec["values"] and isinstance(rec["ts"], float) and math.isfinite(rec["ts"])
    v = rec["values"]
    if "temperature" in v:
        assert isinstance(v["temperature"], (int, float)) and not isinstance(v["temperature"], bool)
        assert -40 <= v["temperature"] <= 250
    if "running" in v:
        assert isinstance(v["running"], bool)
    if "mode" in v:
        assert v["mode"] in ("auto", "manual")
    if "count" in v:
        assert isinstance(v["count"], int) and not isinstance(v["count"], bool)
    jsonio.dumps(rec)  # what was accepted can always be stored and sent on


@FUZZ
@given(payload=st.binary(max_size=300))
def test_any_bytes_are_a_record_or_one_dead_letter(connector: MqttConnector, payload: bytes) -> None:
    check_parse(connector, "plant/p1", payload)


@FUZZ
@given(doc=payload_objects)
def test_any_json_object_is_a_record_or_one_dead_letter(connector: MqttConnector, doc: dict[str, Any]) -> None:
    try:
        payload = jsonio.dumps(doc)
    except (TypeError, ValueError, OverflowError):  # not JSON (NaN, huge ints): as a device would send it
        import json

        payload = json.dumps(doc).encode()
    check_parse(connector, "plant/p1", payload)


@FUZZ
@given(doc=json_values)
def test_any_record_on_the_ingest_topic_is_a_record_or_one_dead_letter(connector: MqttConnector, doc: Any) -> None:
    import json

    rec = {"device": "pump-1", "ts": doc, "values": doc} if not isinstance(doc, dict) else doc
    payload = json.dumps(rec).encode()
    letters = connector.bus.dead_letters
    letters.items.clear()
    out = connector.parse(connector.ingest_topic, payload, 1_800_000_000.0)
    assert (out is None and len(letters.items) == 1) or (out is not None and letters.items == [])


# -- specs ----------------------------------------------------------------------------------------------
OPS = sorted(REGISTRY)
param_values = st.recursive(
    st.one_of(scalars, st.sampled_from(["10s", "500ms", "temperature > 70", "temperature", "mean", "max",
                                        "x * 2", "1s", "count", "__import__('os')", "[0, 0, 10, 10]",
                                        "${limit}", "temperature > ${limit}", "$${x}", "${", "${}", "${a b}"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.sampled_from(["size", "every", "interval", "set", "fields", "threshold", "model", "inputs", "output",
                         "message", "level", "temperature", "expr", "where", "regions", "fps", "width", "height",
                         "quality", "x"]), inner, max_size=4)),
    max_leaves=10)
steps = st.lists(st.dictionaries(st.one_of(st.sampled_from(OPS), st.text(max_size=6)), param_values,
                                 min_size=1, max_size=2), max_size=6)
specs = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.just("p"), st.text(max_size=8), scalars),
                           "steps": st.one_of(steps, param_values)},
                          optional={"product": st.one_of(st.just("pump"), scalars),
                                    "uplink": param_values, "extra": scalars,
                                    "params": st.one_of(st.dictionaries(st.sampled_from(["limit", "x", "1a", ""]),
                                                                        param_values, max_size=3), param_values)}),
    json_values)


@FUZZ
@given(spec=specs, values=st.dictionaries(st.sampled_from(["limit", "x"]), param_values, max_size=2))
def test_any_pipeline_spec_is_a_plan_or_a_spec_error_that_says_where(spec: Any, values: dict[str, Any]) -> None:
    try:
        plan = parse_pipeline(spec, file="fuzz.yaml")
    except SpecError as e:
        assert str(e).startswith("fuzz.yaml") and len(str(e)) > len("fuzz.yaml: "), str(e)
        return
    assert plan.steps and REGISTRY[plan.steps[0].op].source
    try:  # an instance's values (of the declared params, or not): a plan or a spec error naming the field
        bound = plan.bind(values)
    except SpecError as e:
        assert str(e).startswith("fuzz.yaml") and ("field" in str(e) or "step" in str(e)), str(e)
        return
    assert bound.name == plan.name and len(bound.steps) == len(plan.steps)


@FUZZ
@given(steps=st.lists(st.sampled_from([s for s in OPS if not REGISTRY[s].source]), max_size=5),
       params=st.lists(param_values, min_size=5, max_size=5))
def test_plausible_operator_chains_validate_or_explain(steps: list[str], params: list[Any]) -> None:
    spec = {"name": "p", "product": "pump", "steps": [{"device_input": {}}] + [{op: p} for op, p in zip(steps, params)]}
    try:
        parse_pipeline(spec, file="chain.yaml")
    except SpecError as e:
        assert str(e).startswith("chain.yaml") and "step #" in str(e), str(e)


@FUZZ
@given(products=json_values, devices=json_values)
def test_any_product_and_device_spec_loads_or_explains(products: Any, devices: Any) -> None:
    try:
        load_catalog([], [], products_data=[("p.yaml", products)], devices_data=[("d.yaml", devices)])
    except SpecError as e:
        assert str(e).startswith(("p.yaml", "d.yaml")), str(e)
