"""node.yaml: the node's configuration as declarative sections, with one set of defaults.

Every section is a frozen dataclass below (or the broker's, edge_runtime.mqtt.BrokerConfig, or a
connector's own: ``http:``, ``amqp:``, ``coap:``); its fields hold the defaults, the converters and what
each key is for. A key a section does not have is refused, naming the file, the line and the field, with
the keys the section has; so is a value that does not convert (``outbox: {max_rows: lots}``). Paths are
relative to the config file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..connectors.registry import connector_classes
from ..connectors.registry import lookup as lookup_connector
from ..devices.catalog import Catalog, load_catalog
from ..mqtt import BrokerConfig
from ..operators.base import SpecError
from ..pipeline import ParamValueError, Plan, load_pipeline
from ..sections import boolean, count, duration, env_secret, one_of, parse_section, setting, text, text_list
from ..sections import port as port_number
from ..yamlspec import line_of, load_yaml

__all__ = ["NodeConfig", "InstanceConfig", "load_node_config", "StoreSettings", "Limits", "HubSettings",
           "OutboxSettings", "ModelSettings", "MetricsSettings", "OutputSettings", "PipelineEntry"]

_NODE_ID = re.compile(r"^[^/+#]+$")
_LOCAL = ("127.0.0.1", "localhost", "::1")


def _node_id(value: Any) -> str:
    if not isinstance(value, str) or not _NODE_ID.match(value):
        raise SpecError("expected a node id without / + #")
    return value


def _files(value: Any) -> list[str]:
    try:
        return text_list(value)
    except SpecError:
        raise SpecError("expected a list of files") from None


def _keys(value: Any) -> list[str]:
    try:
        return text_list(value)
    except SpecError:
        raise SpecError("expected a file or folder of public keys, or a list of them") from None


def _devices(value: Any) -> list[str]:
    try:
        return text_list(value)
    except SpecError:
        raise SpecError("expected a list of device ids") from None


@dataclass(frozen=True)
class StoreSettings:
    """The node's local store of records, messages and dead letters."""

    path: str | None = setting(None, text, "the store's SQLite file (default var/<node>.db; :memory: for none)")
    retention: float = setting(7 * 86400.0, duration, "how long records are kept (7d)")
    max_rows: int = setting(1_000_000, count, "records kept at most")


@dataclass(frozen=True)
class Limits:
    """What the node takes in and holds."""

    max_payload: int = setting(65536, count, "the largest device message taken, in bytes")
    queue: int = setting(64, count, "micro-batches waiting per pipeline instance before the bus waits")


@dataclass(frozen=True)
class HubSettings:
    """The hub this node registers with (heartbeats, desired state, uplink)."""

    url: str | None = setting(None, text, "the hub's URL, http://hub:8080")
    token: str | None = setting(None, text, "this node's token (or token_file, or EDGELOOP_NODE_TOKEN)")
    token_file: str | None = setting(None, text, "a file holding this node's token")
    heartbeat: float = setting(10.0, duration, "how often the agent reports and asks for its desired state")


@dataclass(frozen=True)
class OutboxSettings:
    """The durable outbox of what goes to the hub."""

    path: str | None = setting(None, text, "the outbox's SQLite file (default var/<node>-outbox.db)")
    max_rows: int = setting(1_000_000, count, "items kept at most before the oldest are dropped")
    max_bytes: int = setting(1 << 30, count, "bytes kept at most before the oldest are dropped")
    max_age: float = setting(7 * 86400.0, duration, "how long an undelivered item is kept (7d)")
    ack_timeout: float = setting(5.0, duration, "how long the uplink waits for the hub's acknowledgement")


@dataclass(frozen=True)
class ModelSettings:
    """The node-local model store."""

    store: str | None = setting(None, text, "the model store's folder (default var/<node>-models)")
    trusted_keys: tuple[str, ...] = setting((), lambda v: tuple(_keys(v)),
                                            "Ed25519 public keys (files or folders) model bundles are signed with")
    drift_window: int = setting(2000, count, "rows a model's drift is measured over: the newest it scored "
                                             "(edge_runtime.drift)")
    drift_reference: str = setting("training", one_of("training", "first"),
                                   "what drift is measured against: the training data's profile, or the first "
                                   "window this node scored with the version (cameras, machines of their own)")


