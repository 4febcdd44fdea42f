"""The node: store, Device Bus, connectors, engine, sinks and uplink wired together, started and stopped in
order, and what it reports (stats on MQTT and /metrics, heartbeats to the hub)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import jsonio
from ..connectors.base import NO_STATS, Connector, NodeContext
from ..connectors.registry import BUILTIN, connector_classes
from ..connectors.registry import lookup as lookup_connector
from ..devices.bus import DeadLetterSink, DeviceBus
from ..engine import Engine
from ..instance import Instance
from ..modelprovider import ModelProvider, as_provider
from ..mqtt import QUEUE_LIMIT, BrokerConfig, MqttLink, RawPublisher
from ..outbox import Outbox
from ..pipeline import Plan, pinned_models
from ..records import Batch, without_media
from ..store import LocalStore
from ..uplink import Uplink
from .actuation import Actuator
from .config import InstanceConfig, NodeConfig
from .sinks import NodeSinks

if TYPE_CHECKING:
    from ..agent import Agent
    from ..connectors.video_source import VideoSource
    from ..metrics import MetricsServer

__all__ = ["Node"]

log = logging.getLogger("edgeloop.node")


def _raw_publisher(b: BrokerConfig, client_id: str) -> RawPublisher:
    return RawPublisher(b.host, b.port, client_id=client_id, username=b.username, password=b.password,
                        keepalive=b.keepalive, tls=b.tls, ca_certs=b.ca_certs)


class Node:
    """Wires store, Device Bus, connectors, engine and publisher together."""

    def __init__(self, cfg: NodeConfig, *, models: ModelProvider | Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.models: ModelProvider = as_provider(models) if models is not None else self._model_store(cfg)
        self.store = LocalStore(str(cfg.store.path), retention=cfg.store.retention, max_rows=cfg.store.max_rows,
                                write_behind=0.05)
        self.dead_letters = DeadLetterSink(self.store)
        self.publisher = MqttLink(cfg.broker, client_id=f"{cfg.node}-out", status_topic=f"edgeloop/{cfg.node}/status")
        self.engine = Engine(self._on_output, queue_size=cfg.limits.queue,
                             state=self.store if self.store.durable else None)  # operator state across a restart
        self.raw_outputs = _raw_publisher(cfg.broker, f"{cfg.node}-outputs") if cfg.outputs.qos == 0 else None
        self._raw_lock = threading.Lock()
        self.telemetry = _raw_publisher(cfg.broker, f"{cfg.node}-telemetry") if cfg.publish_telemetry else None
        from ..devices.events import EventRules

        self.bus = DeviceBus(cfg.node, store=self.store, engine=self.engine, telemetry=self.telemetry,
                             dead_letters=self.dead_letters, events=EventRules(cfg.catalog))
        #: connector name -> the connector running this node's devices of that protocol
        self.connectors: dict[str, Connector] = self._connectors()
        self.actuator = Actuator(cfg.catalog, self.connectors, self.dead_letters)
        self.outputs_published = 0
        self.instances: dict[str, Instance] = {}
        self.desensitisers: dict[str, Any] = {}
        self.lock = threading.RLock()
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        if cfg.outbox is not None:
            ob = cfg.outbox
            self.outbox = Outbox(str(ob.path), max_rows=ob.max_rows, max_bytes=ob.max_bytes, max_age=ob.max_age)
            self.uplink_link = MqttLink(cfg.broker, client_id=f"{cfg.node}-uplink", on_message=self._from_hub)
            self.uplink = Uplink(cfg.node, self.outbox, self.uplink_link, http=self._hub_client(),
                                 ack_timeout=ob.ack_timeout, on_rejected=self._rejected)
        self.sinks = NodeSinks(cfg.node, store=self.store, publisher=self.publisher, outbox=self.outbox,
                               desensitisers=self.desensitisers, actuator=self.actuator)
        self.agent: Agent | None = None
        if cfg.hub is not None:
            from ..agent import Agent

            cache = Path(str(cfg.outbox.path if cfg.outbox else cfg.store.path)).with_name(f"{cfg.node}-desired.json")
            self.agent = Agent(self, self._hub_client(), cache_path=cache, interval=cfg.hub.heartbeat)
        self.sources: dict[str, VideoSource] = {}  # instance -> VideoSource of its file/stream/usb input
        self.frames_dropped: dict[str, int] = {}  # device -> frames a pipeline source dropped (live, behind)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = time.time()
        self.metrics_server: MetricsServer | None = None

    def _hub_client(self) -> Any:
        hub = self.cfg.hub
        if hub is None:
            return None
        from ..hubclient import HubClient

        return HubClient(str(hub.url), hub.token)

    @staticmethod
    def _model_store(cfg: NodeConfig) -> ModelProvider:
        from ..modelstore import ModelStore

        keys: dict[str, Any] = {}
        if cfg.models.trusted_keys:
            from ..signing import load_public_keys

            keys = load_public_keys(list(cfg.models.trusted_keys))
        client = None
        if cfg.hub is not None:
            from ..hubclient import HubClient

            client = HubClient(str(cfg.hub.url), cfg.hub.token, timeout=60.0)
        return ModelStore(str(cfg.models.store), keys, client=client,
                          drift={"window": cfg.models.drift_window, "reference": cfg.models.drift_reference})

    def _connectors(self) -> dict[str, Connector]:
        """One connector per protocol the bindings use (and those every node runs), in the registry's order."""
        cfg = self.cfg
        bound: dict[str, list[Any]] = {}
        for b in cfg.catalog.devices.values():
            bound.setdefault(b.connector, []).append(b)
        classes = [lookup_connector(n) for n in [*BUILTIN, *(n for n in bound if n not in BUILTIN)]]
        out: dict[str, Connector] = {}
        for cls in classes:
            if cls.name not in bound and not cls.always:
                continue
            settings = cfg.connectors.get(cls.name)
            if settings is None and cls.settings is not None:
                settings = cls.settings()
            ctx = NodeContext(cfg.node, cfg.catalog, self.bus, self.engine, cfg.broker, self.publisher,
                              max_payload=cfg.limits.max_payload, settings=settings)
            out[cls.name] = cls(ctx, bound.get(cls.name, []))
        return out

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

    # -- life ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.publisher.start()
        if self.uplink is not None:
            self.uplink_link.start()
            self.uplink.start()
        self.bus.start()
        for name, err in self.models.restore().items():
            log.error("model %s: %s", name, err)
        for ic in self.cfg.instances:  # what is installed now; the agent's first reconcile downloads the rest
            for name, version, err, _ in self.pin_models(ic.plan, download=self.agent is None):
                log.warning("instance %s: model %s:%s is not served yet: %s", ic.name, name, version, err)
            self.add_instance(ic)
        if self.agent is not None:
            self.agent.apply_cached()
            self.agent.start()
        for conn in self.connectors.values():
            conn.start()
        m = self.cfg.metrics
        if m is not None:
            from ..metrics import MetricsServer

            self.metrics_server = MetricsServer(self.metrics_text, m.host, m.port, token=m.bearer).start()
            log.info("metrics on http://%s:%d/metrics", m.host, self.metrics_server.port)
        self.actuator.start()
        t = threading.Thread(target=self._report, name="stats", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, *, keep_state: bool = True) -> None:
        """Stop in order: no new input, drain the bus and pipelines, then publish the last stats. Operators keep
        their state (open windows, cooldowns) for the next start of the node; ``keep_state=False`` flushes them
        instead (a node that will not start again: what is open is emitted now)."""
        self._stop.set()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.agent is not None:
            self.agent.stop()
        for src in self.sources.values():
            src.stop()
        for conn in reversed(self.connectors.values()):
            try:
                conn.stop()
            except Exception:  # one connector failing to stop must not keep the others running
                log.exception("stopping the %s connector failed", conn.name)
        self.bus.wait_idle(10)
        self.bus.stop()
        self.engine.stop_all(keep_state=keep_state)
        self.actuator.stop()
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
            self.outbox.close()  # type: ignore[union-attr]
        self.store.close()

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""
        from ..logs import setup_logging

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

    # -- pipeline instances: the primitives the agent reconciles with -------------------------------
    def add_instance(self, ic: InstanceConfig) -> None:
        inst = Instance(ic.name, ic.plan, devices=ic.devices, sinks=self.sinks, models=self.models,
                        store=self.store, dead_letters=self.dead_letters)
        with self.lock:
            self.desensitisers[ic.name] = inst.desensitiser
            self.instances[ic.name] = inst
            self.engine.start(inst)
            from ..operators.video_inputs import VideoInput

            if inst.ops and isinstance(inst.ops[0], VideoInput):
                self._start_source(inst)

    def remove_instance(self, name: str) -> None:
        with self.lock:
            src = self.sources.pop(name, None)
            if src is not None:
                src.stop()
            self.engine.stop(name)
            self.instances.pop(name, None)
            self.desensitisers.pop(name, None)

    def pin_models(self, plan: Plan, *, download: bool = True) -> list[tuple[str, str, str, bool]]:
        """Install and load the model versions ``plan`` pins (``apply_model: {model: name:version}``), from
        this node's store or (``download``) the hub's warehouse. Returns ``(name, version, error, retry)``
        for those that fail; ``retry``: the failure may pass (the hub away), and the agent asks again."""
        from ..modelstore import InstallError

        failed = []
        for name, version in pinned_models(plan):
            try:
                self.models.pin(name, version, download=download)
            except InstallError as exc:
                failed.append((name, version, str(exc), exc.retry))
        return failed

    def unpin_unused(self) -> None:
        """Versions no running instance pins any more leave memory."""
        self.models.unpin({p for inst in self.instances.values() for p in pinned_models(inst.plan)})

    def _start_source(self, inst: Instance) -> None:
        """A pipeline whose first step is file_input/stream_input/usb_camera_input: feed it its video."""
        from ..connectors.video_source import VideoSource
        from ..operators.video_inputs import frames_batch

        op: Any = inst.ops[0]
        device = op.device or inst.name
        live = op.video.live

        def on_frame(frame: Any, ts: float, index: int) -> None:
            # a file waits for the pipeline (nothing lost); live video drops what the pipeline cannot take
            if not self.engine.submit_to(inst.name, frames_batch(device, None, [(frame, ts)], op.output, [index]),
                                         block=not live, timeout=None if not live else 0):
                self.frames_dropped[device] = self.frames_dropped.get(device, 0) + 1

        self.sources[inst.name] = VideoSource(f"{inst.name}:{device}", op.video, on_frame).start()

    # -- what the node reports ------------------------------------------------------------------------
    def heartbeat(self) -> dict[str, Any]:
        """What the agent reports: instances, counters, queue depths, the outbox, video sources."""
        agent = self.agent
        managed = agent.managed if agent is not None else {}
        versions = agent.managed_versions if agent is not None else {}
        with self.lock:
            stats = {s["instance"]: s for s in self.engine.stats()}
            instances = [{"instance": name, "pipeline": inst.plan.name, "source": "hub" if name in managed else "local",
                          **({"version": versions.get(name)} if name in managed else {}),
                          "outputs": inst.outputs, "queue": stats.get(name, {}).get("queue", 0),
                          "processed": stats.get(name, {}).get("processed", 0)}
                         for name, inst in self.instances.items()]
        hb: dict[str, Any] = {
            "instances": instances, "models": self.models.status(),
            "counters": {"records": self.bus.records_in, "dead_letters": self.dead_letters.total,
                         "alerts": self.sinks.alerts, "notifications": self.sinks.notifications,
                         "uploads": self.sinks.uploads, "actions": self.actuator.done},
            "queues": self.engine.queue_depths(),
            "outbox": self.uplink.stats() if self.uplink is not None else {},
            "video": {},  # cameras (their connector's section) and the pipelines' own sources
            "errors": list(agent.errors) if agent is not None else []}
        for conn in self.connectors.values():
            for key, section in conn.heartbeat().items():
                hb.setdefault(key, {}).update(section)
        hb["video"].update({f"{i}:source": {**v.stats(), "dropped": self.frames_dropped.get(v.name.split(":", 1)[1], 0)}
                            for i, v in self.sources.items()})
        return hb

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.cfg.node, "uptime": round(time.time() - self.started_at, 3),
            "records": self.bus.records_in,
            "telemetry": None if self.telemetry is None else {"sent": self.telemetry.sent,
                                                              "dropped": self.telemetry.dropped},
            **self._connector_stats(),
            "dead_letters": {"total": self.dead_letters.total, "by_kind": dict(self.dead_letters.counts)},
            "alerts": self.sinks.alerts, "notifications": self.sinks.notifications, "actions": self.actuator.done,
            "outputs": self.outputs_published, "outputs_dropped": self.publisher.dropped,
            "queues": self.engine.queue_depths(),
            "pipelines": self.engine.stats(),
        }

    def _connector_stats(self) -> dict[str, Any]:
        """Each connector's stats under its name (a connector this node does not run: its idle entry)."""
        out = {}
        for cls in connector_classes(plugins=False):
            conn = self.connectors.get(cls.name)
            value = conn.stats() if conn is not None else cls.idle_stats
            if value is not NO_STATS:
                out[cls.name] = value
        return out

    def metrics_text(self) -> str:
        """Prometheus text for ``/metrics``: :meth:`stats`, plus the outbox, models and video sources."""
        from ..metrics import node_families, render

        return render(node_families(self.stats(), self.heartbeat()))

    def _from_hub(self, topic: str, payload: bytes, _arrived: float) -> None:
        if self.uplink is not None:
            self.uplink.on_message(topic, payload)

    def _rejected(self, rej: dict[str, Any], body: bytes | None) -> None:
        self.dead_letters.add(source="uplink/hub", reason=str(rej.get("reason")), raw=body)

    def _publish_stats(self) -> None:
        try:
            self.publisher.publish(f"edgeloop/{self.cfg.node}/stats", jsonio.dumps(self.stats()), qos=0, retain=True)
        except Exception:  # pragma: no cover - stats are best effort
            log.exception("stats publish failed")

    def _report(self) -> None:
        while not self._stop.wait(self.cfg.stats_interval):
            self._publish_stats()
