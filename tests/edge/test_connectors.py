"""Connectors as plug-ins: the registry, and a new protocol added as one module registered through a real
dist-info, used by a real node from its devices.yaml."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from edge_runtime.connectors import Connector, lookup, names, register, registry
from edge_runtime.connectors.registry import BUILTIN, REGISTRY, load_entry_points
from edge_runtime.devices.catalog import load_catalog
from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.testing import wait_for
from tests.kit.nodes import dead_letter_reasons, write_catalog, write_node

# A protocol in one module: readings appended to a local file, one JSON object a line; ``set`` appends the
# values to the file's ``.out`` twin. This is all a connector author writes.
LINEFILE = '''
import json
import threading
import time
from pathlib import Path

from edge_runtime.connectors import BindingCheck, Connector
from edge_runtime.devices.readings import MAPPING_OPTIONS, FieldBinding, check_mapping, reading
from edge_runtime.records import RecordError


class LineFileConnector(Connector):
    """Readings appended to a local file, one JSON object a line."""

    name = "linefile"
    options = {"path": "the file to follow (relative to the devices file)", "every": "how often to look (50ms)",
               **MAPPING_OPTIONS}

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        if not isinstance(b.options.get("path"), str) or not b.options["path"]:
            raise b.error("expected the path of the file to follow", "path")
        b.duration("every", 0.05)
        check_mapping(b)

    @classmethod
    def metric_families(cls, stats, node, shared):
        for dev, d in stats.items():
            shared.accepted.add(d["accepted"], node=node, connector="linefile", source=dev)
            shared.errors.add(d["errors"], node=node, connector="linefile", source=dev)
        return []

    def __init__(self, ctx, bindings):
        super().__init__(ctx, bindings)
        self.files = {b.id: (Path(b.file).parent / b.options["path"],
                             FieldBinding(b, ctx.catalog.products[b.product])) for b in bindings}
        self.counts = {d: {"lines": 0, "accepted": 0, "errors": 0} for d in self.files}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="linefile", daemon=True)

    def _run(self):
        offsets = dict.fromkeys(self.files, 0)
        every = min(b.options["every"] for b in self.bindings.values())
        while not self._stop.wait(every):
            for dev, (path, fb) in self.files.items():
                if not path.exists():
                    continue
                with path.open("rb") as f:
                    f.seek(offsets[dev])
                    chunk = f.read()
                whole = chunk[: chunk.rfind(b"\\n") + 1]
                offsets[dev] += len(whole)
                records = []
                for line in whole.splitlines():
                    self.counts[dev]["lines"] += 1
                    try:
                        records.append(reading(fb, json.loads(line), time.time()))
                    except (ValueError, RecordError) as exc:
                        self.counts[dev]["errors"] += 1
                        self.ctx.bus.dead(f"linefile:{path.name}", getattr(exc, "reason", f"malformed JSON: {exc}"),
                                          device=dev, raw=line)
                self.counts[dev]["accepted"] += len(records)
                if records:
                    self.ctx.bus.submit(records)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def stats(self):
        return {d: dict(c) for d, c in self.counts.items()}

    def write(self, device, values):
        path, _ = self.files[device]
        with path.with_suffix(".out").open("a") as f:
            f.write(json.dumps({"set": values}) + "\\n")
'''

PRODUCTS = [{"name": "heater",
             "properties": {"temperature": {"type": "number", "min": -50, "max": 200}, "setpoint": {"type": "number"}},
             "services": {"reset": {}}}]
PIPELINE = {"name": "cool-down", "product": "heater", "steps": [
    {"device_input": {}}, {"filter": "temperature > 80"}, {"device_output": {"set": {"setpoint": "temperature - 30"}}}]}


@pytest.fixture
def linefile(tmp_path, monkeypatch):
    """The plug-in installed as a package would be: its module and a dist-info with its entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "linefile_conn.py").write_text(textwrap.dedent(LINEFILE))
    dist = site / "linefile_conn-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: linefile-conn\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[edgeloop.connectors]\nlinefile = linefile_conn:LineFileConnector\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        assert "linefile" in load_entry_points(force=True)
        yield lookup("linefile")
    finally:
        REGISTRY.pop("linefile", None)
        sys.modules.pop("linefile_conn", None)
        registry._ENTRY_POINTS_LOADED = False  # the next lookup scans the installed packages again


BOILER = {"id": "boiler-1", "product": "heater", "connector": "linefile", "path": "boiler.jsonl",
          "mapping": {"temperature": "temp"}, "ts_field": "at"}


