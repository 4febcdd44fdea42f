"""The agile loop's Prefect side: its memory (nothing done twice), the gate's decision, and the deployments
with their schedules on a real Prefect server (``prefect_test_harness``: a temporary server and database)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.testing import wait_for
from flows.state import LoopState
from flows.steps import LoopConfig, gate_decision, model_output
from tests.kit import ROOT


def test_state_never_does_work_twice(tmp_path: Path) -> None:
    with LoopState(tmp_path / "state.db") as st:
        assert st.watermark("m") == 0
        st.set_watermark("m", 10)
        st.set_watermark("m", 4)  # a late, older watermark never moves it back
        assert st.watermark("m") == 10
        items = [{"id": f"u{i}", "values": {"x": i}, "prediction": "normal", "confidence": 0.6} for i in range(3)]
        assert st.unsent(["u0", "u1", "u9"]) == {"u0", "u1", "u9"}
        st.mark_sent("m", 1, items)
        st.mark_sent("m", 1, items)  # a retried step
        assert st.unsent(["u0", "u1", "u9"]) == {"u9"} and st.sent_count("m") == 3
        assert st.sent_values(["u2"]) == {"u2": {"x": 2}}
        st.mark_harvested("m", "b1", [{"annotation_id": 7, "id": "u0", "label": "anomalous"}])
        assert st.new_annotations([7, 8]) == {8} and st.harvested_count("m") == 1
        assert st.trained_labels("m") == 0
        st.mark_trained("m", 1, "2")
        assert st.trained_labels("m") == 1
    with LoopState(tmp_path / "state.db") as st:  # it is on disk: a new process knows all of it
        assert st.watermark("m") == 10 and st.unsent(["u1"]) == set() and st.new_annotations([7]) == set()


@pytest.mark.parametrize("cand, champ, ok, why", [
    ((0.95, 0.80), (0.95, 0.60), True, "drifted"),
    ((0.90, 0.80), (0.95, 0.60), False, "worse on clean"),
    ((0.945, 0.80), (0.95, 0.60), True, "drifted"),  # within the clean margin
    ((0.95, 0.60), (0.95, 0.60), False, "not better on drifted"),
    ((0.95, None), (0.95, 0.60), False, "no clean/drifted"),
    ((0.95, 0.70), (None, None), True, "no champion"),
])
def test_gate_decision(cand: tuple, champ: tuple, ok: bool, why: str) -> None:
    f = {"metric": "accuracy", "candidate": "2", "champion": "1" if champ[0] is not None else None,
         "candidate_clean": cand[0], "candidate_drifted": cand[1], "champion_clean": champ[0],
         "champion_drifted": champ[1]}
    got, reason = gate_decision(f, clean_margin=0.01, drifted_margin=0.0)
    assert got is ok and why in reason, reason


def test_the_model_output_is_found_from_its_version_tag() -> None:
    values = {"vib_rms_mean": 1.0, "anomaly": 1, "anomaly_confidence": 0.55, "anomaly_model": "pump_anomaly:3"}
    assert model_output(values, "pump_anomaly") == "anomaly"
    assert model_output(values, "intrusion") is None


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_MODELS", "pump_anomaly, intrusion")
    monkeypatch.setenv("EDGELOOP_MAX_LABEL_SHARE", "0.05")
    monkeypatch.setenv("EDGELOOP_APPROVAL", "true")
    cfg = LoopConfig.from_env(canary=2)
    assert cfg.models == ["pump_anomaly", "intrusion"] and cfg.max_label_share == 0.05 and cfg.approval
    assert cfg.canary == 2


def test_the_deployment_settings_are_every_loop_setting_and_refuse_what_they_do_not_know() -> None:
    from dataclasses import fields

    from flows.config import LoopError, LoopSettings, settings

    assert set(LoopSettings.model_fields) == {f.name for f in fields(LoopConfig)}
    assert all(f.description for f in LoopSettings.model_fields.values())
    with pytest.raises(LoopError, match="grop"):
        settings({"grop": "pumps"})
    assert settings({"group": "pumps"}).config().group == "pumps"


def test_deployments_and_their_schedules_are_on_the_prefect_server(prefect_api: str, tmp_path: Path) -> None:
    """`python -m flows.serve` registers the deployments; the server lists them with their cron schedules."""
    import asyncio

    from prefect.client.orchestration import get_client

    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)})

    schemas: dict[str, Any] = {}

    async def listed() -> dict[str, Any]:
        async with get_client() as client:
            out = {}
            for d in await client.read_deployments():
                flow = await client.read_flow(d.flow_id)
                out[f"{flow.name}/{d.name}"] = sorted(s.schedule.cron for s in d.schedules)
                schemas[f"{flow.name}/{d.name}"] = d.parameter_openapi_schema
            out["automations"] = [a.name for a in await client.read_automations()]
            return out

    try:
        got = wait_for(lambda: (lambda d: d if len(d) >= 4 else None)(asyncio.run(listed())), 90,
                       "the deployments on the Prefect server")
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    assert got == {"agile-loop/nightly": ["0 2 * * *"], "agile-loop/on-drift": [], "label-sync/hourly": ["15 * * * *"],
                   "automations": ["edgeloop: a model drifted"]}, (tmp_path / "serve.log").read_text()[-2000:]
    # the Prefect UI draws a form from the settings: each with its description, `group`'s saying what it does
    settings = schemas["agile-loop/nightly"]["definitions"]["LoopSettings"]["properties"]
    assert "NEVER rolls out" in settings["group"]["description"] and len(settings) >= 20, settings
