"""The connector contract: how one protocol brings devices onto the node and carries out their actions.

A connector is a class with a ``name`` (what ``connector:`` says in devices.yaml). Its class side is the
schema, used while bindings load, before anything runs:

- ``options``: the binding keys it takes (option -> description; anything else is refused, listing them);
- ``check(b)``: the binding's options against its product (normalise them in place: defaults, parsed
  durations); refuse with ``raise b.error(problem, field)``, which names file:line, device and field;
- ``service_keys`` / ``service_required`` / ``check_service(b, service, how)``: how a binding maps a product
  service to this protocol (``services: {stop: {...}}``); no keys: the protocol carries out no services;
- ``settings``: a dataclass section (see :mod:`edge_runtime.sections`) node.yaml accepts under the
  connector's name (``http: {host, port, token_env}``), parsed when the node config loads;
- ``metric_families(stats, node, shared)``: its Prometheus families from its own ``stats()``.

Its instance side runs on a node: built with the node's :class:`NodeContext` and the bindings that name
it, then ``start()``, ``stop()``, ``stats()`` (under its name in the node's stats), ``heartbeat()``
(sections merged into the heartbeat), ``write(device, values)`` for ``device_output`` sets and
``call_service(device, service, args, how)`` for services. Readings go to ``ctx.bus.submit(records)``;
anything wrong with a reading goes to ``ctx.bus.dead(source, reason, device=..., raw=...)``, never an
exception. A protocol that cannot do something keeps the default, which raises the RecordError the node
turns into a dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ..operators.base import SpecError, parse_duration
from ..records import RecordError
from ..yamlspec import line_of

if TYPE_CHECKING:
    from ..devices.bus import DeviceBus
    from ..devices.catalog import Catalog, DeviceBinding, Product
    from ..engine import Engine
    from ..metrics import ConnectorFamilies, Family
    from ..mqtt import BrokerConfig, MqttLink

__all__ = ["Connector", "BindingCheck", "NodeContext", "NO_STATS", "substitute", "placeholders"]


class _NoStats:
    def __repr__(self) -> str:
        return "NO_STATS"


#: ``stats()`` (or ``idle_stats``) saying "no entry for this connector in the node's stats"
NO_STATS: Final = _NoStats()


@dataclass
class BindingCheck:
    """A device binding as a connector's ``check`` sees it while devices.yaml loads."""

    device: str
    connector: str
    product: Product
    #: the binding's connector options (every key but id, product, connector, services, events, description):
    #: a check normalises them in place, and the node's connector gets them as they are left
    options: dict[str, Any]
    #: the binding as written (for the lines errors name)
    spec: Mapping[str, Any]
    file: str | None
    #: (option, kind): values no other binding of this connector may use (``claim``)
    claims: list[tuple[str, str]] = field(default_factory=list)

    @property
    def item(self) -> str:
        return f"device '{self.device}'"

    def error(self, problem: str, field: str, *, at: str | None = None, hint: str | None = None) -> SpecError:
        """A SpecError naming file:line, the device and ``field`` (``mapping.temperature``): the line is that
        of ``at`` (a key of the binding) when given, else of the deepest part of ``field`` the binding has."""
        line = line_of(self.spec, at) if at is not None else self._line(field)
        return SpecError(problem, file=self.file, line=line, step=self.item, field=field, hint=hint)

    def _line(self, path: str) -> int | None:
        line, here = None, self.spec
        for part in path.split("."):
            if not isinstance(here, Mapping) or part not in here:
                break
            line, here = line_of(here, part), here[part]
        return line if line is not None else line_of(self.spec)

    def duration(self, key: str, default: float, container: dict[str, Any] | None = None,
                 prefix: str = "") -> float:
        """``options[key]`` (or ``container[key]``) as seconds, ``default`` when absent; stored back."""
        where = self.options if container is None else container
        try:
            where[key] = parse_duration(where.get(key, default), key)
        except SpecError as exc:
            raise self.error(exc.problem, prefix + key) from None
        return float(where[key])

    def claim(self, key: str, kind: str | None = None) -> None:
        """``options[key]`` is this device's alone among the connector's bindings (an MQTT topic): a second
        binding using the same value (under any key of the same ``kind``) is refused."""
        self.claims.append((key, kind or key))

    def check_placeholders(self, service: str, value: Any) -> None:
        """Every ``$name`` in ``value`` must be an argument of the product's ``service``."""
        args = self.product.services[service].args
        for ref in placeholders(value):
            if ref not in args:
                raise self.error(f"${ref} is not an argument of service {service!r}", f"services.{service}",
                                 hint="arguments: " + (", ".join(args) or "none"))


