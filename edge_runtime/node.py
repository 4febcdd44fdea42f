"""An edge node: one process that binds devices, runs pipeline instances and publishes results.

``edgeloop node run --config node.yaml``::

    node: edge-1
    broker: {host: 127.0.0.1, port: 1883}
    store: {path: var/edge-1.db, retention: 7d, max_rows: 1000000}
    products: [products.yaml]          # paths relative to this file
    devices: [devices.yaml]
    pipelines:
      - {instance: overheat, pipeline: pipelines/overheat.yaml, devices: [pump-1, pump-2]}
      - {instance: overheat-strict, pipeline: pipelines/overheat.yaml, params: {hot_c: 70}}  # its own values
    limits: {max_payload: 65536}
    publish_telemetry: true
    hub: {url: http://hub:8080, token_file: edge-1.token}   # or token: ...; optional
    outbox: {path: var/edge-1-outbox.db, max_rows: 1000000, max_bytes: 1GiB-in-bytes, max_age: 7d}

Topics: ``edgeloop/<node>/devices/<device>/telemetry`` (records),
``edgeloop/<node>/pipelines/<instance>/out`` (pipeline outputs),
``edgeloop/<node>/alerts``, ``edgeloop/<node>/notifications``,
``edgeloop/<node>/stats`` (counters), ``edgeloop/<node>/status`` (online/offline, retained).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import jsonio
from .devices.bus import DeadLetterSink, DeviceBus
from .devices.fastpub import RawPublisher
from .devices.model import Catalog, load_catalog, substitute
from .devices.mqtt import QUEUE_LIMIT, BrokerConfig, MqttConnector, MqttLink
from .engine import Engine, Instance
from .operators.base import SpecError, parse_duration
from .pipeline import ParamValueError, Plan, load_pipeline, parse_pipeline, pinned_models
from .records import Batch, RecordError, without_media
from .store import LocalStore
from .uplink import Outbox, OutboxFull, Uplink
from .yamlspec import line_of, load_yaml

__all__ = ["NodeConfig", "InstanceConfig", "Node", "load_node_config"]

log = logging.getLogger("edgeloop.node")


@dataclass
class InstanceConfig:
    name: str
    plan: Plan
    devices: list[str]


@dataclass
class NodeConfig:
    node: str
    broker: BrokerConfig
    catalog: Catalog
    instances: list[InstanceConfig]
    store_path: str = ":memory:"
    retention: float = 7 * 86400
    max_rows: int = 1_000_000
    max_payload: int = 65536
    publish_telemetry: bool = True
    stats_interval: float = 5.0
    queue_size: int = 64
    file: str | None = None
    hub_url: str | None = None
    hub_token: str | None = None
    heartbeat: float = 10.0
    outbox_path: str | None = None       # None: no uplink (a node without a hub)
    outbox_max_rows: int = 1_000_000
    outbox_max_bytes: int = 1 << 30
    outbox_max_age: float = 7 * 86400
    ack_timeout: float = 5.0
    models_path: str | None = None       # the node-local model store; None: var/<node>-models
    trusted_keys: list[str] = field(default_factory=list)  # Ed25519 public keys (files or folders) for bundles
    output_qos: int = 1                  # pipeline outputs: 1 at least once (paho), 0 best effort (batched raw)
    http: Any = None                     # devices.http.HttpConfig: where pushing HTTP devices reach the node
    amqp_url: str | None = None          # the AMQP broker of amqp devices without their own url_env
    coap: Any = None                     # devices.coap.CoapConfig: where pushing CoAP devices reach the node
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None      # None: no /metrics server; 0: a free port
    metrics_token: str | None = None     # Bearer token /metrics asks for (None: loopback use, no token)


_NODE_KEYS = {"node", "broker", "store", "products", "devices", "pipelines", "limits", "publish_telemetry",
              "stats_interval", "hub", "outbox", "models", "metrics", "outputs", "http", "amqp", "coap"}


def _env_secret(section: dict[str, Any], key: str, name: str, file: str) -> str | None:
    """The secret in the environment variable ``section[key]`` names (None when the key is absent); a
    SpecError naming the field when the variable is not set."""
    var = section.get(key)
    if not var:
        return None
    value = os.environ.get(str(var))
    if not value:
        raise SpecError(f"environment variable {var!r} is not set", file=file, line=line_of(section, key),
                        field=f"{name}.{key}")
    return value


def load_node_config(path: str | Path) -> NodeConfig:
    """Load and cross-check a node config; SpecErrors name file, line and field."""
    file = str(path)
    data = load_yaml(path)
    base = Path(path).parent
    if not isinstance(data, dict):
        raise SpecError("a node config is a mapping (node, broker, products, devices, pipelines)", file=file)
    for key in data:
        if key not in _NODE_KEYS:
            raise SpecError(f"unknown key {key!r}", file=file, line=line_of(data, key), field=str(key),
                            hint="a node config has: " + ", ".join(sorted(_NODE_KEYS)))
    node = data.get("node")
    if not isinstance(node, str) or not node or "/" in node or "+" in node or "#" in node:
        raise SpecError("expected a node id without / + #", file=file, line=line_of(data, "node"), field="node")
    b = data.get("broker") or {}
    if not isinstance(b, dict):
        raise SpecError("expected {host, port, ...}", file=file, line=line_of(data, "broker"), field="broker")
    broker = BrokerConfig(host=b.get("host", "127.0.0.1"), port=b.get("port", 1883), username=b.get("username"),
                          password=b.get("password"), keepalive=b.get("keepalive", 30), tls=bool(b.get("tls", False)),
                          ca_certs=b.get("ca_certs"))
    if isinstance(broker.port, bool) or not isinstance(broker.port, int):
        raise SpecError(f"expected a port number, got {broker.port!r}", file=file, line=line_of(b, "port"),
                        field="broker.port")

    def paths(key: str) -> list[Path]:
        items = data.get(key) or []
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list):
            raise SpecError("expected a list of files", file=file, line=line_of(data, key), field=key)
        return [base / p for p in items]

    catalog = load_catalog(paths("products"), paths("devices"))
    instances = []
    names: set[str] = set()
    for i, entry in enumerate(data.get("pipelines") or []):
        line = line_of(data.get("pipelines"), i)
        if not isinstance(entry, dict) or "pipeline" not in entry:
            raise SpecError("expected {instance, pipeline, devices, params}", file=file, line=line,
                            field=f"pipelines[{i}]")
        plan = load_pipeline(base / entry["pipeline"])  # the pipeline's own problems: located in its file
        if "params" in entry:  # the instance's values: located here, with what they broke there
            pline = line_of(entry, "params") or line
            try:
                plan = plan.bind(entry["params"])
            except ParamValueError as exc:  # a value refused as such
                raise SpecError(exc.problem, file=file, line=pline, field=f"pipelines[{i}].{exc.field}",
                                hint=exc.hint) from None
            except SpecError as exc:  # a value a step refuses: where it broke, in the pipeline's file
                raise SpecError(f"these values break the pipeline: {exc}", file=file, line=pline,
                                field=f"pipelines[{i}].params") from None
        name = entry.get("instance", plan.name)
        if name in names:
            raise SpecError(f"instance name {name!r} is used twice", file=file, line=line,
                            field=f"pipelines[{i}].instance")
        names.add(name)
        devices = entry.get("devices")
        if devices is None:
            devices = catalog.devices_of(plan.product) if plan.product else list(catalog.devices)
        for d in devices:
            if d not in catalog.devices:
                raise SpecError(f"unknown device {d!r}", file=file, line=line, field=f"pipelines[{i}].devices",
                                hint="bound devices: " + ", ".join(catalog.devices))
            if plan.product and catalog.devices[d].product != plan.product:
                raise SpecError(f"device {d!r} is a {catalog.devices[d].product}, the pipeline needs a {plan.product}",
                                file=file, line=line, field=f"pipelines[{i}].devices")
        instances.append(InstanceConfig(name, plan, list(devices)))
    store = data.get("store") or {}
    limits = data.get("limits") or {}
    store_path = store.get("path", f"var/{node}.db")
    hub = data.get("hub") or {}
    outbox = data.get("outbox") or {}
    if not isinstance(hub, dict) or (hub and not isinstance(hub.get("url"), str)):
        raise SpecError("expected {url, token or token_file}", file=file, line=line_of(data, "hub"), field="hub")
    token = hub.get("token") or os.environ.get("EDGELOOP_NODE_TOKEN")
    if hub.get("token_file"):
        try:
            token = (base / hub["token_file"]).read_text().strip()
        except OSError as exc:
            raise SpecError(f"cannot read the token file: {exc.strerror}", file=file,
                            line=line_of(hub, "token_file"), field="hub.token_file") from None
    if hub and not token:
        raise SpecError("a hub needs this node's token (token, token_file or EDGELOOP_NODE_TOKEN)", file=file,
                        line=line_of(data, "hub"), field="hub.token", hint="edgeloop node create NAME prints one")
    outbox_path = outbox.get("path", f"var/{node}-outbox.db") if (hub or outbox) else None
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise SpecError("expected {store, trusted_keys}", file=file, line=line_of(data, "models"), field="models")
    keys = models.get("trusted_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise SpecError("expected a file or folder of public keys, or a list of them", file=file,
                        line=line_of(models, "trusted_keys"), field="models.trusted_keys")
    http = data.get("http") or {}
    if not isinstance(http, dict) or set(http) - {"host", "port", "token_env"}:
        raise SpecError("expected {host, port, token_env}", file=file, line=line_of(data, "http"), field="http",
                        hint="where HTTP devices POST /devices/<id>/telemetry, and the node's token for them")
    hport = http.get("port", 8090)
    if isinstance(hport, bool) or not isinstance(hport, int) or not 0 <= hport < 65536:
        raise SpecError(f"expected a port number (0: any free port), got {hport!r}", file=file,
                        line=line_of(http, "port"), field="http.port")
    htoken = _env_secret(http, "token_env", "http", file)
    from .devices.http import HttpConfig

    http_cfg = HttpConfig(host=str(http.get("host", "127.0.0.1")), port=hport, token=htoken)
    amqp = data.get("amqp") or {}
    if not isinstance(amqp, dict) or set(amqp) - {"url_env"}:
        raise SpecError("expected {url_env}", file=file, line=line_of(data, "amqp"), field="amqp",
                        hint="url_env: the environment variable holding amqp://user:password@host:5672/vhost")
    amqp_url = _env_secret(amqp, "url_env", "amqp", file)
    coap = data.get("coap") or {}
    if not isinstance(coap, dict) or set(coap) - {"host", "port", "token_env"}:
        raise SpecError("expected {host, port, token_env}", file=file, line=line_of(data, "coap"), field="coap",
                        hint="where CoAP devices POST /devices/<id>/telemetry, and the node's token for them")
    cport = coap.get("port", 5683)
    if isinstance(cport, bool) or not isinstance(cport, int) or not 0 < cport < 65536:
        raise SpecError(f"expected a UDP port number, got {cport!r}", file=file, line=line_of(coap, "port"),
                        field="coap.port")
    from .devices.coap import CoapConfig

    coap_cfg = CoapConfig(host=str(coap.get("host", "127.0.0.1")), port=cport,
                          token=_env_secret(coap, "token_env", "coap", file))
    outputs = data.get("outputs") or {}
    if not isinstance(outputs, dict) or set(outputs) - {"qos"} or outputs.get("qos", 1) not in (0, 1) \
            or isinstance(outputs.get("qos"), bool):
        raise SpecError(f"expected {{qos: 0 or 1}}, got {outputs!r}", file=file, line=line_of(data, "outputs"),
                        field="outputs", hint="qos 1 (the default): at least once to the broker; qos 0: best "
                        "effort, written in batches (the fastest)")
    metrics = data.get("metrics") or {}
    if not isinstance(metrics, dict) or set(metrics) - {"host", "port", "token", "token_env"}:
        raise SpecError("expected {host, port, token or token_env}", file=file, line=line_of(data, "metrics"),
                        field="metrics", hint="e.g. metrics: {port: 9464} serves GET /metrics for Prometheus")
    mport = metrics.get("port", 9464 if metrics else None)
    if mport is not None and (isinstance(mport, bool) or not isinstance(mport, int) or not 0 <= mport < 65536):
        raise SpecError(f"expected a port number (0: any free port), got {mport!r}", file=file,
                        line=line_of(metrics, "port"), field="metrics.port")
    mtoken = metrics.get("token")
    if metrics.get("token_env"):  # never fall back to serving without the token the config asks for
        mtoken = _env_secret(metrics, "token_env", "metrics", file)
    mhost = str(metrics.get("host", "127.0.0.1"))
    if metrics and not mtoken and mhost not in ("127.0.0.1", "localhost", "::1"):
        raise SpecError(f"metrics on {mhost} (beyond this machine) need a token", file=file,
                        line=line_of(metrics, "host"), field="metrics.token",
                        hint="token_env: EDGELOOP_METRICS_TOKEN, and Prometheus' authorization setting")
    extra = dict(
        metrics_host=mhost, metrics_port=mport, metrics_token=mtoken, output_qos=int(outputs.get("qos", 1)),
        http=http_cfg, amqp_url=amqp_url, coap=coap_cfg,
        hub_url=hub.get("url"), hub_token=token,
        heartbeat=parse_duration(hub.get("heartbeat", 10), "hub.heartbeat"),
        outbox_path=None if outbox_path is None else str(base / outbox_path),
        outbox_max_rows=int(outbox.get("max_rows", 1_000_000)), outbox_max_bytes=int(outbox.get("max_bytes", 1 << 30)),
        outbox_max_age=parse_duration(outbox.get("max_age", "7d"), "outbox.max_age"),
        ack_timeout=parse_duration(outbox.get("ack_timeout", 5), "outbox.ack_timeout"),
        models_path=str(base / models.get("store", f"var/{node}-models")), trusted_keys=[str(base / k) for k in keys])
    return NodeConfig(**extra,
        node=node, broker=broker, catalog=catalog, instances=instances,
        store_path=store_path if store_path == ":memory:" else str(base / store_path),
        retention=parse_duration(store.get("retention", "7d"), "store.retention"),
        max_rows=int(store.get("max_rows", 1_000_000)), max_payload=int(limits.get("max_payload", 65536)),
        publish_telemetry=bool(data.get("publish_telemetry", True)),
        stats_interval=parse_duration(data.get("stats_interval", 5), "stats_interval"),
        queue_size=int(limits.get("queue", 64)), file=file)


class NodeSinks:
    """Alerts and notifications: stored locally and published; device actions: queued for the actuator."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.alerts = 0
        self.notifications = 0
        self.uploads = 0
        self.images = 0
        self.image_bytes = 0

    def _publish(self, kind: str, item: dict[str, Any]) -> None:
        n = self.node
        if n.store is not None:
            n.store.add_message(kind, item)
        n.publisher.publish(f"edgeloop/{n.cfg.node}/{kind}s", jsonio.dumps({"node": n.cfg.node, **item}), qos=1)

    def _uplink(self, kind: str, items: list[dict[str, Any]], media: list[dict[str, Any]] | None = None) -> None:
        n = self.node
        if n.outbox is None:
            return
        out = []
        for it in items:
            d = n.desensitisers.get(it.get("instance"))
            out.append({**(d.item(it) if d is not None else it), "kind": kind})
        try:
            n.outbox.put(out, media=media or ())
        except OutboxFull:  # counted by the outbox (refused.disk_full.<kind>), logged, reported in heartbeats
            pass

    def alert(self, item: dict[str, Any]) -> None:
        self.alerts += 1
        data = item.pop("_image", None)  # already desensitised by the alert step (the pipeline's uplink blur)
        media = None
        if data is not None:
            mid = f"alert-{uuid.uuid4().hex}.jpg"
            item["image"] = {**item.get("image", {}), "media": mid, "size": len(data)}
            media = [{"id": mid, "data": data, "content_type": "image/jpeg"}]
            self.images += 1
            self.image_bytes += len(data)
        self._publish("alert", item)
        self._uplink("alert", [item], media)

    def notification(self, item: dict[str, Any]) -> None:
        self.notifications += 1
        self._publish("notification", item)
        self._uplink("notification", [item])

    def upload(self, items: list[dict[str, Any]]) -> None:
        self.uploads += len(items)
        media = []
        for item in items:
            data = item.pop("_image", None)  # already desensitised by the upload step
            if data is not None:
                mid = f"record-{uuid.uuid4().hex}.jpg"
                item["image"] = {**item.get("image", {}), "media": mid, "size": len(data)}
                media.append({"id": mid, "data": data, "content_type": "image/jpeg"})
                self.images += 1
                self.image_bytes += len(data)
        self._uplink("record", items, media)

    def device_output(self, action: dict[str, Any]) -> None:
        self.node.actions.put(action)


