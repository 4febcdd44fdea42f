"""Models as plug-ins: the contract, the registry, `edgeloop model init`, and a model package that lives outside
EdgeLoop's tree (scaffolded into a temporary directory, installed with pip) trained, gated, packaged, rolled out
and improved by the agile loop like a built-in one, every part real (Prefect, a hub process, Mosquitto, a node,
Label Studio with a SIMULATED annotator, MLflow, BentoML). Its data is SYNTHETIC pump windows written as the
CSV field data such a model reads."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.kit import ROOT
from tests.kit.hub import ADMIN, HubProcess, wait_for
from tests.kit.modelpkg import install_model


def edgeloop(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


# -- the contract and the registry ------------------------------------------------------------------------------
def test_the_reference_models_are_plugins_and_the_loop_names_none_of_them() -> None:
    from models import plugins

    found = plugins.plugins(reload=True)
    assert {"pump_anomaly", "intrusion", "activity"} <= set(found)
    assert found["intrusion"].input == "image" and found["pump_anomaly"].features
    names = re.compile(r"pump_anomaly|intrusion|activity")
    for f in [*sorted((ROOT / "flows").glob("*.py")), ROOT / "models" / "stages.py", ROOT / "dvc.yaml"]:
        hits = [f"{f.name}:{i}" for i, line in enumerate(f.read_text().splitlines(), 1) if names.search(line)]
        assert hits == [], f"{f} names a reference model: {hits}"
    # the pipeline `edgeloop model init -w` writes into a workspace is the project's own
    assert (ROOT / "models" / "workspace.dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()


def test_a_broken_plugin_is_refused_with_every_problem_named() -> None:
    from models.plugins import PluginError, check

    bad = types.SimpleNamespace(NAME="Leak", LABELS=["ok"], INPUT="audio", DEFAULTS={}, prepare=lambda *a: None,
                                xy="not callable")
    with pytest.raises(PluginError) as caught:
        check(bad, "pkg.mod")
    msg = str(caught.value)
    for part in ("model plug-in pkg.mod", "NAME = 'Leak'", "LABELS = ['ok']", "INPUT = 'audio'", "no fit",
                 "xy = 'not callable'"):
        assert part in msg, msg


def test_an_unknown_model_names_the_registered_ones() -> None:
    from models import plugins

    with pytest.raises(KeyError) as caught:
        plugins.get("nope")
    assert "unknown model 'nope'" in caught.value.args[0] and "pump_anomaly" in caught.value.args[0]
    assert "edgeloop model init nope" in caught.value.args[0]


def test_model_init_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    for args, message in ((("Leak", "--kind", "tabular", "--features", "a"), "model name 'Leak'"),
                          (("leak", "--kind", "audio"), "--kind 'audio'"),
                          (("leak", "--kind", "tabular"), "--features: a tabular model needs"),
                          (("leak", "--kind", "image", "--labels", "a,a"), "two distinct class names"),
                          (("leak", "--kind", "image", "-w", str(tmp_path / "nowhere")), "params.yaml: no such file")):
        done = edgeloop("model", "init", *args, "--dir", str(tmp_path))
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_model_init_adds_the_model_to_a_workspace_keeping_its_comments(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text("seed: 1  # the seed\nmodels:   # what we train\n"
                                    "  other: {data: data/raw, code: other}\n\nloop:\n  labelled_repeat: 2\n")
    done = edgeloop("model", "init", "leak", "--kind", "tabular", "--features", "flow,pressure", "--labels",
                    "ok,leak", "--dir", str(tmp_path / "pkgs"), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    text = (ws / "params.yaml").read_text()
    assert "# the seed" in text and "# what we train" in text
    params = yaml.safe_load(text)
    assert list(params["models"]) == ["other", "leak"]
    assert params["models"]["leak"] == {"data": "data/field/leak", "code": str((tmp_path / "pkgs" / "leak" /
                                                                                "leak_model").resolve())}
    assert params["leak"]["threshold"] == 0.5 and params["loop"] == {"labelled_repeat": 2}
    assert (ws / "data" / "field" / "leak").is_dir() and (ws / "data" / "labelled" / "leak").is_dir()
    again = edgeloop("model", "init", "leak", "--kind", "tabular", "--features", "x", "--dir",
                     str(tmp_path / "other"), "-w", str(ws))
    assert again.returncode == 2 and "models.leak is there already" in again.stderr
    assert not (tmp_path / "other").exists()


# -- a package of one's own through the loop ---------------------------------------------------------------------
def write_field_csv(path: Path, features: list[str], blocks: list[tuple[np.ndarray, np.ndarray, float]]) -> None:
    """SYNTHETIC windows as field data: ``(X, y, t0)`` blocks, six pumps taking turns every 10 minutes."""
    from edgeloop.devkit.scenarios.pumps import LABELS

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", "device", *features, "label"])
        for X, y, t0 in blocks:
            for i, (row, label) in enumerate(zip(X, y)):
                w.writerow([t0 + 600.0 * (i // 6), f"pump-{i % 6}", *np.round(row, 5), LABELS[int(label)]])


@pytest.mark.broker
@pytest.mark.labelstudio
@pytest.mark.timeout(900)
def test_a_model_package_of_ones_own_is_trained_and_improved_by_the_loop(
        prefect_api: str, label_studio: Any, mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_runtime.node import Node, load_node_config
    from edgeloop.devkit.annotator import simulated_annotator
    from edgeloop.devkit.scenarios import pumps as sc
    from flows import steps
    from flows.loop import agile_loop
    from models import plugins, stages, tracking
    from models.common import load_split
    from tests.kit.mqtt import publisher

    features = sc.features()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text("seed: 0\nloop:\n  labelled_repeat: 4\n")
    package = install_model(tmp_path, ws, "leak", "--kind", "tabular", "--features", ",".join(features),
                            "--labels", "normal,anomalous", monkeypatch=monkeypatch)
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "tests"], cwd=package, capture_output=True, text=True, timeout=300)  # its own tests
    assert own.returncode == 0 and "2 passed" in own.stdout, own.stdout[-3000:]
    assert plugins.get("leak").source == "leak_model"  # found through its entry point, as pip installed it
    assert not str(Path(plugins.get("leak").module.__file__)).startswith(str(ROOT))

    # the workspace: field data (SYNTHETIC: clean pumps, then a recent drifted period) and the model in params.yaml
    gen = tmp_path / "gen"
    pump = stages.model_module("pump_anomaly")
    pump.generate(gen / "raw", sc.PARAMS, 3)
    pump.prepare(gen / "raw", gen / "prepared", stages.model_params("pump_anomaly", sc.PARAMS))
    clean, drifted = (load_split(gen / "prepared" / f"{s}.npz") for s in ("train", "holdout_drifted"))
    recent = len(clean["y"]) // 4  # the last 20% of the rows: the drifted period the gate wants improved
    write_field_csv(ws / "data" / "field" / "leak" / "export.csv", features,
                    [(clean["X"], clean["y"], 1.6e9), (drifted["X"][:recent], drifted["y"][:recent], 1.65e9)])
    trained = edgeloop("model", "train", "leak", "--root", str(ws))
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert "registered leak version 1" in trained.stdout and "leak on field holdouts" in trained.stdout
    splits = {s: load_split(ws / "data" / "prepared" / "leak" / f"{s}.npz") for s in stages_splits()}
    assert splits["holdout_drifted"]["ts"].min() >= 1.65e9 > splits["train"]["ts"].max()  # recent: later
    assert not set(splits["holdout_clean"]["device"]) & set(splits["train"]["device"])  # other pumps

    X, y = sc.field_windows(tmp_path / "field", 1234)  # what the pumps send now: drifted, another seed
    hub = HubProcess(tmp_path / "hub", broker_port=mosquitto.port, heartbeat=0.5).start()
    node = None
    try:
        admin = hub.admin()
        config = {"workspace": str(ws), "hub_url": hub.url, "hub_token": ADMIN,
                  "label_studio_url": label_studio.url, "label_studio_token": label_studio.token,
                  "min_labels": 10, "keys_dir": str(tmp_path / "keys"), "group": "pumps", "canary": 1,
                  "watch_s": 1.0}  # no `models`: every model of the workspace, here leak alone
        assert steps.LoopConfig(**config).model_names() == ["leak"]
        assert steps.package(steps.LoopConfig(**config), "leak", "1")["packaged"] is True
        admin.put("/api/v1/models/leak/deployments/group:pumps", {"version": "1"})
        token = admin.post("/api/v1/nodes", {"name": "edge-p", "group": "pumps"})["token"]
        node = Node(load_node_config(sc.write_node(tmp_path / "node", mosquitto.port, hub.url, token,
                                                   tmp_path / "keys", model="leak")))
        node.start()
        wait_for(lambda: sc.serving(admin, model="leak") == "1", 60, "the node to serve leak version 1")
        truth = sc.send(publisher(mosquitto.port), X, y, 1.7e9)
        wait_for(lambda: len(admin.all_uploads(kind="record")) >= len(X), 300, "every inference at the hub")
        uploads = {u["id"]: (u["device"], u["ts"]) for u in admin.all_uploads(kind="record")}

        first = agile_loop(config)["models"]["leak"]
        sent = first["label"]["sent"]
        assert 10 <= sent <= 0.10 * len(X), first["collect"]
        made = simulated_annotator(label_studio.labelling(), first["label"]["project"],
                                   lambda data: sc.LABELS[truth[uploads[data["edgeloop_id"]]]])
        assert made == sent
        second = agile_loop(config)["models"]["leak"]
        assert second["retrain"]["retrained"] and second["retrain"]["candidate"] == "2", second["retrain"]
        gate = second["gate"]
        assert gate["promoted"] and gate["candidate_drifted"] > gate["champion_drifted"], gate
        assert second["package"]["packaged"] is True and second["rollout"]["rolled_out"] is True, second["rollout"]
        wait_for(lambda: sc.serving(admin, model="leak") == "2", 60, "the node to serve leak version 2")
        assert tracking.alias_version("leak", "champion", ws) == "2"
        assert node.dead_letters.total == 0
        print(f"plug-in leak (outside the tree, SYNTHETIC pump windows as field CSV): {sent} labels of {len(X)} "
              f"uploads; recent holdout accuracy {gate['champion_drifted']:.3f} -> {gate['candidate_drifted']:.3f},"
              f" device holdout {gate['champion_clean']:.3f} -> {gate['candidate_clean']:.3f}")
    finally:
        if node is not None:
            node.stop()
        hub.stop()


def stages_splits() -> tuple[str, ...]:
    from models.common import SPLITS

    return SPLITS
