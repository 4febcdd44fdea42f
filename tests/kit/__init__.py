"""Helpers the tests share: real servers they start (CoAP, OPC UA, ONVIF, RTSP, a hub), MQTT clients, nodes
under test (nodes.py), the ``edgeloop`` command (cli.py), the trained workspace and the record-at-a-time
reference of the replay semantics."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