@dataclass(frozen=True)
class MetricsSettings:
    """GET /metrics for Prometheus, e.g. metrics: {port: 9464}."""

    host: str = setting("127.0.0.1", text, "the address /metrics is served on")
    port: int = setting(9464, port_number(zero="any free port"), "the TCP port (0: any free port)")
    token: str | None = setting(None, text, "the Bearer token /metrics asks for")
    #: the token from the environment variable ``token_env`` names (it must be set)
    token_from_env: str | None = setting(None, env_secret, "environment variable holding the token",
                                         key="token_env")

    @property
    def bearer(self) -> str | None:
        """The token /metrics asks for (token_env's when given: never served without the token asked for)."""
        return self.token_from_env or self.token


@dataclass(frozen=True)
class OutputSettings:
    """How pipeline outputs are published."""

    qos: int = setting(1, one_of(0, 1), "qos 1 (the default): at least once to the broker; qos 0: best effort, "
                       "written in batches (the fastest)")


@dataclass(frozen=True)
class PipelineEntry:
    """A pipeline instance the node runs from its own config."""

    instance: str | None = setting(None, text, "the instance's name (default: the pipeline's)")
    pipeline: str | None = setting(None, text, "the pipeline file")
    devices: tuple[str, ...] | None = setting(None, lambda v: tuple(_devices(v)),
                                              "the bound devices it runs on (default: all of its product)")
    params: Any = setting(None, None, "values for the pipeline's parameters")


@dataclass(frozen=True)
class NodeFile:
    """A node config (node, broker, products, devices, pipelines, ...)."""

    node: str = setting("", _node_id)
    broker: BrokerConfig = setting(BrokerConfig(), section=BrokerConfig)
    store: StoreSettings = setting(StoreSettings(), section=StoreSettings)
    products: tuple[str, ...] = setting((), lambda v: tuple(_files(v)), "product files, relative to this one")
    devices: tuple[str, ...] = setting((), lambda v: tuple(_files(v)), "device binding files, relative to this one")
    pipelines: tuple[PipelineEntry, ...] = setting((), items=PipelineEntry)
    limits: Limits = setting(Limits(), section=Limits)
    publish_telemetry: bool = setting(True, boolean, "republish every record on its device's telemetry topic")
    stats_interval: float = setting(5.0, duration, "how often the node publishes its stats")
    hub: HubSettings | None = setting(None, section=HubSettings)
    outbox: OutboxSettings | None = setting(None, section=OutboxSettings)
    models: ModelSettings = setting(ModelSettings(), section=ModelSettings)
    metrics: MetricsSettings | None = setting(None, section=MetricsSettings)
    outputs: OutputSettings = setting(OutputSettings(), section=OutputSettings)


@dataclass
class InstanceConfig:
    name: str
    plan: Plan
    devices: list[str]


@dataclass(frozen=True, kw_only=True)
class NodeConfig(NodeFile):
    """A loaded node config: the sections (paths resolved, the hub's token read) and what they name."""

    catalog: Catalog
    instances: list[InstanceConfig]
    #: connector name -> its node.yaml section as written (a connector whose section is not written gets its
    #: settings class' defaults from the node)
    connectors: dict[str, Any]
    file: str | None = None


class _ConnectorSections:
    """The sections connectors declare at the top of node.yaml (``http:``, ``amqp:``, ``coap:``)."""

    def __init__(self, file: str, data: Any) -> None:
        self.file, self.data = file, data

    def keys(self) -> list[str]:
        return [cls.name for cls in connector_classes() if cls.settings is not None]

    def parser(self, key: str) -> Callable[[Any, str], Any] | None:
        try:
            cls = lookup_connector(key)
        except SpecError:
            return None
        settings = cls.settings
        if settings is None:
            return None
        return lambda value, fld: parse_section(settings, value, name=fld, file=self.file, parent=self.data)


