"""The edge model store with real BentoML bundles: verified before anything is unpickled, tampered bundles
refused and counted while the running version keeps serving, health-checked, hot-swapped, rolled back."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.instance import Instance
from edge_runtime.modelkit import Predictor
from edge_runtime.modelstore import InstallError, ModelStore
from edge_runtime.pipeline import parse_pipeline
from edge_runtime.records import Batch
from edge_runtime.signing import build_manifest, init_keys, load_private_key, load_public_keys, sign_manifest
from models.common import load_split

MARKER = "pwned.txt"


class Bomb:
    """Unpickling this writes a file: proof of whether a bundle was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.write_text, (Path(self.path), "unpickled"))


def signed(ws: Any, archive: Path, name: str, version: str, keys: Path | None = None) -> tuple[dict, str]:
    key = load_private_key((keys or ws.keys) / "signing.key")
    manifest = build_manifest(archive, name, version, key, metrics={"clean.f1": 0.9})
    return manifest, sign_manifest(manifest, key)


def bento(ws: Any, name: str, version: str, artifact: Path | None = None) -> Path:
    from models import bento as packaging

    packaging.build(name, version, artifact or ws.artifact(name))
    return packaging.export(name, version, ws.root / "bundles")


def tar_with(members: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for n, data in members.items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def bundles(workspace: Any) -> dict[str, Path]:
    """Real .bento archives: pump_anomaly v1 and v2 (same artifact), intrusion v1."""
    return {"pump1": bento(workspace, "pump_anomaly", "1"), "pump2": bento(workspace, "pump_anomaly", "2"),
            "intrusion1": bento(workspace, "intrusion", "1")}


@pytest.fixture
def store(tmp_path: Path, workspace: Any, bundles: dict[str, Path]) -> ModelStore:
    s = ModelStore(tmp_path / "store", load_public_keys(workspace.keys))
    s.install_archive(bundles["pump1"], *signed(workspace, bundles["pump1"], "pump_anomaly", "1"),
                      name="pump_anomaly", version="1")
    return s


def pump_inputs(ws: Any) -> np.ndarray:
    return load_split(ws.root / "data" / "prepared" / "pump_anomaly" / "holdout_drifted.npz")["X"]


def test_installed_bundle_predicts_as_the_training_process(store: ModelStore, workspace: Any,
                                                           bundles: dict[str, Path]) -> None:
    X = pump_inputs(workspace)
    want_p, want_c = Predictor(workspace.artifact("pump_anomaly"))(X)
    active = store.get("pump_anomaly")
    got_p, got_c = active(X)
    assert active.tag == "pump_anomaly:1" and active.health["n"] == 16
    assert np.array_equal(got_p, want_p) and np.array_equal(got_c, want_c)
    # the image model too, on the crops it was evaluated on
    store.install_archive(bundles["intrusion1"], *signed(workspace, bundles["intrusion1"], "intrusion", "1"),
                          name="intrusion", version="1")
    crops = load_split(workspace.root / "data" / "prepared" / "intrusion" / "holdout_clean.npz")["X"][:64]
    wp, wc = Predictor(workspace.artifact("intrusion"))(crops)
    gp, gc = store.get("intrusion")(crops)
    assert np.array_equal(gp, wp) and np.allclose(gc, wc, atol=1e-6)
    # laid out as a BentoML home: the model and the bento are where BentoML looks for them
    assert (store.root / "models" / "intrusion" / "1" / "model.yaml").is_file()
    assert (store.root / "bentos" / "intrusion" / "1" / "bento.yaml").is_file()
    assert store.status()["models"]["intrusion"]["active"] == "1"


def refuse(store: ModelStore, archive: Path, manifest: Any, signature: Any, name: str = "pump_anomaly",
           version: str = "2") -> InstallError:
    with pytest.raises(InstallError) as err:
        store.install_archive(archive, manifest, signature, name=name, version=version)
    assert store.get("pump_anomaly").version == "1", "the running version must keep serving"
    return err.value


def test_tampered_unsigned_and_foreign_bundles_are_refused_and_counted(store: ModelStore, workspace: Any,
                                                                       bundles: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    good = bundles["pump2"]
    manifest, sig = signed(workspace, good, "pump_anomaly", "2")
    flipped = tmp_path / "flipped.bento"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    assert "sha256 mismatch" in str(refuse(store, flipped, manifest, sig))
    assert "unsigned" in str(refuse(store, good, manifest, None))
    other = tmp_path / "other-keys"
    init_keys(other)
    assert "unknown key id" in str(refuse(store, good, *signed(workspace, good, "pump_anomaly", "2", keys=other)))
    assert "bad signature" in str(refuse(store, good, {**manifest, "metrics": {"clean.f1": 1.0}}, sig))
    # a genuine, signed intrusion bundle offered as pump_anomaly
    foreign = signed(workspace, bundles["intrusion1"], "intrusion", "2")
    assert "name mismatch" in str(refuse(store, bundles["intrusion1"], *foreign))
    assert "version" in str(refuse(store, good, *signed(workspace, good, "pump_anomaly", "7")))
    refused = store.status()["refused"]
    assert refused == {"sha256 mismatch": 1, "unsigned": 1, "unknown key id": 1, "bad signature": 1,
                       "name mismatch": 1, "version mismatch": 1}
    assert store.installed("pump_anomaly") == ["1"]  # nothing of a refused bundle was kept


def test_a_tampered_bundle_is_never_unpickled(store: ModelStore, workspace: Any, bundles: dict[str, Path],
                                              tmp_path: Path) -> None:
    """A bundle whose model.joblib runs code when unpickled, offered with the genuine manifest (sha256 of the
    real archive): refused at verification, and the code never ran."""
    import joblib

    marker = tmp_path / MARKER
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    for f in workspace.artifact("pump_anomaly").iterdir():
        (evil_dir / f.name).write_bytes(f.read_bytes())
    joblib.dump(Bomb(str(marker)), evil_dir / "model.joblib")
    evil = bento(workspace, "pump_anomaly", "3")  # the genuine bundle is what was signed ...
    manifest, sig = signed(workspace, evil, "pump_anomaly", "3")
    members = {}
    with tarfile.open(evil) as tar:  # ... then the archive is swapped for one with the bomb inside
        for m in tar.getmembers():
            if m.isfile():
                members[m.name] = tar.extractfile(m).read()
    key = next(k for k in members if k.endswith("/model.joblib"))
    members[key] = (evil_dir / "model.joblib").read_bytes()
    swapped = tar_with(members, tmp_path / "swapped.bento")
    with pytest.raises(InstallError, match="sha256 mismatch|size mismatch"):
        store.install_archive(swapped, manifest, sig, name="pump_anomaly", version="3")
    assert not marker.exists(), "the tampered bundle was unpickled"


def test_signed_but_broken_bundles_fail_extract_or_health_and_the_old_version_serves(
        store: ModelStore, workspace: Any, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bento"
    garbage.write_bytes(b"not a tar archive" * 100)
    assert "corrupt archive" in str(refuse(store, garbage, *signed(workspace, garbage, "pump_anomaly", "2")))
    escape = tar_with({"../../escape.txt": b"x", "models/pump_anomaly/2/model.yaml": b"x"}, tmp_path / "esc.bento")
    assert "unsafe archive member" in str(refuse(store, escape, *signed(workspace, escape, "pump_anomaly", "2")))
    assert not (tmp_path / "escape.txt").exists() and not (store.root.parent / "escape.txt").exists()
    # a signed bundle whose model does not answer as its health sample says
    art = tmp_path / "drifted-artifact"
    art.mkdir()
    for f in workspace.artifact("pump_anomaly").iterdir():
        (art / f.name).write_bytes(f.read_bytes())
    with np.load(art / "sample.npz") as z:
        x, pred, conf = z["x"], z["pred"], z["conf"]
    np.savez(art / "sample.npz", x=x, pred=1 - pred, conf=conf)
    from models import bento as packaging

    with pytest.raises(Exception, match="health check failed"):  # packaging checks health too
        packaging.build("pump_anomaly", "4", art)
    members = {f"models/pump_anomaly/4/{f.name}": f.read_bytes() for f in art.iterdir()}
    sick = tar_with(members, tmp_path / "sick.bento")
    err = refuse(store, sick, *signed(workspace, sick, "pump_anomaly", "4"), version="4")
    assert err.stage == "health" and "predictions differ" in str(err)
    status = store.status()
    assert status["refused"] == {"corrupt archive": 2, "health check failed": 1}
    assert status["models"]["pump_anomaly"]["active"] == "1" and "health" in status["models"]["pump_anomaly"]["error"]


def test_rollback_and_restart_restore(store: ModelStore, workspace: Any, bundles: dict[str, Path]) -> None:
    store.install_archive(bundles["pump2"], *signed(workspace, bundles["pump2"], "pump_anomaly", "2"),
                          name="pump_anomaly", version="2")
    assert store.get("pump_anomaly").version == "2"
    assert store.get("pump_anomaly:1").version == "1"  # a pinned version stays loaded
    assert store.rollback("pump_anomaly").version == "1"
    assert store.get("pump_anomaly").version == "1"
    store.activate("pump_anomaly", "2")
    again = ModelStore(store.root, load_public_keys(workspace.keys))  # the node restarts
    assert again.get("pump_anomaly") is None
    assert again.restore() == {}
    assert again.get("pump_anomaly").version == "2" and again.rollback("pump_anomaly").version == "1"
    with pytest.raises(KeyError, match="no previous version"):
        ModelStore(store.root / "empty").rollback("pump_anomaly")


def test_hot_swap_under_load_serves_every_batch_by_one_whole_version(store: ModelStore, workspace: Any,
                                                                     bundles: dict[str, Path]) -> None:
    from models.pump_anomaly.features import FEATURES

    store.install_archive(bundles["pump2"], *signed(workspace, bundles["pump2"], "pump_anomaly", "2"),
                          name="pump_anomaly", version="2", activate=False)
    plan = parse_pipeline({"name": "score", "steps": [
        {"device_input": {}}, {"apply_model": {"model": "pump_anomaly", "inputs": FEATURES, "output": "anomaly",
                                               "batch_size": 64}}]})
    inst = Instance("score", plan, models=store)
    X = pump_inputs(workspace)[:200]
    batch = Batch.from_records([{"device": f"p{i % 4}", "ts": float(i), "values": dict(zip(FEATURES, map(float, row)))}
                                for i, row in enumerate(X.tolist())])
    stop = threading.Event()
    swaps = []

    def swapper() -> None:
        while not stop.is_set():
            v = "2" if store.get("pump_anomaly").version == "1" else "1"
            store.activate("pump_anomaly", v)
            swaps.append(v)

    t = threading.Thread(target=swapper)
    t.start()
    tags, total = set(), 0
    try:
        for _ in range(60):
            out = inst.push(batch)
            seen = {r["values"]["anomaly_model"] for r in out.to_records()}
            assert len(seen) == 1, f"one batch served by {seen}"
            tags |= seen
            total += len(out)
    finally:
        stop.set()
        t.join()
    assert total == 60 * len(batch) and not inst.dead_letters.items
    assert len(swaps) > 10 and tags == {"pump_anomaly:1", "pump_anomaly:2"}


def test_store_state_file_is_json(store: ModelStore) -> None:
    assert json.loads((store.root / "active.json").read_text()) == {"pump_anomaly": {"active": "1", "previous": None}}


def test_an_unreachable_hub_is_retried_not_refused(tmp_path: Path, workspace: Any) -> None:
    from edge_runtime.hubclient import HubClient
    from edge_runtime.ports import free_port

    s = ModelStore(tmp_path / "s", load_public_keys(workspace.keys),
                   client=HubClient(f"http://127.0.0.1:{free_port()}", "eln_x", timeout=2))
    errors = s.reconcile({"pump_anomaly": {"version": "1"}})
    assert "pump_anomaly" in errors and "download" in errors["pump_anomaly"]
    assert s.retry is True and s.status()["refused"] == {} and s.installed("pump_anomaly") == []
    assert s.reconcile({}) == {} and s.retry is False


def test_the_node_store_is_a_bentoml_home(store: ModelStore, workspace: Any) -> None:
    """What the node extracted is what BentoML itself loads: the Bento's service, in-process, answers as the
    node's predictor does (`BENTOML_HOME=<store> bentoml serve pump_anomaly:1` serves the same)."""
    import subprocess
    import sys

    X = pump_inputs(workspace)[:32]
    np.save(store.root / "x.npy", X)
    code = ("import bentoml, numpy as np, json, sys\n"
            "svc = bentoml.load('pump_anomaly:1')()\n"
            "out = svc.predict(np.load(sys.argv[1]))\n"
            "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", code, str(store.root / "x.npy")], capture_output=True, text=True,
                          timeout=120, cwd=store.root / "bentos" / "pump_anomaly" / "1" / "src",
                          env={**os.environ, "BENTOML_HOME": str(store.root), "BENTOML_DO_NOT_TRACK": "true",
                               "PYTHONPATH": str(store.root / "bentos" / "pump_anomaly" / "1" / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    pred, conf = store.get("pump_anomaly")(X)
    assert out["model"] == "pump_anomaly:1" and out["predictions"] == pred.tolist()
    assert np.allclose(out["confidences"], conf, atol=1e-12)


def test_a_pinned_version_serves_beside_the_active_one_and_leaves_memory_when_unpinned(
        store: ModelStore, workspace: Any, bundles: dict[str, Path]) -> None:
    """What a pipeline instance pinning ``pump_anomaly:2`` gets: version 2 loaded beside the active 1, which
    stays what ``pump_anomaly`` serves; a pin that fails leaves the served version's error alone."""
    with pytest.raises(InstallError, match="not installed on this node"):
        store.pin("pump_anomaly", "2", download=False)
    store.install_archive(bundles["pump2"], *signed(workspace, bundles["pump2"], "pump_anomaly", "2"),
                          name="pump_anomaly", version="2", activate=False)
    store.unpin(set())  # installed, loaded by the install, pinned by nothing: out of memory
    assert store.get("pump_anomaly:2") is None
    assert store.pin("pump_anomaly", "2", download=False).version == "2"
    assert store.get("pump_anomaly:2").version == "2" and store.get("pump_anomaly").version == "1"
    with pytest.raises(InstallError, match="no hub configured"):  # not installed, and nowhere to fetch it from
        store.pin("pump_anomaly", "9")
    status = store.status()["models"]["pump_anomaly"]
    assert status["pinned"] == ["2"] and status["active"] == "1" and status["error"] is None
    store.register("local_model", lambda X: (np.zeros(len(X)), None), version="7")  # the node's own model
    assert store.pin("local_model", "7") is store.get("local_model")
    store.unpin({("local_model", "7")})
    assert store.get("pump_anomaly:2") is None and store.get("pump_anomaly").version == "1"
    assert "pinned" not in store.status()["models"]["pump_anomaly"]
    assert store.status()["models"]["local_model"]["pinned"] == ["7"]
