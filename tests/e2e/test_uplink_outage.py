"""The durable uplink's guarantee, with everything really stopped and killed.

With records flowing (Modbus devices polled every 20 ms, every record uploaded):
stop the broker, then the hub, then SIGKILL the node and restart it. Every record the
node accepted into its outbox reaches the hub exactly once, in per-device order.

Each outage lasts EDGELOOP_OUTAGE_S seconds: 10 in `make test` (five acknowledgement
timeouts, two keep-alives, several reconnects with backoff), 30 in `make chaos`.
"""

from __future__ import annotations

import os

import pytest

from tests.kit.hub import HubProcess, NodeProcess, all_uploads
from tests.kit.nodes import drain_outbox, hold, modbus_upload_node, uploads_beyond

OUTAGE = float(os.environ.get("EDGELOOP_OUTAGE_S", "10"))


@pytest.mark.broker
@pytest.mark.modbus
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_record_reaches_the_hub_exactly_once_in_order(tmp_path, mosquitto, modbus_server):
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port).start()
    node = None
    try:
        admin = hub.admin()
        token = admin.post("/api/v1/nodes", {"name": "edge-x"})["token"]
        cfg = modbus_upload_node(tmp_path, "edge-x", broker_port=mosquitto.port, hub_url=hub.url, token=token,
                                 modbus_port=modbus_server.port)
        node = NodeProcess(cfg).start()
        n = uploads_beyond(hub, "edge-x", 100, "records flowing to the hub")
        mosquitto.stop()
        hold(OUTAGE)
        mosquitto.start()
        n = uploads_beyond(hub, "edge-x", n + 100, "the backlog of the broker outage arriving")
        hub.stop()
        hold(OUTAGE)
        hub.start()
        n = uploads_beyond(hub, "edge-x", n + 100, "the backlog of the hub outage arriving")
        node.kill()
        node.start()
        uploads_beyond(hub, "edge-x", n + 100, "records flowing again after the node was killed")
        modbus_server.stop()  # no more input: let the outbox drain
        last_seq = drain_outbox(node, tmp_path / "edge-x-outbox.db")
    finally:
        if node is not None:
            node.stop()
        log = (tmp_path / "node.log").read_text()[-3000:] if (tmp_path / "node.log").exists() else ""
        items = all_uploads(hub.admin(), node="edge-x") if hub.proc else []
        hub.stop()
    assert "Traceback" not in log, log
    by_device: dict[str, list[int]] = {}
    for it in items:
        by_device.setdefault(it["device"], []).append(it["seq"])
    assert set(by_device) == set(last_seq) == {"pump-0", "pump-1", "pump-2"}
    for device, seqs in by_device.items():
        # exactly once and in order: the hub holds 1..N in storage order, N = what the node accepted
        assert seqs == list(range(1, last_seq[device] + 1)), f"{device}: gaps, duplicates or disorder"
    assert len({it["id"] for it in items}) == len(items) == sum(last_seq.values())
    assert len(items) > 400