def load_node_config(path: str | Path) -> NodeConfig:
    """Load and cross-check a node config; SpecErrors name file, line and field."""
    file = str(path)
    data = load_yaml(path)
    base = Path(path).parent
    if not isinstance(data, dict):
        raise SpecError("a node config is a mapping (node, broker, products, devices, pipelines)", file=file)
    sections: dict[str, Any] = {}
    doc = parse_section(NodeFile, data, name="", file=file, extra=_ConnectorSections(file, data), extras=sections)
    if not doc.node:
        raise SpecError("expected a node id without / + #", file=file, line=line_of(data, "node"), field="node")
    node = doc.node
    catalog = load_catalog([base / p for p in doc.products], [base / p for p in doc.devices])
    instances = _instances(doc, data, catalog, base, file)
    hub = doc.hub
    if hub is not None:
        hub = _hub(hub, data, base, file)
    outbox = doc.outbox
    if hub is not None or outbox is not None:
        outbox = outbox or OutboxSettings()
        outbox = replace(outbox, path=str(base / (outbox.path or f"var/{node}-outbox.db")))
    metrics = doc.metrics
    if metrics is not None and not metrics.bearer and metrics.host not in _LOCAL:
        raise SpecError(f"metrics on {metrics.host} (beyond this machine) need a token", file=file,
                        line=line_of(data.get("metrics"), "host"), field="metrics.token",
                        hint="token_env: EDGELOOP_METRICS_TOKEN, and Prometheus' authorization setting")
    store_path = doc.store.path or f"var/{node}.db"
    models = doc.models
    return NodeConfig(
        node=node, broker=doc.broker, products=doc.products, devices=doc.devices, pipelines=doc.pipelines,
        store=replace(doc.store, path=store_path if store_path == ":memory:" else str(base / store_path)),
        limits=doc.limits, publish_telemetry=doc.publish_telemetry, stats_interval=doc.stats_interval,
        hub=hub, outbox=outbox, metrics=metrics, outputs=doc.outputs,
        models=replace(models, store=str(base / (models.store or f"var/{node}-models")),
                       trusted_keys=tuple(str(base / k) for k in models.trusted_keys)),
        catalog=catalog, instances=instances, connectors=sections, file=file)


def _hub(hub: HubSettings, data: dict[str, Any], base: Path, file: str) -> HubSettings:
    raw = data.get("hub")
    if not hub.url:
        raise SpecError("expected {url, token or token_file}", file=file, line=line_of(data, "hub"), field="hub")
    token = hub.token or os.environ.get("EDGELOOP_NODE_TOKEN")
    if hub.token_file:
        try:
            token = (base / hub.token_file).read_text().strip()
        except OSError as exc:
            raise SpecError(f"cannot read the token file: {exc.strerror}", file=file,
                            line=line_of(raw, "token_file"), field="hub.token_file") from None
    if not token:
        raise SpecError("a hub needs this node's token (token, token_file or EDGELOOP_NODE_TOKEN)", file=file,
                        line=line_of(data, "hub"), field="hub.token", hint="edgeloop node create NAME prints one")
    return replace(hub, token=token)


def _instances(doc: NodeFile, data: dict[str, Any], catalog: Catalog, base: Path, file: str) -> list[InstanceConfig]:
    instances: list[InstanceConfig] = []
    names: set[str] = set()
    for i, entry in enumerate(doc.pipelines):
        raw = data["pipelines"][i]
        line = line_of(data.get("pipelines"), i)
        if entry.pipeline is None:
            raise SpecError("expected {instance, pipeline, devices, params}", file=file, line=line,
                            field=f"pipelines[{i}]")
        plan = load_pipeline(base / entry.pipeline)  # the pipeline's own problems: located in its file
        if "params" in raw:  # the instance's values: located here, with what they broke there
            pline = line_of(raw, "params") or line
            try:
                plan = plan.bind(raw["params"])
            except ParamValueError as exc:  # a value refused as such
                raise SpecError(exc.problem, file=file, line=pline, field=f"pipelines[{i}].{exc.field}",
                                hint=exc.hint) from None
            except SpecError as exc:  # a value a step refuses: where it broke, in the pipeline's file
                raise SpecError(f"these values break the pipeline: {exc}", file=file, line=pline,
                                field=f"pipelines[{i}].params") from None
        name = entry.instance or plan.name
        if name in names:
            raise SpecError(f"instance name {name!r} is used twice", file=file, line=line,
                            field=f"pipelines[{i}].instance")
        names.add(name)
        devices = list(entry.devices) if entry.devices is not None else \
            catalog.devices_of(plan.product) if plan.product else list(catalog.devices)
        for d in devices:
            if d not in catalog.devices:
                raise SpecError(f"unknown device {d!r}", file=file, line=line, field=f"pipelines[{i}].devices",
                                hint="bound devices: " + ", ".join(catalog.devices))
            if plan.product and catalog.devices[d].product != plan.product:
                raise SpecError(f"device {d!r} is a {catalog.devices[d].product}, the pipeline needs a {plan.product}",
                                file=file, line=line, field=f"pipelines[{i}].devices")
        instances.append(InstanceConfig(name, plan, devices))
    return instances

