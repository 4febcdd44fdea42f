"""The sewage-dumping part of ``edgeloop demo``: SYNTHETIC street cameras on an edge node, alerts at the hub.

:class:`CameraDemo` trains the two CV models on synthetic clips (cached, about a minute the first time),
renders the cameras' videos with ground truth, runs them as live cameras (paced at their frame rate) on
an edge node connected to a hub, shows each alert as the hub stores it, and scores the alerts against
the truth: frames, fps, alerts, precision/recall, latency from the frame to the hub, bytes uploaded
against the videos' bytes. The models are registered in the node's model store from local artifacts;
rolling them out from the hub's warehouse is the models issue's path (``edgeloop model deploy``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from apps.sewage_dumping.generate import events, generate, score, write_node

from .cache import CACHE, cached, fingerprint

MODEL_PARAMS: dict[str, Any] = {
    "seed": 0, "scenes": {"frames": 300, "train_clips": 4, "clean_clips": 1, "drifted_clips": 1},
    "pump_anomaly": {"train_pumps": 2, "train_hours": 2.0, "holdout_pumps": 1, "holdout_hours": 2.0},
    "intrusion": {"epochs": 4}, "activity": {"epochs": 4},
}
"""Small SYNTHETIC training data (4 clips of 300 frames, 4 epochs): good enough for the generated scenes in
about a minute on 2 cores; the demo, the app's test and the benchmarks share it."""



def ensure_models(cache: Path = CACHE) -> dict[str, Any]:
    """The intrusion and activity artifacts under ``<root>/artifacts``, trained on :data:`MODEL_PARAMS` once per
    parameters and model code (:func:`edgeloop.devkit.cache.cached` under ``cache``); the demo, the app's test
    and the benchmarks share them. Returns ``{"root", "seconds", "trained", "params"}``."""
    from models import stages

    t = time.perf_counter()
    built: dict[str, Any] = {"trained": []}
    names = ("intrusion", "activity")
    root = cached("cv-models", fingerprint(MODEL_PARAMS), lambda folder: built.update(
        stages.ensure_artifacts(folder, names, MODEL_PARAMS)), cache=cache)
    return {"root": str(root), "seconds": round(time.perf_counter() - t, 2), "trained": built["trained"],
            "params": MODEL_PARAMS}


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


