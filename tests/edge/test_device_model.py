"""Products and device bindings: validated with errors that name file, line, item and field."""

from __future__ import annotations

import pytest

from edge_runtime.devices.catalog import load_catalog
from edge_runtime.operators.base import SpecError
from edge_runtime.records import RecordError
from tests.kit import ROOT

APP = ROOT / "apps" / "pump_monitoring"


def test_app_catalog_loads():
    cat = load_catalog([APP / "products.yaml"], [APP / "devices.yaml"])
    pump = cat.products["pump"]
    assert set(pump.properties) == {"temperature", "vibration", "current", "running"}
    assert pump.services["set_speed"].args["rpm"].type == "integer"
    assert pump.events["overheat"].level == "WARN"
    assert cat.devices_of("pump") == ["pump-1", "pump-2", "pump-3"]
    assert cat.devices["pump-3"].options["_registers"][0].scale == 0.1


def test_property_types_are_checked():
    pump = load_catalog([APP / "products.yaml"]).products["pump"]
    assert pump.check_values({"temperature": 20, "running": 1}) == {"temperature": 20, "running": True}
    for values, expected in [({"temperature": "hot"}, "must be a number"), ({"temperature": True}, "must be a number"),
                             ({"temperature": float("nan")}, "not finite"), ({"temperature": 900}, "outside"),
                             ({"running": "yes"}, "true or false"), ({"colour": 1}, "unknown property")]:
        with pytest.raises(RecordError, match=expected):
            pump.check_values(values)


PRODUCTS = "products:\n  - name: pump\n    properties:\n      t: {type: number}\n    services:\n      stop: {}\n"


@pytest.mark.parametrize(("products", "devices", "where", "expected"), [
    ("products:\n  - name: pump\n    properties:\n      t: {type: numbr}\n", None, "products.yaml:4",
     "field 'properties.t.type'"),
    ("products:\n  - name: pump\n    properties:\n      t: {type: number, min: 5, max: 1}\n", None, "products.yaml:4",
     "min 5 is greater than max 1"),
    ("products:\n  - name: pump\n    propertys: {}\n", None, "products.yaml:3", "unknown key 'propertys'"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: valve\n    connector: mqtt\n    topic: a\n", "devices.yaml:3",
     "unknown product 'valve'"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: pump\n    connector: zigbee\n", "devices.yaml:4",
     "unknown connector 'zigbee'"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: pump\n    connector: mqtt\n    topic: a/+/b\n", "devices.yaml:5",
     "no wildcards"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: pump\n    connector: mqtt\n    topic: a\n    mapping: {x: y}\n",
     "devices.yaml:6", "has no property 'x'"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: pump\n    connector: mqtt\n    topic: a\n"
     "  - id: p2\n    product: pump\n    connector: mqtt\n    topic: a\n", "devices.yaml:9", "already bound"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: pump\n    connector: modbus\n    host: h\n    registers:\n"
     "      t: {table: holding, address: 1, type: float16}\n", "devices.yaml", "registers.t.type"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: pump\n    connector: modbus\n    host: h\n    registers:\n"
     "      t: {table: coils, address: 1}\n", "devices.yaml", "registers.t.table"),
    (PRODUCTS, "devices:\n  - id: p1\n    product: pump\n    connector: mqtt\n    topic: a\n    services: {start: {}}\n",
     "devices.yaml:6", "no service 'start'"),
])
def test_bad_catalogs_name_where(tmp_path, products, devices, where, expected):
    (tmp_path / "products.yaml").write_text(products)
    dfiles = []
    if devices is not None:
        (tmp_path / "devices.yaml").write_text(devices)
        dfiles = [tmp_path / "devices.yaml"]
    with pytest.raises(SpecError) as err:
        load_catalog([tmp_path / "products.yaml"], dfiles)
    assert where in str(err.value) and expected in str(err.value), str(err.value)
