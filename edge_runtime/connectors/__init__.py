"""Connectors: one module per protocol behind one contract, and a registry fed by plug-ins.

A device binding names its connector (``connector: mqtt``); the connector checks the binding's options
when devices.yaml loads and, on a node, brings the devices' readings onto the Device Bus and carries out
their actions. The contract is :class:`~edge_runtime.connectors.base.Connector`; the registry
(:mod:`edge_runtime.connectors.registry`) holds the built-ins (mqtt, modbus, video, http, amqp, coap, opcua,
and ``ingest``: devices whose gateways publish ready-made records) and plug-ins from the
``edgeloop.connectors`` entry point group.

Adding a protocol is one module with one class and its test::

    from edge_runtime.connectors import BindingCheck, Connector
    from edge_runtime.devices.readings import MAPPING_OPTIONS, check_mapping

    class LineFileConnector(Connector):
        "Readings appended to a local file, one JSON object a line."

        name = "linefile"
        options = {"path": "the file to follow", **MAPPING_OPTIONS}

        @classmethod
        def check(cls, b: BindingCheck) -> None:
            if not isinstance(b.options.get("path"), str):
                raise b.error("expected the file's path", "path")   # file:line, device and field
            check_mapping(b)

        def start(self) -> None: ...      # a thread that reads: self.ctx.bus.submit(records)
        def stop(self) -> None: ...
        def stats(self) -> dict: ...      # under "linefile" in the node's stats
        def write(self, device, values) -> None: ...   # device_output set, where the protocol can

registered in its package's metadata::

    [project.entry-points."edgeloop.connectors"]
    linefile = "my_package.linefile:LineFileConnector"

tests/edge/test_connectors.py does exactly this through a real dist-info directory.
"""

from .base import NO_STATS, BindingCheck, Connector, NodeContext, substitute
from .registry import connector_classes, load_entry_points, lookup, names, register

__all__ = ["NO_STATS", "BindingCheck", "Connector", "NodeContext", "substitute", "connector_classes",
           "load_entry_points", "lookup", "names", "register"]
