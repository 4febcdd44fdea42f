"""``connector: ingest``: devices whose records a gateway publishes ready-made.

A gateway that already speaks the unified device model publishes ``{"device", "ts", "values"}`` on
``edgeloop/<node>/ingest``; the MQTT connector takes those records for any bound device. A device bound to
``ingest`` has nothing else: no options, no services, no machinery of its own. It is a connector only so
that devices.yaml can bind such a device to its product.
"""

from __future__ import annotations

from .base import Connector

__all__ = ["IngestConnector"]


class IngestConnector(Connector):
    """Devices whose records arrive ready-made on the node's ingest topic (taken by the MQTT connector)."""

    name = "ingest"
