"""The registry of connectors: the built-ins, plus plug-ins from the ``edgeloop.connectors`` entry point group.

Built-ins are imported when first named (a node without OPC UA devices never imports asyncua's module
chain); plug-ins are found through their package's entry point, like operators::

    [project.entry-points."edgeloop.connectors"]
    linefile = "my_package.linefile:LineFileConnector"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..operators.base import SpecError
from .base import Connector

__all__ = ["BUILTIN", "REGISTRY", "register", "load_entry_points", "lookup", "names", "connector_classes"]

GROUP = "edgeloop.connectors"
#: name -> "module:Class" of the built-in connectors, in the order stats and hints list them
BUILTIN: dict[str, str] = {
    "mqtt": "mqtt:MqttConnector", "modbus": "modbus:ModbusConnector", "video": "video:VideoConnector",
    "http": "http:HttpConnector", "amqp": "amqp:AmqpConnector", "coap": "coap:CoapConnector",
    "opcua": "opcua:OpcuaConnector", "ingest": "ingest:IngestConnector",
}
REGISTRY: dict[str, type[Connector]] = {}


def register(cls: type[Connector]) -> type[Connector]:
    """Make a connector available to devices.yaml by its ``name`` (class decorator, or called by the entry
    point loader)."""
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"{cls!r} is not a Connector subclass")
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no connector name")
    if not cls.__doc__:
        raise TypeError(f"connector {cls.name} needs a docstring")
    known = REGISTRY.get(cls.name)
    if cls.name in BUILTIN or known is not None and known is not cls:
        taken = BUILTIN.get(cls.name) or f"{known.__module__}:{known.__qualname__}"  # type: ignore[union-attr]
        raise TypeError(f"connector name {cls.name!r} is taken (by {taken})")
    REGISTRY[cls.name] = cls
    return cls


_ENTRY_POINTS_LOADED = False


def load_entry_points(*, force: bool = False) -> list[str]:
    """Register plug-in connectors from the ``edgeloop.connectors`` entry point group; their names."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED and not force:
        return []
    _ENTRY_POINTS_LOADED = True
    added = []
    for ep in entry_points(group=GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a Connector subclass")
        if not cls.name:
            cls.name = ep.name
        register(cls)
        added.append(cls.name)
    return added


def _builtin(name: str) -> type[Connector]:
    cls = REGISTRY.get(name)
    if cls is None:
        module, _, attr = BUILTIN[name].partition(":")
        cls = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        REGISTRY[name] = cls
    return cls


def names() -> list[str]:
    """Every connector name: the built-ins, then plug-ins."""
    load_entry_points()
    return [*BUILTIN, *(n for n in REGISTRY if n not in BUILTIN)]


def lookup(name: object) -> type[Connector]:
    """The connector class named ``name``; a SpecError listing the known ones when there is none."""
    if isinstance(name, str):
        if name in BUILTIN:
            return _builtin(name)
        if name not in REGISTRY:
            load_entry_points()
        if name in REGISTRY:
            return REGISTRY[name]
    raise SpecError(f"unknown connector {name!r}", field="connector", hint="one of " + ", ".join(names()))


def connector_classes(*, plugins: bool = True) -> list[type[Connector]]:
    """Every connector class, built-ins first (importing those not imported yet), then plug-ins: all of them,
    or (``plugins=False``) only those already registered, without scanning installed packages again."""
    if plugins:
        load_entry_points()
    return [*(_builtin(n) for n in BUILTIN), *(c for n, c in REGISTRY.items() if n not in BUILTIN)]
