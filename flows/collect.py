"""The loop's first two steps: ``collect`` the new uploaded inference records of a model and choose which to label
(the edge's hard examples and a random share), and ``label``: send them to the model's Label Studio project."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from .config import LoopConfig, LoopError, hub_call
from .state import LoopState

__all__ = ["MEDIA_FIELD", "collect", "descriptor", "label", "model_output", "sample_key"]


def model_output(values: dict[str, Any], model: str) -> str | None:
    """The output field a record's apply_model step wrote for ``model`` (None: not this model's record)."""
    from edge_runtime.modelkit import model_outputs

    return next((out for out, _version in model_outputs(values, model)), None)


def descriptor(cfg: LoopConfig, model: str) -> dict[str, Any]:
    """What the loop needs of ``model``: its trained artifact's descriptor, or, before there is one (the cold
    start), its plug-in's name, labels, input and features."""
    path = cfg.root / "artifacts" / model / "edgeloop-model.json"
    if path.exists():
        return json.loads(path.read_text())
    from models import plugins

    try:
        p = plugins.get(model)
    except KeyError:
        raise LoopError(f"no trained {model} in {cfg.root / 'artifacts'} and no model plug-in of that name: run "
                        "`make repro` (or `dvc repro`) there first, or install the model's package") from None
    return {"name": model, "labels": p.labels, "input": p.input, "features": p.features, "cold_start": True}


def source_pipeline(cfg: LoopConfig, model: str) -> str | None:
    """The pipeline whose uploads feed ``model`` before it makes decisions of its own (``models.<model>.uploads``
    in the workspace's params.yaml): the cold start, where a pipeline samples its inputs for labelling."""
    from models.common import load_params

    try:
        entry = ((load_params(cfg.root / "params.yaml").get("models") or {}).get(model)) or {}
    except (OSError, ValueError):
        return None
    return str(entry["uploads"]) if isinstance(entry, dict) and entry.get("uploads") else None


MEDIA_FIELD = "_media"  # in a sent item's values: node/media id of its image at the hub
MEDIA_GRACE_S = 600.0   # how long collect waits for a record's image to reach the hub before giving up on it