@dataclass
class NodeContext:
    """What a running connector may use of its node."""

    node: str
    catalog: Catalog
    bus: DeviceBus
    engine: Engine
    broker: BrokerConfig
    #: the node's own MQTT link (qos 1): commands to MQTT devices go out on it
    publisher: MqttLink
    max_payload: int = 65536
    #: the connector's node.yaml section, parsed (its ``settings`` dataclass; None when it declares none)
    settings: Any = None


class Connector:
    """Base class of connectors: subclasses set ``name`` and ``options``, check bindings, and run devices."""

    name: ClassVar[str] = ""
    #: option -> description: the keys a binding of this connector takes
    options: ClassVar[Mapping[str, str]] = {}
    #: the keys a service binding takes (``services: {stop: {...}}``); empty: no services
    service_keys: ClassVar[frozenset[str]] = frozenset()
    #: the keys every service binding must give
    service_required: ClassVar[tuple[str, ...]] = ()
    #: a dataclass section node.yaml takes under this connector's name (None: no section)
    settings: ClassVar[type | None] = None
    #: built on every node, with or without bindings (MQTT: the node's ingest topic)
    always: ClassVar[bool] = False
    #: the node's stats entry for this connector on a node that binds no device to it (NO_STATS: none)
    idle_stats: ClassVar[Any] = NO_STATS

    # -- the schema: while bindings load ----------------------------------------------------------
    @classmethod
    def check(cls, b: BindingCheck) -> None:
        """Check ``b.options`` against ``b.product``; normalise them in place; ``raise b.error(...)``."""

    @classmethod
    def check_service(cls, b: BindingCheck, service: str, how: Any) -> Any:
        """Check how the binding carries out product ``service``; returns it, normalised. The default takes a
        mapping of ``service_keys`` with the ``service_required`` ones."""
        fld = f"services.{service}"
        if not cls.service_keys:
            raise b.error(f"a {cls.name} device cannot carry out services", fld)
        takes = f"a {cls.name} service takes: " + ", ".join(sorted(cls.service_keys))
        if not isinstance(how, dict):
            raise b.error("expected a mapping", fld, hint=takes)
        bad = sorted(set(how) - cls.service_keys)
        if bad:
            raise b.error(f"unknown key {bad[0]!r} for a {cls.name} service", f"{fld}.{bad[0]}", hint=takes)
        for key in cls.service_required:
            if key not in how:
                raise b.error(f"a {cls.name} service needs {key!r}", f"{fld}.{key}")
        return how

    @classmethod
    def metric_families(cls, stats: Any, node: str, shared: ConnectorFamilies) -> list[Family]:
        """Prometheus families from this connector's ``stats()``: add samples to the ``shared`` ones
        (readings accepted, errors, connected, labelled by connector and source), return any of its own."""
        return []

    # -- on a node ---------------------------------------------------------------------------------
    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding]) -> None:
        self.ctx = ctx
        self.bindings = {b.id: b for b in bindings}

    def start(self) -> None:
        """Start reading (threads, loops, servers): return once started, never block on a device."""

    def stop(self) -> None:
        """Stop reading and release everything; readings already submitted are the bus's."""

    def stats(self) -> Any:
        """Counters for the node's stats (under the connector's name) and metrics; NO_STATS: none."""
        return NO_STATS

    def heartbeat(self) -> dict[str, dict[str, Any]]:
        """Sections merged into the node's heartbeat (``{"counters": {...}}``, ``{"video": {...}}``)."""
        return {}

    def write(self, device: str, values: dict[str, Any]) -> None:
        """``device_output`` set: write checked property values to the device; RecordError on failure."""
        raise RecordError(f"device {device} ({self.name}) cannot be set: bind a service instead")

    def call_service(self, device: str, service: str, args: dict[str, Any], how: Any) -> None:
        """``device_output`` service: carry out ``service`` with checked ``args`` as the binding says
        (``how``: its ``services`` entry, None when it has none); RecordError on failure."""
        if not how:
            raise RecordError(f"device {device} ({self.name}) binds no action for service {service!r}")
        raise RecordError(f"a {self.name} device cannot carry out services")


def substitute(template: Any, args: Mapping[str, Any]) -> Any:
    """``"$name"`` -> the service argument, through dicts and lists (services' payloads)."""
    if isinstance(template, str) and template.startswith("$") and template[1:] in args:
        return args[template[1:]]
    if isinstance(template, dict):
        return {k: substitute(v, args) for k, v in template.items()}
    if isinstance(template, list):
        return [substitute(v, args) for v in template]
    return template


def placeholders(value: Any) -> list[str]:
    """The ``$name`` references in a service's payload."""
    if isinstance(value, str) and value.startswith("$"):
        return [value[1:]]
    if isinstance(value, dict):
        return [r for v in value.values() for r in placeholders(v)]
    if isinstance(value, list):
        return [r for v in value for r in placeholders(v)]
    return []
