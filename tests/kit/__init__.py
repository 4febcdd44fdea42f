"""Helpers the tests share: real servers they start (CoAP, OPC UA, ONVIF, RTSP, a hub), MQTT clients, nodes
under test (nodes.py), the ``edgeloop`` command (cli.py), the trained workspace and the record-at-a-time
reference of the replay semantics."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def examples(n: int) -> int:
    """How many examples a property test draws: ``n`` in `make test`, scaled by ``EDGELOOP_EXAMPLES_SCALE`` (`make
    check` runs a quarter, at least 10, for the inner loop; ``make chaos`` raises the fuzzers with
    ``EDGELOOP_FUZZ_EXAMPLES``)."""
    import os

    scale = float(os.environ.get("EDGELOOP_EXAMPLES_SCALE", "1"))
    return max(10, round(n * scale)) if scale < 1 else round(n * scale)
