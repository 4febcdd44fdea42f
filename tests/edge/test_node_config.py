"""node.yaml as declarative sections: one set of defaults, typos refused in every section with file:line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from edge_runtime.connectors.amqp import AmqpConfig
from edge_runtime.connectors.coap import CoapConfig
from edge_runtime.connectors.http import HttpConfig
from edge_runtime.mqtt import BrokerConfig
from edge_runtime.node import load_node_config
from edge_runtime.node.config import Limits, ModelSettings, OutboxSettings, OutputSettings, StoreSettings
from edge_runtime.operators.base import SpecError
from tests.kit import ROOT

PRODUCTS = "products:\n  - name: pump\n    properties:\n      t: {type: number}\n"
DEVICES = "devices:\n  - {id: p1, product: pump, connector: mqtt, topic: plant/p1}\n"
PIPELINE = "name: watch\nproduct: pump\nsteps:\n  - device_input: {}\n"
BASE = """node: edge-c
products: [products.yaml]
devices: [devices.yaml]
pipelines:
  - {instance: watch, pipeline: watch.yaml}
"""


def write(tmp_path: Path, extra: str = "", base: str = BASE) -> Path:
    (tmp_path / "products.yaml").write_text(PRODUCTS)
    (tmp_path / "devices.yaml").write_text(DEVICES)
    (tmp_path / "watch.yaml").write_text(PIPELINE)
    path = tmp_path / "node.yaml"
    path.write_text(base + extra)
    return path


def refused(path: Path) -> SpecError:
    with pytest.raises(SpecError) as err:
        load_node_config(path)
    return err.value


def line_with(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# (section as written in node.yaml, the field its typo is reported as, the keys the hint lists)
SECTIONS = [
    ("store:\n  path: s.db\n  retension: 1d\n", "store.retension", "max_rows, path, retention"),
    ("limits:\n  max_payload: 100\n  max_payloads: 100\n", "limits.max_payloads", "max_payload, queue"),
    ("outbox:\n  max_row: 5\n", "outbox.max_row", "ack_timeout, max_age, max_bytes, max_rows, path"),
    ("broker:\n  host: 127.0.0.1\n  prot: 1884\n", "broker.prot", "ca_certs, host, keepalive, password, port, tls"),
    ("hub:\n  url: http://hub\n  token: t\n  heartbeet: 2s\n", "hub.heartbeet", "heartbeat, token, token_file, url"),
    ("models:\n  stores: m\n", "models.stores", "store, trusted_keys"),
    ("metrics:\n  port: 0\n  tokn: x\n", "metrics.tokn", "host, port, token, token_env"),
    ("outputs:\n  qos: 0\n  retain: true\n", "outputs.retain", "qos"),
    ("http:\n  port: 0\n  host_name: x\n", "http.host_name", "host, port, token_env"),
    ("amqp:\n  url: amqp://x\n", "amqp.url", "url_env"),
    ("coap:\n  port: 5683\n  tokenenv: X\n", "coap.tokenenv", "host, port, token_env"),
    ("publish_telemetri: false\n", "publish_telemetri", "publish_telemetry"),
]


@pytest.mark.parametrize(("section", "field", "keys"), SECTIONS, ids=[s[1] for s in SECTIONS])
def test_a_typo_in_any_section_is_refused_naming_file_line_field_and_the_keys(tmp_path, section, field, keys):
    path = write(tmp_path, section)
    err = refused(path)
    typo = field.rsplit(".", 1)[-1]
    assert err.file == str(path) and err.line == line_with(path, typo + ":"), str(err)
    assert err.field == field and err.problem == f"unknown key {typo!r}", str(err)
    assert keys in (err.hint or ""), err.hint
    assert str(err).startswith(f"{path}:{err.line}, field '{field}': unknown key"), str(err)


def test_a_typo_in_a_pipeline_entry_is_refused(tmp_path):
    path = write(tmp_path, base=BASE.replace("pipeline: watch.yaml}", "pipeline: watch.yaml, device: [p1]}"))
    err = refused(path)
    assert (err.line, err.field) == (line_with(path, "device: [p1]"), "pipelines[0].device"), str(err)
    assert "devices, instance, params, pipeline" in (err.hint or "")


def test_the_top_level_hint_names_the_sections_connectors_declare(tmp_path):
    err = refused(write(tmp_path, "brokers: {host: h}\n"))
    assert err.field == "brokers" and "a node config has:" in (err.hint or "")
    for key in ("amqp", "broker", "coap", "http", "hub", "outbox", "pipelines", "store"):
        assert re.search(rf"\b{key}\b", err.hint or ""), err.hint


@pytest.mark.parametrize(("section", "field", "says"), [
    ("outbox: {max_rows: lots}\n", "outbox.max_rows", "expected a positive whole number, got 'lots'"),
    ("outbox: {max_bytes: -1}\n", "outbox.max_bytes", "expected a positive whole number, got -1"),
    ("outbox: {max_age: forever}\n", "outbox.max_age", "expected a duration"),
    ("store: {max_rows: 1.5}\n", "store.max_rows", "expected a positive whole number, got 1.5"),
    ("limits: {queue: true}\n", "limits.queue", "expected a positive whole number, got True"),
    ("broker: {port: 1883, keepalive: soon}\n", "broker.keepalive", "expected a positive whole number"),
    ("broker: {tls: maybe}\n", "broker.tls", "expected true or false, got 'maybe'"),
    ("publish_telemetry: sometimes\n", "publish_telemetry", "expected true or false"),
    ("stats_interval: 0\n", "stats_interval", "duration must be positive"),
    ("hub: {url: http://h, token: t, heartbeat: -2}\n", "hub.heartbeat", "duration must be positive"),
])
def test_a_value_that_does_not_convert_is_a_spec_error_naming_file_line_and_field(tmp_path, section, field, says):
    path = write(tmp_path, section)
    err = refused(path)
    assert (err.file, err.field) == (str(path), field) and says in err.problem, str(err)
    assert err.line == line_with(path, section.splitlines()[0][:8]), str(err)


def test_one_set_of_defaults_the_sections_hold(tmp_path):
    cfg = load_node_config(write(tmp_path))
    assert cfg.broker == BrokerConfig()
    assert (cfg.store.retention, cfg.store.max_rows) == (StoreSettings().retention, StoreSettings().max_rows)
    assert cfg.store.path == str(tmp_path / "var" / "edge-c.db")  # default path: var/<node>.db by the config
    assert cfg.limits == Limits() and cfg.outputs == OutputSettings() and cfg.outputs.qos == 1
    assert cfg.models.store == str(tmp_path / "var" / "edge-c-models") and cfg.models.trusted_keys == ()
    assert cfg.hub is None and cfg.outbox is None and cfg.metrics is None  # no hub, no uplink, no /metrics
    assert cfg.connectors == {}  # the connectors' sections: defaults made by the node from their classes
    assert (cfg.publish_telemetry, cfg.stats_interval) == (True, 5.0)
    assert [i.name for i in cfg.instances] == ["watch"] and cfg.instances[0].devices == ["p1"]
    assert ModelSettings().store is None


def test_written_sections_keep_their_values_and_fill_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("T_HTTP_TOKEN", "h-secret")
    monkeypatch.setenv("T_AMQP_URL", "amqp://u:p@rabbit/v")
    cfg = load_node_config(write(tmp_path, "hub: {url: 'http://hub:8080', token: tok}\noutbox: {max_rows: 5}\n"
                                           "http: {port: 0, token_env: T_HTTP_TOKEN}\namqp: {url_env: T_AMQP_URL}\n"
                                           "coap: {host: 10.0.0.5}\nmetrics: {port: 0}\n"))
    assert cfg.hub is not None and (cfg.hub.url, cfg.hub.token, cfg.hub.heartbeat) == ("http://hub:8080", "tok", 10.0)
    assert cfg.outbox == OutboxSettings(path=str(tmp_path / "var" / "edge-c-outbox.db"), max_rows=5)
    assert cfg.connectors["http"] == HttpConfig(port=0, token="h-secret")
    assert cfg.connectors["amqp"] == AmqpConfig(url="amqp://u:p@rabbit/v")
    assert cfg.connectors["coap"] == CoapConfig(host="10.0.0.5")
    assert cfg.metrics is not None and (cfg.metrics.host, cfg.metrics.port, cfg.metrics.bearer) == ("127.0.0.1", 0, None)


def test_empty_optional_sections_are_as_if_absent(tmp_path):
    """As before: ``hub: {}`` is no hub, ``outbox: {}`` no uplink, ``metrics: {}`` no /metrics."""
    cfg = load_node_config(write(tmp_path, "hub: {}\noutbox: {}\nmetrics: {}\nstore:\nlimits: {}\n"))
    assert (cfg.hub, cfg.outbox, cfg.metrics) == (None, None, None) and cfg.limits == Limits()


@pytest.mark.parametrize("config", [ROOT / "apps" / "pump_monitoring" / "node.yaml"])
def test_the_shipped_configs_load_as_before(config):
    cfg = load_node_config(config)
    assert cfg.node == "edge-1" and cfg.store.retention == 86400.0 and cfg.stats_interval == 2.0
    assert {i.name for i in cfg.instances} == {"overheat", "emergency-stop"}
    assert yaml.safe_load(config.read_text())["limits"] == {"max_payload": cfg.limits.max_payload}
