"""Drift starts the loop, and no drift does not, with every part real: a Prefect server with the loop's
deployments served by `python -m flows.serve` (its drift watcher beside them, the on-drift trigger an automation
on the server), a hub process, Mosquitto, an edge node scoring SYNTHETIC pump windows with version 1 (its drift
profile shipped in its signed bundle), Label Studio, MLflow and DVC in the workspace.

Windows like those the model was trained on first (its training windows in a new order: at this test's tiny
scale, 6 SYNTHETIC pumps, windows of other pumps already differ from the reference by a PSI near 1, so "no drift"
has to come from the same pumps): the node's drift score stays under the threshold and the watcher, checking
every second, starts nothing. Then the pumps age (drifted windows): the node's score rises, the hub raises the model's alarm
once it stayed over the threshold, the watcher emits one `edgeloop.model.drifted` event, and the automation runs
the `agile-loop/on-drift` deployment for that model only, with why in its parameters; the run sends the drifted
uploads to labelling. One drift starts one run: later checks see the same alarm and emit nothing. Once the
SIMULATED annotator (answering from the generator's truth through Label Studio) labelled them, the watcher emits
`edgeloop.model.labelled` and the same automation runs the loop again: harvested, retrained (DVC), gated
(MLflow), packaged (BentoML), signed and rolled out; the node serves version 2 without anyone starting a run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_runtime.node import Node, load_node_config
from edge_runtime.signing import init_keys
from edgeloop.devkit.scenarios import pumps as sc
from tests.kit import ROOT
from tests.kit.hub import ADMIN, HubProcess, wait_for
from tests.kit.mqtt import publisher

pytestmark = [pytest.mark.broker, pytest.mark.labelstudio, pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "pump_anomaly"


def _runs(deployment: str) -> list[Any]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[deployment])))

    return asyncio.run(read())


def _automation(name: str) -> list[Any]:
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_automations_by_name(name)

    return asyncio.run(read())


def _drop_projects(ls: Any) -> None:
    """Delete the Label Studio projects of MODEL (the loop finds a model's project by its title)."""
    while (pid := ls.find_project(MODEL)) is not None:
        ls.client.projects.delete(pid)


def test_drift_starts_the_loop_for_that_model_once_and_no_drift_starts_nothing(
        prefect_api: str, label_studio: Any, mosquitto: Any, tmp_path: Path) -> None:
    from flows.state import LoopState
    from flows.steps import LoopConfig, package
    from models.common import load_split

    ls = label_studio.labelling()
    _drop_projects(ls)  # the session's Label Studio is shared: another test's pump_anomaly project is not ours
    ws = tmp_path / "ws"
    sc.workspace(ws)
    assert (ws / "artifacts" / MODEL / "drift-profile.json").is_file()  # made at training, shipped in the bundle
    X, y = sc.field_windows(tmp_path / "field", 1234)
    clean = load_split(ws / "data" / "prepared" / MODEL / "train.npz")
    order = np.random.default_rng(7).permutation(len(clean["y"]))  # the pumps interleaved, as they send
    init_keys(tmp_path / "keys")
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = serve = None
    state = LoopState(ws / "var" / "loop" / "state.db")
    try:
        admin = hub.admin()
        config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": ADMIN, "models": [MODEL],
                  "keys_dir": str(tmp_path / "keys"), "group": "pumps"}
        assert package(LoopConfig(**config), MODEL, "1")["packaged"] is True
        admin.put(f"/api/v1/models/{MODEL}/deployments/group:pumps", {"version": "1"})
        admin.put(f"/api/v1/models/{MODEL}/drift/settings", {"threshold": 0.25, "sustain_s": 2})
        token = admin.post("/api/v1/nodes", {"name": "edge-p", "group": "pumps"})["token"]
        node_yaml = sc.write_node(tmp_path / "node", mosquitto.port, hub.url, token, tmp_path / "keys")
        doc = yaml.safe_load(node_yaml.read_text())
        doc["models"]["drift_window"] = 600  # the newest 600 windows (a few hundred a minute at this test's rate)
        node_yaml.write_text(yaml.safe_dump(doc))
        node = Node(load_node_config(node_yaml))
        node.start()
        wait_for(lambda: sc.serving(admin) == "1", 60, "the node to serve version 1")

        env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT), "EDGELOOP_WORKSPACE": str(ws),
               "EDGELOOP_HUB_URL": hub.url, "EDGELOOP_HUB_TOKEN": ADMIN, "EDGELOOP_MODELS": MODEL,
               "EDGELOOP_LABEL_STUDIO_URL": label_studio.url, "EDGELOOP_LABEL_STUDIO_TOKEN": label_studio.token,
               "EDGELOOP_KEYS_DIR": str(tmp_path / "keys"), "EDGELOOP_GROUP": "pumps", "EDGELOOP_DRIFT_POLL_S": "1",
               "EDGELOOP_MIN_LABELS": "10", "EDGELOOP_WATCH_S": "1", "BENTOML_HOME": str(tmp_path / "bentoml")}
        log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed with the process
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        wait_for(lambda: _automation("edgeloop: a model drifted"), 120, "the on-drift automation on the server")

        # no drift: windows as the model knows them
        pub = publisher(mosquitto.port)
        truth = sc.send(pub, clean["X"][order], clean["y"][order], 1.7e9)
        n_clean = len(clean["y"])

        def seen() -> int:
            return int(((node.models.status()["models"][MODEL].get("drift") or {}).get("1") or {}).get("seen", 0))

        def at_hub_after(t: float) -> dict[str, Any] | None:
            v = admin.get(f"/api/v1/models/{MODEL}/drift")["nodes"].get("edge-p")
            return v if v and v["ts"] > t else None

        wait_for(lambda: seen() >= n_clean, 120, "the node to score every clean window")
        t_scored = time.time()
        quiet = wait_for(lambda: at_hub_after(t_scored), 30, "the node's drift after every clean window at the hub")
        t_quiet = time.time()
        wait_for(lambda: len(state.drift_checks(since=t_quiet)) >= 3, 60, "three watcher checks on clean data")
        checks = [d for c in state.drift_checks(since=t_quiet) for d in c["decisions"]]
        assert {d["decision"] for d in checks} == {"quiet"}, checks
        assert quiet["score"] < 0.25 and _runs("on-drift") == [], quiet
        assert state.drift_events() == []

        # drift: the pumps age
        t_onset = time.time()
        truth |= sc.send(pub, X, y, 1.8e9)
        alarm = wait_for(lambda: (lambda v: v if v["alarm"] else None)(admin.get(f"/api/v1/models/{MODEL}/drift")),
                         120, "the hub's drift alarm")
        t_alarm = time.time()
        runs = wait_for(lambda: [r for r in _runs("on-drift") if r.state and r.state.is_final()] or None, 240,
                        "the on-drift run, finished")
        t_run = time.time()
        assert len(runs) == 1 and runs[0].state.is_completed(), (runs, (tmp_path / "serve.log").read_text()[-3000:])
        run = runs[0]
        assert run.parameters["config"]["models"] == [MODEL], run.parameters
        assert run.parameters["reason"].startswith(f"{MODEL} drifted on edge-p: drift score "), run.parameters
        report = state.iterations()[-1]["report"]
        assert report["reason"] == run.parameters["reason"] and list(report["models"]) == [MODEL]
        assert report["models"][MODEL]["label"]["sent"] > 0  # the drifted uploads went to labelling
        # one drift, one run: the watcher sees the same alarm again and emits nothing
        t_after = time.time()
        wait_for(lambda: len(state.drift_checks(since=t_after)) >= 2, 60, "two more watcher checks")
        later = [d["decision"] for c in state.drift_checks(since=t_after) for d in c["decisions"]]
        assert set(later) <= {"duplicate", "cooldown", "labelling"} and "duplicate" in later, later  # labelling: waits
        assert len(state.drift_events()) == 1 and len(_runs("on-drift")) == 1

        # people label what the run sent; the watcher sees it and the automation closes the loop
        from edgeloop.devkit.annotator import simulated_annotator

        records = admin.all_uploads(kind="record")
        uploads = {u["id"]: (u["device"], u["ts"]) for u in records}
        project = report["models"][MODEL]["label"]["project"]
        t_labelled = time.time()
        made = simulated_annotator(label_studio.labelling(), project,
                                   lambda data: sc.LABELS[truth[uploads[data["edgeloop_id"]]]])
        assert made == report["models"][MODEL]["label"]["sent"]
        second = wait_for(lambda: [r for r in _runs("on-drift") if r.id != run.id and r.state and r.state.is_final()]
                          or None, 300, "the run the labels started, finished")[0]
        t_served = wait_for(lambda: time.time() if sc.serving(admin) == "2" else None, 120,
                            "the node to serve version 2")
        assert second.state.is_completed(), (second.state, (tmp_path / "serve.log").read_text()[-3000:])
        assert "new labels of pump_anomaly" in second.parameters["reason"], second.parameters
        closed = state.iterations()[-1]["report"]["models"][MODEL]
        assert closed["harvest"]["new_labels"] == made and closed["harvest"]["problems"] == [], closed["harvest"]
        assert closed["gate"]["promoted"], closed["gate"]
        assert closed["rollout"]["rolled_out"] is True and closed["rollout"]["champion"] == "2", closed["rollout"]
        assert len(_runs("on-drift")) == 2
    finally:
        _drop_projects(ls)
        state.close()
        if serve is not None:
            serve.terminate()
            serve.wait(30)
        if node is not None:
            node.stop()
        hub.stop()
    edge = alarm["nodes"]["edge-p"]
    print(f"drift (SYNTHETIC pumps): clean score {quiet['score']:.3f} over {quiet['rows']} rows; drifted score "
          f"{edge['score']:.3f} (worst input {edge['worst']}); alarm {t_alarm - t_onset:.1f} s after onset, the "
          f"on-drift run finished {t_run - t_alarm:.1f} s after the alarm; {made} labels made; version 2 served "
          f"{t_served - t_labelled:.1f} s after labelling began ({t_served - t_onset:.1f} s after onset, the "
          f"annotator's time included); gate {closed['gate']['why']}")
