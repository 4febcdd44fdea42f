"""The agile loop when its parts are away, and its approval step, on a real Prefect server, a real hub
process and a real Label Studio: a flow that cannot reach the hub or Label Studio fails with a message
naming which and how to start it, loses nothing (the watermark does not move) and the next run resumes;
a paused run waits for a person's answer given through Prefect's API (what the UI's Resume form sends).

The uploads are SYNTHETIC inference records posted with a node's token, as a node's uplink stores them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.ports import free_port
from edge_runtime.testing import wait_for
from edgeloop.devkit.scenarios import pumps as sc
from tests.kit.hub import ADMIN, HubProcess

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(600)]


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's tasks retry after 5 and 30 s; here after none (the same tasks, fewer seconds)."""
    from flows import loop

    for name in ("collect_task", "label_task", "harvest_task"):
        monkeypatch.setattr(loop, name, getattr(loop, name).with_options(retries=1, retry_delay_seconds=0))


def upload_records(hub: HubProcess, n: int) -> None:
    """``n`` SYNTHETIC pump_anomaly inferences from node n1; every fifth marked low-confidence."""
    admin = hub.admin()
    token = admin.post("/api/v1/nodes", {"name": "n1", "group": "pumps"})["token"]
    from edge_runtime.hubclient import HubClient

    node = HubClient(hub.url, token)
    items = []
    for i in range(n):  # the upload operator's item: the record nested
        values = {**{f: 0.1 * i for f in sc.features()}, "anomaly": "normal", "anomaly_confidence": 0.6,
                  "anomaly_model": "pump_anomaly:1", **({"select": "low_confidence"} if i % 5 == 0 else {})}
        items.append({"id": f"n1-{i}", "kind": "record", "pipeline": "score", "device": f"pump-{i % 4}", "seq": i,
                      "ts": 1.7e9 + i, "record": {"device": f"pump-{i % 4}", "ts": 1.7e9 + i, "values": values}})
    node.post("/api/v1/nodes/n1/uploads", {"items": items})


def test_hub_then_label_studio_away_fail_the_flow_by_name_and_the_next_run_resumes(
        prefect_api: str, label_studio: Any, quick_retries: None, tmp_path: Path) -> None:
    from flows.loop import agile_loop
    from flows.steps import LoopConfig

    ws = tmp_path / "ws"
    sc.workspace(ws, track=True)
    hub = HubProcess(tmp_path / "hub")  # not started yet: its port is chosen
    dead_ls = f"http://127.0.0.1:{free_port()}"
    config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": ADMIN, "label_studio_url": dead_ls,
              "label_studio_token": label_studio.token, "models": ["pump_anomaly"], "min_labels": 5}
    state = agile_loop(config, return_state=True)
    assert state.is_failed()
    msg = str(state.message) + repr(state.result(raise_on_failure=False))
    assert f"the hub at {hub.url} is unreachable" in msg and "edgeloop hub serve" in msg, msg

    hub.start()
    try:
        upload_records(hub, 100)
        state = agile_loop(config, return_state=True)  # the hub is back; Label Studio is not
        assert state.is_failed()
        msg = repr(state.result(raise_on_failure=False))
        assert f"Label Studio is not reachable at {dead_ls}" in msg and "edgeloop up" in msg, msg
        with LoopConfig(**config).state() as s:
            assert s.watermark("pump_anomaly") == 0 and s.sent_count("pump_anomaly") == 0

        config["label_studio_url"] = label_studio.url
        report = agile_loop(config)["models"]["pump_anomaly"]  # everything back: nothing was lost
        assert report["collect"]["uploads"] == 100 and report["label"]["sent"] == 10
        again = agile_loop(config)["models"]["pump_anomaly"]
        assert again["collect"]["uploads"] == 0 and again["label"]["sent"] == 0 and again["label"]["total_sent"] == 10
    finally:
        hub.stop()


def test_approval_pauses_the_run_until_a_person_answers(prefect_api: str) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
    from prefect.flow_runs import resume_flow_run

    from flows.loop import approve

    @flow(name="approval-test")
    def needs_approval() -> dict[str, Any]:
        return approve("pump_anomaly", {"candidate": "7", "why": "better on drifted"}, 120)

    out: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: out.update(answer=needs_approval()), daemon=True)
    runner.start()

    def paused() -> Any:
        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused", "Suspended"]))))
        return next((r for r in runs if r.name and r.state and r.state.is_paused()), None)

    run = wait_for(paused, 60, "the run to pause for approval")
    assert "answer" not in out  # it waits
    resume_flow_run(run.id, run_input={"approve": False, "note": "not during the night shift"})
    runner.join(60)
    assert out["answer"] == {"approved": False, "note": "not during the night shift"}