class CameraDemo:
    """Cameras -> node -> hub. ``prepare()`` (models, videos), ``start()``, ``wait()``, ``report()``."""

    def __init__(self, console: Any, work: Path, *, broker_port: int, hub: Any, cameras: int = 2,
                 frames: int = 300, seed: int = 7, node: str = "edge-cameras", cache: Path = CACHE) -> None:
        self.console, self.work, self.broker_port, self.hub = console, work, broker_port, hub
        self.cameras, self.frames, self.seed, self.node_name, self.cache = cameras, frames, seed, node, cache
        self.truths: dict[str, Any] = {}
        self.models = self.cache  # set by prepare(): the trained artifacts
        self.node: Any = None
        self.admin = hub.admin()
        self.alerts: list[dict[str, Any]] = []  # as stored at the hub, in storage order
        self.after = 0
        self.started_at = 0.0
        self.played_s = 0.0
        self.stopped = False

    def prepare(self) -> None:
        t = time.perf_counter()
        got = ensure_models(self.cache)
        self.models = Path(got["root"]) / "artifacts"
        how = f"trained in {got['seconds']:.0f} s" if got["trained"] else "reused"
        self.console.print(f"[bold]models[/]: intrusion + activity CNNs on synthetic clips ({how}; {got['root']})")
        t = time.perf_counter()
        self.truths = generate(self.work / "cams", cameras=self.cameras, frames=self.frames, seed=self.seed,
                               realtime=True)
        acts = sum(len(events(t)) for t in self.truths.values())
        self.console.print(f"[bold]cameras[/]: {self.cameras} SYNTHETIC street cameras, {self.frames} frames each at "
                           f"10 fps, {acts} dumping acts in the ground truth (rendered in "
                           f"{time.perf_counter() - t:.0f} s)")

    def start(self) -> None:
        from edge_runtime.modelkit import Predictor
        from edge_runtime.modelstore import ModelStore
        from edge_runtime.node import Node, load_node_config

        token = self.admin.post("/api/v1/nodes", {"name": self.node_name})["token"]
        cfg = write_node(self.work / "cams", self.node_name, broker_port=self.broker_port, hub_url=self.hub.url,
                         token=token, heartbeat=2.0)
        store = ModelStore(self.work / "model-store")
        for name in ("intrusion", "activity"):
            store.register(name, Predictor(self.models / name, version="demo"))
        self.node = Node(load_node_config(cfg), models=store)
        self.started_at = time.time()
        self.node.start()
        self.console.print(f"[bold]node[/] {self.node_name}: sewage-dumping pipeline on "
                           f"{', '.join(sorted(self.node.connectors['video'].cameras))}")

    def frames_done(self) -> int:
        return sum(c.stats()["frames"] for c in self.node.connectors["video"].cameras.values()) if self.node else 0

    def finished(self) -> bool:
        return self.node is not None and all(c.finished.is_set() for c in self.node.connectors["video"].cameras.values())

    def poll(self) -> None:
        """Print the alerts the hub stored since the last call (read from where the last call ended)."""
        from urllib.parse import urlencode

        while True:
            page = self.admin.get("/api/v1/uploads?" + urlencode({"kind": "alert", "node": self.node_name,
                                                                  "after": self.after, "limit": 1000}))
            if not page["items"]:
                return
            self.after = page["next"]
            self.alerts.extend(page["items"])
            for a in page["items"]:
                v = a["record"]["values"]
                size = (a.get("image") or {}).get("size", 0)
                self.console.print(f"[red]ALERT[/] {a['device']} frame {v['frame_index']}: dumping at the drain "
                                   f"(intrusion {v['intrusion_confidence']:.2f}, activity "
                                   f"{v['activity_confidence']:.2f}); JPEG {size / 1024:.0f} KiB at the hub "
                                   f"{(a['received_at'] - a['ts']) * 1000:.0f} ms after the frame")

    def stop(self) -> None:
        if self.node is None or self.stopped:
            return
        self.stopped = True
        self.node.engine.drain(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = self.node.outbox.stats()
            if st["rows"] == 0 and st["media"] == 0:
                break
            time.sleep(0.1)
        self.played_s = time.time() - self.started_at
        self.stats = {c: s.stats() for c, s in self.node.connectors["video"].cameras.items()}
        self.node.stop(keep_state=False)  # the demo ends: what is still open is emitted

    def report(self) -> dict[str, Any]:
        """Per camera and in total: frames, fps, alerts, precision/recall, latency, bytes."""
        import orjson

        self.poll()  # the last ones
        alerts = self.alerts
        rows: dict[str, dict[str, Any]] = {}
        for cam in sorted(self.truths) + ["all"]:
            mine = [a for a in alerts if cam in ("all", a["device"])]
            truths = self.truths if cam == "all" else {cam: self.truths[cam]}
            cams = list(truths)
            frames = sum(self.stats[c]["frames"] for c in cams)
            mp4 = sum((self.work / "cams" / f"{c}.mp4").stat().st_size for c in cams)
            raw = frames * 640 * 480 * 3
            sent = sum(len(orjson.dumps({k: v for k, v in a.items() if k != "received_at"})) +
                       (a.get("image") or {}).get("size", 0) for a in mine)
            lat = [(a["received_at"] - a["ts"]) * 1000 for a in mine]
            rows[cam] = {"frames": frames, "fps": round(frames / self.played_s / len(cams), 1),
                         "corrupt_frames": sum(self.stats[c]["corrupt_frames"] for c in cams),
                         **score(mine, truths), "latency_p50_ms": pct(lat, 50), "latency_p99_ms": pct(lat, 99),
                         "uploaded_bytes": sent, "video_bytes": mp4, "raw_frame_bytes": raw,
                         "uploaded_share_of_video": sent / mp4 if mp4 else None}
        return rows


def table(rows: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(title="sewage-dumping detection (SYNTHETIC street cameras): camera -> node -> hub")
    for col in ("camera", "frames", "fps", "alerts/acts", "precision", "recall", "ms p50/p99", "uploaded",
                "/video", "/raw"):
        t.add_column(col, justify="left" if col == "camera" else "right")
    for cam, r in rows.items():
        t.add_row(cam, f"{r['frames']:,}", f"{r['fps']:.1f}", f"{r['alerts']}/{r['acts']}",
                  _num(r["precision"]), _num(r["recall"]),
                  f"{_num(r['latency_p50_ms'], 0)}/{_num(r['latency_p99_ms'], 0)}",
                  f"{r['uploaded_bytes'] / 1024:,.0f} KiB", f"{r['uploaded_bytes'] / r['video_bytes']:.2%}",
                  f"{r['uploaded_bytes'] / r['raw_frame_bytes']:.3%}")
    t.caption = ("fps: per camera (live, paced at 10 fps); ms: frame decoded -> alert stored at the hub; uploaded: "
                 "alert JSON + JPEG, against the cameras' mp4 bytes and their decoded frames' bytes")
    return t


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