@pytest.mark.broker
def test_a_plugin_connector_feeds_a_real_node_and_carries_out_its_actions(tmp_path, mosquitto, linefile):
    assert linefile.__module__ == "linefile_conn" and "linefile" in names()
    node = Node(load_node_config(write_node(tmp_path, "edge-lf", broker_port=mosquitto.port, products=PRODUCTS,
                                            devices=[BOILER], pipelines={"cool": PIPELINE}, publish_telemetry=True,
                                            stats_interval=1)))
    assert isinstance(node.connectors["linefile"], linefile)
    node.start()
    try:
        t0 = 1_800_000_000.0
        lines = [{"at": t0, "temp": 20.5}, {"at": t0 + 1, "temp": 95.0}, "{broken", {"at": t0 + 2, "temp": 900},
                 {"at": t0 + 3, "temp": 21.0}]
        with (tmp_path / "boiler.jsonl").open("w") as f:
            for line in lines:
                f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
        # readings on the Device Bus, in the node's store, by event time
        rows = wait_for(lambda: r if len(r := node.store.query(devices=["boiler-1"], since=t0)) == 3 else None,
                        what="three readings from the line file")
        assert [(r["ts"], r["values"]["temperature"]) for r in rows] == [(t0, 20.5), (t0 + 1, 95.0), (t0 + 3, 21.0)]
        # through the pipeline: the hot reading sets the setpoint, written back by the plug-in's write()
        out = tmp_path / "boiler.out"
        wait_for(lambda: out.exists() and out.read_text(), what="the device_output set written back")
        assert json.loads(out.read_text().splitlines()[0]) == {"set": {"setpoint": 65.0}}
        # bad lines are dead letters with their reasons, the connector goes on
        wait_for(lambda: node.dead_letters.total >= 2, what="two dead letters")
        reasons = dead_letter_reasons(node)
        assert any("malformed JSON" in r for r in reasons) and any("outside" in r for r in reasons), reasons
        # its stats under its name, its families in /metrics
        wait_for(lambda: node.stats()["linefile"]["boiler-1"]["lines"] == 5, what="stats")
        assert node.stats()["linefile"] == {"boiler-1": {"lines": 5, "accepted": 3, "errors": 2}}
        text = node.metrics_text()
        assert 'edgeloop_node_connector_accepted_total{node="edge-lf",connector="linefile",source="boiler-1"} 3' \
            in text, text
        # a service it cannot carry out: the node's refusal, a dead letter
        node.actuator.put({"kind": "service", "device": "boiler-1", "service": "reset", "args": {}})
        wait_for(lambda: any("binds no action for service 'reset'" in d["reason"]
                             for d in node.dead_letters.recent), what="the refused service")
    finally:
        node.stop()


def test_a_plugin_connector_checks_its_bindings_naming_file_line_device_and_field(tmp_path, linefile):
    products, _ = write_catalog(tmp_path, PRODUCTS)
    cases = [
        ("    path: 5\n", "path", "expected the path of the file to follow"),
        ("    path: b.jsonl\n    every: often\n", "every", "expected a duration"),
        ("    path: b.jsonl\n    mapping: {pressure: p}\n", "mapping.pressure", "no property 'pressure'"),
        ("    path: b.jsonl\n    paht: c.jsonl\n", "paht", "unknown key 'paht' for a linefile device"),
        ("    path: b.jsonl\n    services: {reset: {}}\n", "services.reset", "a linefile device cannot carry out services"),
    ]
    for options, field, says in cases:
        devices = tmp_path / "devices.yaml"
        devices.write_text("devices:\n  - id: boiler-2\n    product: heater\n    connector: linefile\n" + options)
        with pytest.raises(SpecError) as err:
            load_catalog([products], [devices])
        key = field.split(".")[-1]
        line = next(i for i, text in enumerate(devices.read_text().splitlines(), 1) if f"{key}:" in text)
        assert str(err.value).startswith(f"{devices}:{line}, device 'boiler-2', field '{field}': "), str(err.value)
        assert says in str(err.value), str(err.value)
    err = pytest.raises(SpecError, load_catalog, [products], [], devices_data=[
        ("d.yaml", {"devices": [{"id": "x", "product": "heater", "connector": "linefile", "paht": "a"}]})]).value
    assert "linefile takes: path, every, mapping, ts_field, ts_unit" in str(err)


def test_unknown_connectors_are_refused_with_the_registered_ones():
    with pytest.raises(SpecError) as err:
        lookup("zigbee")
    assert err.value.problem == "unknown connector 'zigbee'"
    assert err.value.hint == "one of " + ", ".join(names()) and names()[:len(BUILTIN)] == list(BUILTIN)


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_builtin_is_a_documented_connector_with_its_schema(name):
    cls = lookup(name)
    assert issubclass(cls, Connector) and cls.name == name and cls.__doc__
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in cls.options.items())
    assert cls.__module__ == f"edge_runtime.connectors.{BUILTIN[name].split(':')[0]}"


def test_the_registry_refuses_what_is_not_a_connector_or_takes_a_name():
    class Mqtt2(Connector):
        """A second mqtt."""

        name = "mqtt"

    class Nameless(Connector):
        """No name."""

    with pytest.raises(TypeError, match="taken"):
        register(Mqtt2)
    with pytest.raises(TypeError, match="no connector name"):
        register(Nameless)
    with pytest.raises(TypeError, match="not a Connector"):
        register(dict)  # type: ignore[arg-type]