def sample_key(model: str, upload_id: str) -> float:
    """A uniform number in [0, 1) fixed by the upload's id: the hub-side random share picks the smallest
    keys, so a re-run (after a failure) picks the same records and nothing has to be remembered."""
    digest = hashlib.blake2b(f"{model}\0{upload_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def collect(cfg: LoopConfig, state: LoopState, model: str, *, page: int = 5000) -> dict[str, Any]:
    """New uploaded inference records of ``model`` since the watermark, and which of them to label: at most
    ``max_label_share`` of them, ``random_share`` of that budget drawn uniformly from all the records (what
    the model now sees), the rest the edge's hard examples (records it marked ``select``: low confidence,
    disagreement), least confident first. Returns the items to label and counts; the watermark moves only
    when labelling succeeds.

    Why a random share: on the SYNTHETIC pump scenario (6,048 drifted windows, 10% labelled) labelling the
    least confident windows only recovered 0.70 drifted accuracy, a uniform sample 0.91, half and half 0.91
    (bench/agile_loop.py; low-confidence windows sit on the old boundary, the drift moved the data away)."""
    from hub.client import record_values

    hub = cfg.hub()
    labels = descriptor(cfg, model).get("labels") or ["0", "1"]
    source = source_pipeline(cfg, model)
    after = state.watermark(model)
    seen = marked = no_image = 0
    hard: list[dict[str, Any]] = []
    pool: list[tuple[float, dict[str, Any]]] = []  # records under the sampling threshold, for the random share
    keep_below = min(1.0, 2.0 * cfg.max_label_share * cfg.random_share)  # twice what the random share needs
    last = after

    images = descriptor(cfg, model).get("input") in ("image", "clip")

    def item(u: dict[str, Any], values: dict[str, Any], out: str | None, reason: str) -> dict[str, Any]:
        pred = values.get(out) if out else None
        kept = {k: v for k, v in values.items() if isinstance(v, (int, float, str))}
        media = (u.get("image") or {}).get("media") if isinstance(u.get("image"), dict) else None
        if media:
            kept[MEDIA_FIELD] = f"{u.get('node')}/{media}"  # where harvest finds the image again
        return {"id": u["id"], "node": u.get("node"), "device": u.get("device"), "ts": u.get("ts"),
                "values": kept,
                "prediction": labels[int(pred)] if isinstance(pred, (int, float)) and 0 <= int(pred) < len(labels)
                else None if pred is None else str(pred), "confidence": values.get(f"{out}_confidence"),
                "model_version": values.get(f"{out}_model"), "reason": reason,
                "cursor": u.get("cursor"), "received_at": u.get("received_at")}

    while True:
        got = hub_call(cfg, lambda w=last: hub.get(f"/api/v1/uploads?kind=record&after={w}&limit={page}"))
        for u in got["items"]:
            values = dict(record_values(u))
            out = model_output(values, model)
            if out is None and (source is None or u.get("pipeline") != source):
                continue  # not this model's decision, nor an input sampled for it
            if images and not (u.get("image") or {}).get("media"):
                no_image += 1  # an image model's decision without its image cannot be labelled
                continue
            seen += 1
            reason = values.get("select")
            marked += bool(reason)
            if reason and reason != "random":
                hard.append(item(u, values, out, str(reason)))
            key = sample_key(model, u["id"])
            if key < keep_below:
                pool.append((key, item(u, values, out, "random")))
        if not got["items"]:
            break
        last = got["next"]
    budget = int(seen * cfg.max_label_share)
    fresh = state.unsent([p["id"] for p in hard] + [p["id"] for _, p in pool])
    pool.sort(key=lambda kp: kp[0])
    randoms = [p for _, p in pool if p["id"] in fresh][: int(round(budget * cfg.random_share))]
    chosen = {p["id"] for p in randoms}
    hard = sorted((p for p in hard if p["id"] in fresh and p["id"] not in chosen),
                  key=lambda p: p["confidence"] if p["confidence"] is not None else 1.0)[: budget - len(randoms)]
    chosen |= {p["id"] for p in hard}
    fill = [p for _, p in pool if p["id"] in fresh and p["id"] not in chosen][: budget - len(randoms) - len(hard)]
    from edge_runtime.hubclient import HubError

    items, pending = hard + randoms + fill, []
    for p in items if images else ():
        try:
            p["image"] = hub_call(cfg, lambda p=p: hub.get(f"/api/v1/media/{p['values'][MEDIA_FIELD]}"))
        except HubError as exc:
            if exc.status != 404:
                raise
            # records come over MQTT, their images over HTTP: a recent one may not be there yet; it is taken
            # up again by the next run (the watermark stays before it). An old one never will be: skipped.
            if time.time() - (p.get("received_at") or 0) < MEDIA_GRACE_S:
                pending.append(p)
            else:
                no_image += 1
    if images:
        items = [p for p in items if "image" in p]
        if pending:
            last = min(last, min(p["cursor"] for p in pending) - 1)
    return {"model": model, "uploads": seen, "selected_at_edge": marked, "budget": budget,
            "random": len(randoms) + len(fill), "hard": len(hard), "without_image": no_image,
            "image_pending": len(pending), "items": items, "watermark": last}


def label(cfg: LoopConfig, state: LoopState, model: str, collected: dict[str, Any]) -> dict[str, Any]:
    """Send the collected items to the model's Label Studio project (created if missing), with the edge's
    prediction as a pre-annotation; then move the watermark."""
    d = descriptor(cfg, model)
    ls = cfg.labelling()
    kind = "image" if d.get("input") in ("image", "clip") else "table"
    project = ls.ensure_project(model, kind, list(d.get("labels") or ["0", "1"]))
    items = collected["items"]
    sent = ls.send(project, items) if items else 0
    state.mark_sent(model, project, items)
    state.set_watermark(model, collected["watermark"])
    return {"project": project, "sent": sent, "total_sent": state.sent_count(model)}
