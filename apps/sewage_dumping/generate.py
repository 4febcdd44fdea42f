"""Render SYNTHETIC street-camera videos with ground truth for the sewage-dumping app.

    python -m apps.sewage_dumping.generate --out DIR [--cameras 3] [--frames 300] [--variant day] [--seed 0]

Writes ``DIR/cam-N.mp4`` (640x480, 10 fps, mp4v) and ``DIR/cam-N.json`` (per-frame truth: person at the
drain, dumping, event id, drain ROI), ``DIR/devices.yaml`` (the cameras bound to ``street_camera`` as file
sources) and ``DIR/pipeline.yaml`` (the app's pipeline with each camera's drain region).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from models.common import subseed
from models.street import render_clip

APP = Path(__file__).resolve().parent


def generate(out: Path, *, cameras: int = 3, frames: int = 300, variant: str = "day", seed: int = 0,
             fps: float = 10.0, realtime: bool = False, loop: bool = False) -> dict[str, Any]:
    """Render the cameras; returns ``{camera: truth}`` and writes devices.yaml and pipeline.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    truths, devices, regions = {}, [], {}
    for i in range(1, cameras + 1):
        cam = f"cam-{i}"
        truth = render_clip(out / f"{cam}.mp4", variant=variant, seed=subseed(seed, 20, i), frames=frames, fps=fps)
        truths[cam] = truth
        regions[cam] = {"drain": truth["frames"][0]["drain_roi"]}
        devices.append({"id": cam, "product": "street_camera", "connector": "video", "file": f"{cam}.mp4",
                        "fps": fps, "realtime": realtime, "loop": loop})
    (out / "devices.yaml").write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    spec = yaml.safe_load((APP / "pipeline.yaml").read_text())
    for step in spec["steps"]:
        if "region_of_interest" in step:
            step["region_of_interest"]["per_device"] = regions
    (out / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return truths


def write_node(out: Path, node: str, *, broker_port: int, hub_url: str | None = None, token: str | None = None,
               heartbeat: float = 5.0) -> Path:
    """A node.yaml next to the generated cameras: the product, their bindings, the app's pipeline, and the hub
    with a durable outbox when ``hub_url`` is given."""
    (out / "products.yaml").write_text((APP / "products.yaml").read_text())
    cfg: dict[str, Any] = {
        "node": node, "broker": {"host": "127.0.0.1", "port": broker_port}, "store": {"path": f"{node}.db"},
        "products": ["products.yaml"], "devices": ["devices.yaml"],
        "pipelines": [{"instance": "sewage", "pipeline": "pipeline.yaml"}], "publish_telemetry": False}
    if hub_url:
        cfg["hub"] = {"url": hub_url, "token": token, "heartbeat": heartbeat}
        cfg["outbox"] = {"path": f"{node}-outbox.db"}
    path = out / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def events(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """The dumping acts of a clip: event id, first and last frame index of pouring."""
    acts: dict[int, list[int]] = {}
    for f in truth["frames"]:
        if f["dumping"]:
            acts.setdefault(f["event_id"], []).append(f["index"])
    return [{"event": e, "first": min(ix), "last": max(ix)} for e, ix in sorted(acts.items())]


def frame_index(alert: dict[str, Any]) -> int:
    """The frame an alert was raised on: an alert item as raised/stored, or a hand-written loop's dict."""
    return int(alert["frame_index"] if "frame_index" in alert else alert["record"]["values"]["frame_index"])


def score(alerts: list[dict[str, Any]], truths: dict[str, Any]) -> dict[str, Any]:
    """Alerts against the truth. An alert is a hit when its frame lies in a dumping act (from 5 frames before
    the pouring starts, the person is already at the drain, to 10 after it stops); precision = hits /
    alerts, recall = acts with at least one hit / acts."""
    hits, seen = 0, set()
    for a in alerts:
        idx = frame_index(a)
        match = [e for e in events(truths[a["device"]]) if e["first"] - 5 <= idx <= e["last"] + 10]
        if match:
            hits += 1
            seen.add((a["device"], match[0]["event"]))
    acts = sum(len(events(t)) for t in truths.values())
    return {"alerts": len(alerts), "acts": acts, "matched_alerts": hits, "acts_found": len(seen),
            "precision": round(hits / len(alerts), 3) if alerts else None,
            "recall": round(len(seen) / acts, 3) if acts else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.sewage_dumping.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--variant", default="day", choices=["day", "night", "rain", "other_bucket"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    truths = generate(Path(args.out), cameras=args.cameras, frames=args.frames, variant=args.variant, seed=args.seed)
    for cam, t in truths.items():
        print(f"{cam}: {len(t['frames'])} frames, dumping acts {json.dumps(events(t))} (SYNTHETIC)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
