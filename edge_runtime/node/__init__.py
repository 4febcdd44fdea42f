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

The package by concept: :mod:`.config` (node.yaml's sections and loader), :mod:`.sinks` (where results
go), :mod:`.actuation` (device actions through the connectors), :mod:`.wiring` (the Node: what it is made
of, its start and stop, its stats and heartbeats). The desired state the hub assigns is the agent's
(edge_runtime.agent).
"""

from .config import InstanceConfig, NodeConfig, load_node_config
from .wiring import Node

__all__ = ["NodeConfig", "InstanceConfig", "Node", "load_node_config"]
