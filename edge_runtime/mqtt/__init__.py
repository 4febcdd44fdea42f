"""The node's MQTT transport: the broker link, paho's client made fast, and the raw QoS 0 publisher.

Transport, not a device connector: the node publishes outputs, alerts and stats through an
:class:`MqttLink`, the uplink reaches the hub through another, the Device Bus republishes telemetry
through a :class:`RawPublisher`, the MQTT device connector (``edge_runtime.connectors.mqtt``) reads its
topics through a link of its own, and the hub's ingest reads through a :class:`BufferedClient`.
"""

from .client import BufferedClient
from .link import QUEUE_LIMIT, BrokerConfig, MqttLink
from .raw import RawPublisher, publish_packet

__all__ = ["BrokerConfig", "BufferedClient", "MqttLink", "QUEUE_LIMIT", "RawPublisher", "publish_packet"]
