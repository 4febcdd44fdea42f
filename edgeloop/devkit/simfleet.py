"""SIMULATED nodes for rollout tests and benchmarks: many nodes in one process against a real hub.

Each :class:`SimNode` has a real :class:`edge_runtime.modelstore.ModelStore` that downloads signed bundles
from the hub's warehouse, verifies, loads and health-checks them, and a small loop that does what the node
agent does about models: fetch its desired state, reconcile toward it, send a heartbeat. It can also score
a stream of SYNTHETIC records with whatever version is active (``score_per_step``) and upload them with
``<output>_model``/``<output>_confidence`` tags, the way ``apply_model`` tags real inferences. What it
cannot score (no active model during a swap) is counted in :attr:`SimNode.unscored`: the records a real
node would have dead-lettered. :func:`make_bundle` packs a tiny scikit-learn model the way
``edgeloop model package`` lays out a bundle (``models/<name>/<version>/``).
"""

from __future__ import annotations

import tarfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_runtime.hubclient import HubClient, HubError, HubUnreachable
from edge_runtime.modelkit import write_descriptor, write_sample
from edge_runtime.modelstore import ModelStore
from edge_runtime.signing import load_public_keys

__all__ = ["SimNode", "make_bundle", "publish"]


def make_bundle(tmp: Path, model: str, version: str, seed: int) -> Path:
    """A tiny bundle to be signed: a logistic regression with its descriptor and health sample."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * seed > 0).astype(int)
    art = tmp / f"artifact-{model}-{version}"
    art.mkdir(parents=True)
    joblib.dump(LogisticRegression().fit(x, y), art / "model.joblib")
    write_descriptor(art, {"name": model, "kind": "sklearn", "input": "table", "features": ["a", "b"],
                           "labels": ["ok", "bad"]})
    write_sample(art, x[:8])
    archive = tmp / f"{model}-{version}.bento"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(art, arcname=f"models/{model}/{version}")
    return archive


def publish(admin: HubClient, archive: Path, model: str, version: str, keys: Path) -> None:
    """Sign ``archive`` with the key in ``keys`` and upload it to the hub's warehouse."""
    from models import bento

    bento.upload(admin, archive, *bento.sign(archive, model, version, {}, keys))


class SimNode:
    """A SIMULATED node: a real ModelStore reconciling toward its desired state and heartbeats every
    ``interval`` s. ``confidence`` (per version) makes it upload 5 records a step carrying that confidence;
    ``score_per_step`` makes it score that many SYNTHETIC rows a step with the active version (counted per
    version in :attr:`scored`)."""

    def __init__(self, hub_url: str, admin: HubClient, name: str, group: str, root: Path, keys: Path, *,
                 model: str, interval: float = 0.2, score_per_step: int = 0) -> None:
        self.name, self.model, self.interval, self.score_per_step = name, model, interval, score_per_step
        token = admin.post("/api/v1/nodes", {"name": name, "group": group})["token"]
        self.client = HubClient(hub_url, token)
        self.store = ModelStore(root / name, load_public_keys(keys / "signing.pub"), client=self.client)
        self.seen: set[str] = set()      # every version its desired state ever named
        self.dead_letters = 0
        self.confidence: dict[str, float] = {}
        self.sent = 0
        self.scored: dict[str, int] = {}
        self.unscored = 0
        self.first_served: dict[str, float] = {}   # version -> when this node first served it (time.time())
        self.errors = 0
        self._rows = np.random.default_rng(len(name)).normal(size=(max(score_per_step, 1), 2)).astype(np.float32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> None:
        doc = self.client.get(f"/api/v1/nodes/{self.name}/desired")
        want = doc.get("models", {})
        self.seen.update(w["version"] for w in want.values())
        self.store.reconcile(want)
        active = self.store.get(self.model)
        version = getattr(active, "version", None)
        if version is not None and version not in self.first_served:
            self.first_served[version] = time.time()
        self.client.post(f"/api/v1/nodes/{self.name}/heartbeat",
                         {"models": self.store.status(), "counters": {"dead_letters": self.dead_letters}})
        if self.score_per_step:
            if active is None:
                self.unscored += self.score_per_step
            else:
                active.proba(self._rows)
                self.scored[version] = self.scored.get(version, 0) + self.score_per_step
        conf = self.confidence.get(version or "")
        if conf is not None:
            now = time.time()
            items = [{"id": f"r{self.sent + i}", "kind": "record", "device": "d1", "seq": self.sent + i, "ts": now,
                      "record": {"device": "d1", "ts": now, "values": {  # nested, as the upload operator sends it
                          "score": 1, "score_confidence": conf, "score_model": f"{self.model}:{version}"}}}
                     for i in range(5)]
            self.client.post(f"/api/v1/nodes/{self.name}/uploads", {"items": items})
            self.sent += len(items)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except (HubError, HubUnreachable, OSError):
                self.errors += 1  # the hub away (a restart): the next round tries again
            self._stop.wait(self.interval)

    def start(self) -> SimNode:
        self._thread = threading.Thread(target=self._run, name=f"node-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def serving(self) -> str | None:
        return getattr(self.store.get(self.model), "version", None)