class Node:
    """Wires store, Device Bus, connectors, engine and publisher together."""

    def __init__(self, cfg: NodeConfig, *, models: Any = None) -> None:
        self.cfg = cfg
        self.models = models if models is not None else self._model_store(cfg)
        self.store = LocalStore(cfg.store_path, retention=cfg.retention, max_rows=cfg.max_rows, write_behind=0.05)
        self.dead_letters = DeadLetterSink(self.store)
        self.publisher = MqttLink(cfg.broker, client_id=f"{cfg.node}-out", status_topic=f"edgeloop/{cfg.node}/status")
        self.engine = Engine(self._on_output, queue_size=cfg.queue_size, state=self.store if self.store.durable else None)
        b = cfg.broker
        self.raw_outputs = RawPublisher(b.host, b.port, client_id=f"{cfg.node}-outputs", username=b.username,
                                        password=b.password, keepalive=b.keepalive, tls=b.tls, ca_certs=b.ca_certs) \
            if cfg.output_qos == 0 else None
        self._raw_lock = threading.Lock()
        self.telemetry = RawPublisher(b.host, b.port, client_id=f"{cfg.node}-telemetry", username=b.username,
                                      password=b.password, keepalive=b.keepalive, tls=b.tls, ca_certs=b.ca_certs) \
            if cfg.publish_telemetry else None
        from .devices.events import EventRules

        self.bus = DeviceBus(cfg.node, store=self.store, engine=self.engine, telemetry=self.telemetry,
                             dead_letters=self.dead_letters, events=EventRules(cfg.catalog))
        self.mqtt = MqttConnector(cfg.node, cfg.catalog, self.bus, cfg.broker, max_payload=cfg.max_payload)
        from .devices.modbus import ModbusConnector
        self.modbus = ModbusConnector(cfg.catalog, self.bus)
        self.http = None
        if any(b.connector == "http" for b in cfg.catalog.devices.values()):
            from .devices.http import HttpConnector

            self.http = HttpConnector(cfg.catalog, self.bus, cfg.http, max_payload=cfg.max_payload)
        self.amqp = None
        if any(b.connector == "amqp" for b in cfg.catalog.devices.values()):
            from .devices.amqp import AmqpConnector

            self.amqp = AmqpConnector(cfg.catalog, self.bus, default_url=cfg.amqp_url, max_payload=cfg.max_payload)
        self.coap = None
        if any(b.connector == "coap" for b in cfg.catalog.devices.values()):
            from .devices.coap import CoapConnector

            self.coap = CoapConnector(cfg.catalog, self.bus, cfg.coap, max_payload=cfg.max_payload)
        self.opcua = None
        if any(b.connector == "opcua" for b in cfg.catalog.devices.values()):
            from .devices.opcua import OpcuaConnector

            self.opcua = OpcuaConnector(cfg.catalog, self.bus)
        self.sinks = NodeSinks(self)
        self.actions: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10000)
        self.actions_done = 0
        self.outputs_published = 0
        self.instances: dict[str, Instance] = {}
        self.desensitisers: dict[str, Any] = {}
        self.managed: dict[str, str] = {}  # hub-assigned instance -> fingerprint of what runs
        self.managed_versions: dict[str, Any] = {}  # hub-assigned instance -> the hub's pipeline version it runs
        self.reconcile_errors: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.agent: Any = None
        if cfg.outbox_path is not None:
            self.outbox = Outbox(cfg.outbox_path, max_rows=cfg.outbox_max_rows, max_bytes=cfg.outbox_max_bytes,
                                 max_age=cfg.outbox_max_age)
            self.uplink_link = MqttLink(cfg.broker, client_id=f"{cfg.node}-uplink",
                                        on_message=lambda t, p, _ts: self.uplink.on_message(t, p))
            http = None
            if cfg.hub_url:
                from .hubclient import HubClient

                http = HubClient(cfg.hub_url, cfg.hub_token)
            self.uplink = Uplink(cfg.node, self.outbox, self.uplink_link, http=http, ack_timeout=cfg.ack_timeout,
                                 on_rejected=self._rejected)
        if cfg.hub_url:
            from .agent import Agent
            from .hubclient import HubClient

            self.agent = Agent(self, HubClient(cfg.hub_url, cfg.hub_token),
                               cache_path=Path(cfg.outbox_path or cfg.store_path).with_name(f"{cfg.node}-desired.json"),
                               interval=cfg.heartbeat)
        self.cameras: dict[str, Any] = {}  # device id -> VideoSource
        self.sources: dict[str, Any] = {}  # instance -> VideoSource of its file/stream/usb input
        self.frames_dropped: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = time.time()
        self.metrics_server: Any = None

    @staticmethod
    def _model_store(cfg: NodeConfig) -> Any:
        from .modelstore import ModelStore

        keys: dict[str, Any] = {}
        if cfg.trusted_keys:
            from .signing import load_public_keys

            keys = load_public_keys(cfg.trusted_keys)
        client = None
        if cfg.hub_url:
            from .hubclient import HubClient

            client = HubClient(cfg.hub_url, cfg.hub_token, timeout=60.0)
        return ModelStore(cfg.models_path or f"var/{cfg.node}-models", keys, client=client)

    def _on_output(self, instance: Instance, batch: Batch) -> None:
        topic = f"edgeloop/{self.cfg.node}/pipelines/{instance.name}/out"
        records = map(without_media, batch.to_records())  # frames and crops stay on the node
        if self.raw_outputs is not None:  # qos 0: the whole batch in one write
            with self._raw_lock:
                self.outputs_published += self.raw_outputs.publish_many((topic, jsonio.dumps(r)) for r in records)
            return
        for rec in records:
            if self.publisher.pending() > QUEUE_LIMIT and self.publisher.connected.is_set():
                self.publisher.wait_room()  # the broker is behind: the pipeline waits rather than drop outputs
            self.publisher.publish(topic, jsonio.dumps(rec), qos=1)
            self.outputs_published += 1

    def start(self) -> None:
        self.publisher.start()
        if self.uplink is not None:
            self.uplink_link.start()
            self.uplink.start()
        self.bus.start()
        if hasattr(self.models, "restore"):
            for name, err in self.models.restore().items():
                log.error("model %s: %s", name, err)
        for ic in self.cfg.instances:  # what is installed now; the agent's first reconcile downloads the rest
            for name, version, err, _ in self._pin_models(ic.plan, download=self.agent is None):
                log.warning("instance %s: model %s:%s is not served yet: %s", ic.name, name, version, err)
            self.add_instance(ic)
        if self.agent is not None:
            self.agent.apply_cached()
            self.agent.start()
        self.mqtt.start()
        self.modbus.start()
        if self.http is not None:
            self.http.start()
        if self.amqp is not None:
            self.amqp.start()
        if self.coap is not None:
            self.coap.start()
        if self.opcua is not None:
            self.opcua.start()
        for b in self.cfg.catalog.devices.values():
            if b.connector == "video":
                self._start_camera(b)
        if self.cfg.metrics_port is not None:
            from .metrics import MetricsServer

            self.metrics_server = MetricsServer(self.metrics_text, self.cfg.metrics_host, self.cfg.metrics_port,
                                                token=self.cfg.metrics_token).start()
            log.info("metrics on http://%s:%d/metrics", self.cfg.metrics_host, self.metrics_server.port)
        for target, name in ((self._actuate, "actuator"), (self._report, "stats")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    # -- video: cameras bound to products, and pipelines that start from a video source ----------
    def _start_camera(self, b: Any) -> None:
        from .devices.video import VideoSource, parse_source
        from .operators.video_inputs import frames_batch

        opts = {k: v for k, v in b.options.items() if k != "property"}
        if isinstance(opts.get("file"), str) and b.file and not Path(opts["file"]).is_absolute():
            opts["file"] = str(Path(b.file).parent / opts["file"])  # relative to the devices file
        prop, product = b.options["property"], b.product
        dropped = self.frames_dropped
        spec = parse_source(opts, f"device '{b.id}'")

        def on_frame(frame: Any, ts: float, index: int) -> None:
            batch = frames_batch(b.id, product, [(frame, ts)], prop, [index])
            if not spec.live:
                self.engine.submit(batch)  # a file waits for the pipelines: nothing lost
            elif self.engine.offer(batch):
                dropped[b.id] = dropped.get(b.id, 0) + 1  # a pipeline was behind: live video drops, never waits

        self.cameras[b.id] = VideoSource(b.id, spec, on_frame).start()

    def _start_source(self, inst: Instance) -> None:
        """A pipeline whose first step is file_input/stream_input/usb_camera_input: feed it its video."""
        from .devices.video import VideoSource
        from .operators.video_inputs import frames_batch

        op = inst.ops[0]
        device = op.device or inst.name
        live = op.video.live

        def on_frame(frame: Any, ts: float, index: int) -> None:
            # a file waits for the pipeline (nothing lost); live video drops what the pipeline cannot take
            if not self.engine.submit_to(inst.name, frames_batch(device, None, [(frame, ts)], op.output, [index]),
                                         block=not live, timeout=None if not live else 0):
                self.frames_dropped[device] = self.frames_dropped.get(device, 0) + 1

        self.sources[inst.name] = VideoSource(f"{inst.name}:{device}", op.video, on_frame).start()

    def add_instance(self, ic: InstanceConfig) -> None:
        inst = Instance(ic.name, ic.plan, devices=ic.devices, sinks=self.sinks, models=self.models,
                        store=self.store, dead_letters=self.dead_letters)
        with self.lock:
            self.desensitisers[ic.name] = inst.desensitiser
            self.instances[ic.name] = inst
            self.engine.start(inst)
            from .operators.video_inputs import VideoInput

            if inst.ops and isinstance(inst.ops[0], VideoInput):
                self._start_source(inst)

    def _pin_models(self, plan: Any, *, download: bool = True) -> list[tuple[str, str, str, bool]]:
        """Install and load the model versions ``plan`` pins (``apply_model: {model: name:version}``), from
        this node's store or (``download``) the hub's warehouse. Returns ``(name, version, error, retry)``
        for those that fail; ``retry``: the failure may pass (the hub away), and the agent asks again."""
        failed = []
        if hasattr(self.models, "pin"):
            from .modelstore import InstallError

            for name, version in pinned_models(plan):
                try:
                    self.models.pin(name, version, download=download)
                except InstallError as exc:
                    failed.append((name, version, str(exc), exc.retry))
        return failed

    def remove_instance(self, name: str) -> None:
        with self.lock:
            src = self.sources.pop(name, None)
            if src is not None:
                src.stop()
            self.engine.stop(name)
            self.instances.pop(name, None)
            self.desensitisers.pop(name, None)

    # -- desired state from the hub --------------------------------------------------------
    def reconcile(self, desired: dict[str, Any]) -> list[dict[str, Any]]:
        """Start, replace and stop hub-assigned instances to match ``desired``; others are not touched.

        An instance that does not validate here (unknown device, product mismatch, params) or fails to
        start is not started and is reported in heartbeats (with its pipeline and version); if an earlier
        version of it runs, that one keeps running. The rest go ahead.
        """
        errors: list[dict[str, Any]] = []
        if hasattr(self.models, "retry"):
            self.models.retry = False  # set again by an install below that may pass later (the hub away)
        if desired.get("models") and hasattr(self.models, "reconcile"):  # models first: pipelines need them
            errors += [{"model": n, "error": e} for n, e in self.models.reconcile(desired["models"]).items()]
        local = {ic.name for ic in self.cfg.instances}
        for p in desired.get("products") or []:
            if p.get("name") not in self.cfg.catalog.products:
                try:
                    cat = load_catalog([], products_data=[(f"hub:product {p.get('name')}", p.get("spec"))])
                    self.cfg.catalog.products.update(cat.products)
                except SpecError as exc:
                    errors.append({"product": p.get("name"), "error": str(exc)})
        wanted: dict[str, tuple[str, InstanceConfig, Any]] = {}
        for entry in desired.get("instances") or []:
            name = entry.get("instance")
            try:
                if name in local:
                    raise SpecError(f"instance {name!r} is defined in the node's own config; rename one")
                plan = parse_pipeline(entry["spec"], file=f"hub:{entry.get('pipeline')}@v{entry.get('version')}",
                                      params=entry.get("params"))
                devices = entry.get("devices")
                if devices is None:
                    devices = self.cfg.catalog.devices_of(plan.product) if plan.product else list(self.cfg.catalog.devices)
                for d in devices:
                    b = self.cfg.catalog.devices.get(d)
                    if b is None:
                        raise SpecError(f"device {d!r} is not bound on this node")
                    if plan.product and b.product != plan.product:
                        raise SpecError(f"device {d!r} is a {b.product}, the pipeline needs a {plan.product}")
                fp = jsonio.dumps([entry.get("pipeline"), entry.get("version"), entry["spec"], sorted(devices),
                                   entry.get("params")]).decode()
                unpinned = self._pin_models(plan) if self.managed.get(name) != fp else []
                if unpinned:  # not started without its model: what runs keeps running, the hub hears why
                    errors.append({"instance": name, "pipeline": entry.get("pipeline"), "version": entry.get("version"),
                                   "error": "; ".join(f"model {n}:{v} cannot be served here: {e}"
                                                      for n, v, e, _ in unpinned),
                                   # the hub away: pending, not a refusal (a rollout does not fail on it)
                                   **({"retry": True} if all(r for *_, r in unpinned) else {})})
                    continue
                wanted[name] = (fp, InstanceConfig(name, plan, list(devices)), entry.get("version"))
            except (SpecError, KeyError, TypeError) as exc:  # named with the version: a rollout's canary check
                errors.append({"instance": name, "pipeline": entry.get("pipeline"), "version": entry.get("version"),
                               "error": str(exc)})
        for ic in self.cfg.instances:  # the node's own instances: pins not installed at start, downloaded now
            for n, v, e, _ in self._pin_models(ic.plan):
                errors.append({"instance": ic.name, "model": f"{n}:{v}", "error": f"cannot be served here: {e}"})
        refused = {e["instance"] for e in errors if "instance" in e and "model" not in e}
        with self.lock:
            for name in list(self.managed):
                if name in refused:  # a new version or binding that does not fit: what runs keeps running
                    continue
                if name not in wanted or wanted[name][0] != self.managed[name]:
                    self.remove_instance(name)
                    del self.managed[name]
                    self.managed_versions.pop(name, None)
                    log.info("pipeline instance %s stopped", name)
            for name, (fp, ic, version) in wanted.items():
                if name not in self.managed:
                    try:
                        self.add_instance(ic)
                    except Exception as exc:  # an operator that fails to start: reported like a spec error
                        self.remove_instance(name)
                        errors.append({"instance": name, "pipeline": ic.plan.name, "version": version,
                                       "error": f"failed to start: {exc}"})
                        continue
                    self.managed[name] = fp
                    self.managed_versions[name] = version
                    log.info("pipeline instance %s started (%s v%s)", name, ic.plan.name, version)
            self.reconcile_errors = errors
            if hasattr(self.models, "unpin"):  # versions no running instance pins any more leave memory
                self.models.unpin({p for inst in self.instances.values() for p in pinned_models(inst.plan)})
        for e in errors:
            log.error("desired state: %s", e)
        return errors

    def heartbeat(self) -> dict[str, Any]:
        """What the agent reports: instances, counters, queue depths, the outbox."""
        with self.lock:
            stats = {s["instance"]: s for s in self.engine.stats()}
            instances = [{"instance": name, "pipeline": inst.plan.name, "source": "hub" if name in self.managed else "local",
                          **({"version": self.managed_versions.get(name)} if name in self.managed else {}),
                          "outputs": inst.outputs, "queue": stats.get(name, {}).get("queue", 0),
                          "processed": stats.get(name, {}).get("processed", 0)}
                         for name, inst in self.instances.items()]
        return {"instances": instances, "models": self.models.status() if hasattr(self.models, "status") else {},
                "counters": {"records": self.bus.records_in, "dead_letters": self.dead_letters.total,
                             "alerts": self.sinks.alerts, "notifications": self.sinks.notifications,
                             "uploads": self.sinks.uploads, "actions": self.actions_done,
                             "mqtt_received": self.mqtt.received},
                "queues": self.engine.queue_depths(),
                "outbox": self.uplink.stats() if self.uplink is not None else {},
                "video": {**{d: {**v.stats(), "dropped": self.frames_dropped.get(d, 0)} for d, v in self.cameras.items()},
                          **{f"{i}:source": {**v.stats(), "dropped": self.frames_dropped.get(v.name.split(":", 1)[1], 0)}
                             for i, v in self.sources.items()}},
                "errors": list(self.reconcile_errors)}

    def _rejected(self, rej: dict[str, Any], body: bytes | None) -> None:
        self.dead_letters.add(source="uplink/hub", reason=str(rej.get("reason")), raw=body)

    def stop(self) -> None:
        """Stop in order: no new input, drain the bus and pipelines, then publish the last stats."""
        self._stop.set()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.agent is not None:
            self.agent.stop()
        for src in [*self.cameras.values(), *self.sources.values()]:
            src.stop()
        self.mqtt.stop()
        self.modbus.stop()
        if self.http is not None:
            self.http.stop()
        if self.amqp is not None:
            self.amqp.stop()
        if self.coap is not None:
            self.coap.stop()
        if self.opcua is not None:
            self.opcua.stop()
        self.bus.wait_idle(10)
        self.bus.stop()
        self.engine.stop_all()
        self.actions.put(None)
        for t in self._threads:
            t.join(10)
        self.dead_letters.flush()
        self._publish_stats()
        if self.telemetry is not None:
            self.telemetry.close()
        if self.raw_outputs is not None:
            self.raw_outputs.close()
        self.publisher.stop()
        if self.uplink is not None:
            self.uplink.stop()
            self.uplink_link.stop()
            self.outbox.close()
        self.store.close()

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""
        from .logs import setup_logging

        setup_logging()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        log.info("node %s running: %d devices, %d pipeline instances", self.cfg.node, len(self.cfg.catalog.devices),
                 len(self.instances))
        while not self._stop.wait(0.5):
            pass
        log.info("node %s stopping", self.cfg.node)
        self.stop()
        log.info("node %s stopped", self.cfg.node)

    # -- device actions ----------------------------------------------------------------
    def _actuate(self) -> None:
        while True:
            action = self.actions.get()
            if action is None:
                return
            try:
                self.act(action)
                self.actions_done += 1
            except RecordError as exc:
                self.dead_letters.add(source=f"device_output/{action.get('device')}", reason=exc.reason,
                                      record=action, device=action.get("device"))
            except Exception as exc:  # a connector's bug must not stop every later action
                log.exception("device_output %s failed", action.get("device"))
                self.dead_letters.add(source=f"device_output/{action.get('device')}",
                                      reason=f"device_output failed: {type(exc).__name__}: {exc}", record=action,
                                      device=action.get("device"))

    def act(self, action: dict[str, Any]) -> None:
        """Carry out a device_output action through the target device's connector."""
        device = action["device"]
        binding = self.cfg.catalog.devices.get(device)
        if binding is None:
            raise RecordError(f"unknown device {device!r}")
        product = self.cfg.catalog.products[binding.product]
        if action["kind"] == "service":
            service = product.services.get(action["service"])
            if service is None:
                raise RecordError(f"product '{product.name}' has no service {action['service']!r}")
            args = {}
            for name, spec in service.args.items():
                if name not in action["args"]:
                    raise RecordError(f"service {service.name} needs argument {name!r}")
                args[name] = spec.check(action["args"][name])
            how = binding.services.get(service.name)
            self._call_service(binding, service.name, args, how)
            return
        values = {k: product.properties[k].check(v) if k in product.properties else v
                  for k, v in action["values"].items()}
        for k in values:
            if k not in product.properties:
                raise RecordError(f"product '{product.name}' has no property {k!r}")
        if binding.connector == "modbus":
            for prop, value in values.items():
                self.modbus.devices[device].write(prop, value)
        elif binding.connector == "opcua":
            self.opcua.write(device, values)
        elif binding.connector == "coap" and binding.options.get("uri"):
            self.coap.call(device, "PUT", binding.options["uri"], values)
        elif binding.connector == "mqtt":
            topic = binding.options.get("command_topic") or binding.options["topic"] + "/set"
            self.publisher.publish(topic, jsonio.dumps({"set": values}), qos=1)
        else:
            raise RecordError(f"device {device} ({binding.connector}) cannot be set: bind a service instead")

    def _call_service(self, binding: Any, service: str, args: dict[str, Any], how: dict[str, Any] | None) -> None:
        """A product service through the device's protocol: an MQTT command, Modbus writes, an OPC UA method
        call, an HTTP or a CoAP request."""
        device, connector = binding.id, binding.connector
        if connector == "mqtt":
            topic = (how or {}).get("topic") or binding.options.get("command_topic") or binding.options["topic"] + "/cmd"
            payload = {"service": service, "args": args, **((how or {}).get("payload") or {})}
            self.publisher.publish(topic, jsonio.dumps(substitute(payload, args)), qos=1)
            return
        if not how:
            raise RecordError(f"device {device} ({connector}) binds no action for service {service!r}")
        if connector == "modbus":
            for prop, value in substitute(how["write"], args).items():
                self.modbus.devices[device].write(prop, value)
        elif connector == "opcua":
            self.opcua.call(device, service, args)
        elif connector == "coap":
            payload = substitute(how["payload"], args) if "payload" in how else args
            self.coap.call(device, how.get("method", "POST"), how.get("uri") or how["path"], payload)
        elif connector == "video" and binding.options.get("onvif"):
            from .devices.onvif import ptz

            ptz(binding.options["onvif"], substitute(how, args))
        elif connector == "http":
            from .devices.http import call_service

            payload = substitute(how["payload"], args) if "payload" in how else args
            call_service(binding, how, payload)
        else:
            raise RecordError(f"a {connector} device cannot carry out services")

    # -- stats --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "node": self.cfg.node, "uptime": round(time.time() - self.started_at, 3),
            "records": self.bus.records_in,
            "telemetry": None if self.telemetry is None else {"sent": self.telemetry.sent,
                                                              "dropped": self.telemetry.dropped},
            "mqtt": {"received": self.mqtt.received, "accepted": self.mqtt.accepted,
                                                      "connected": self.mqtt.link.connected.is_set(),
                                                      "reconnects": max(0, self.mqtt.link.connects - 1)},
            "modbus": {d: {"polls": m.polls, "errors": m.errors, "connected": m.connected}
                       for d, m in self.modbus.devices.items()},
            "http": None if self.http is None else self.http.stats(),
            "amqp": None if self.amqp is None else self.amqp.stats(),
            "coap": None if self.coap is None else self.coap.stats(),
            "opcua": None if self.opcua is None else self.opcua.stats(),
            "dead_letters": {"total": self.dead_letters.total, "by_kind": dict(self.dead_letters.counts)},
            "alerts": self.sinks.alerts, "notifications": self.sinks.notifications, "actions": self.actions_done,
            "outputs": self.outputs_published, "outputs_dropped": self.publisher.dropped,
            "queues": self.engine.queue_depths(),
            "pipelines": self.engine.stats(),
        }

    def metrics_text(self) -> str:
        """Prometheus text for ``/metrics``: :meth:`stats`, plus the outbox, models and video sources."""
        from .metrics import node_families, render

        return render(node_families(self.stats(), self.heartbeat()))

    def _publish_stats(self) -> None:
        try:
            self.publisher.publish(f"edgeloop/{self.cfg.node}/stats", jsonio.dumps(self.stats()), qos=0, retain=True)
        except Exception:  # pragma: no cover - stats are best effort
            log.exception("stats publish failed")

    def _report(self) -> None:
        while not self._stop.wait(self.cfg.stats_interval):
            self._publish_stats()
