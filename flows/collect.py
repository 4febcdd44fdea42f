"""The loop's first two steps: ``collect`` the new uploaded inference records of a model and choose which to label
(the edge's hard examples and a random share), and ``label``: send them to the model's Label Studio project."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from . import selection
from .config import LoopConfig, LoopError, hub_call
from .state import LoopState

__all__ = ["CAPS", "MEDIA_FIELD", "READINGS_FIELD", "collect", "descriptor", "label", "model_output", "sample_key",
           "within_caps"]


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
#: a record field with the window's raw readings, ``{"ts": [epoch s...], channel: [numbers...]}``: charted for the
#: person labelling (Label Studio's TimeSeries). Aggregated windows (the pump pipelines) do not carry them.
READINGS_FIELD = "readings"
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
    pool: list[tuple[float, dict[str, Any]]] = []  # (fixed random key, item) of every record
    last = after

    images = descriptor(cfg, model).get("input") in ("image", "clip")

    def item(u: dict[str, Any], values: dict[str, Any], out: str | None, reason: str) -> dict[str, Any]:
        pred = values.get(out) if out else None
        kept = {k: v for k, v in values.items() if isinstance(v, (int, float, str))}
        media = (u.get("image") or {}).get("media") if isinstance(u.get("image"), dict) else None
        if media:
            kept[MEDIA_FIELD] = f"{u.get('node')}/{media}"  # where harvest finds the image again
        readings = values.get(READINGS_FIELD)
        extra = {"series": dict(readings)} if isinstance(readings, dict) and readings.get("ts") else {}
        return {"id": u["id"], "node": u.get("node"), "device": u.get("device"), "ts": u.get("ts"),
                "values": kept, "output": out, "product": (u.get("record") or {}).get("product"), **extra,
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
            pool.append((sample_key(model, u["id"]), item(u, values, out, "random")))  # every upload: flows.selection
        if not got["items"]:
            break
        last = got["next"]
    budget = int(seen * cfg.max_label_share)
    fresh = state.unsent([p["id"] for _, p in pool])
    features = None if images else descriptor(cfg, model).get("features")
    hard, randoms = selection.choose(cfg, model, [kp for kp in pool if kp[1]["id"] in fresh], hard, budget, after,
                                     features)
    fill: list[dict[str, Any]] = []
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
    units = _units(cfg, hub, {str(p["product"]) for p in items if p.get("product")}) if items else {}
    for p in items:
        p["units"] = units.get(str(p.get("product"))) or {}
    return {"model": model, "uploads": seen, "selected_at_edge": marked, "budget": budget,
            "random": len(randoms) + len(fill), "hard": len(hard), "without_image": no_image,
            "image_pending": len(pending), "items": items, "watermark": last}


def _units(cfg: LoopConfig, hub: Any, products: set[str]) -> dict[str, dict[str, str]]:
    """Per product: the unit of each property the hub's shared product declares (what a person labelling sees
    beside the numbers); a product the hub does not have, or a hub that refuses, gives none."""
    from edge_runtime.hubclient import HubError

    try:
        known = hub_call(cfg, lambda: hub.get("/api/v1/products"))
    except HubError:
        return {}
    out: dict[str, dict[str, str]] = {}
    for p in known if isinstance(known, list) else []:
        props = ((p.get("spec") or {}).get("properties") or {}) if p.get("name") in products else {}
        out[p["name"]] = {k: str(v["unit"]) for k, v in props.items() if isinstance(v, dict) and v.get("unit")}
    return out


#: the collection caps: (LoopConfig field, window in seconds), counted per model over the loop state's sent tasks
CAPS = {"minute": ("label_cap_minute", 60.0), "hour": ("label_cap_hour", 3600.0), "day": ("label_cap_day", 86400.0)}


def within_caps(cfg: LoopConfig, state: LoopState, model: str, items: list[dict[str, Any]],
                now: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The items that may go to labelling now under the caps of ``cfg`` (at most N tasks of ``model`` in any
    minute, hour, day: what was sent in the window before ``now`` counts, across runs), and what happened:
    ``{"caps": {window: N}, "room": {window: how many more}, "held_back": {window: how many it held back}}``.
    The tightest cap holds the excess back; kept are the edge's hard examples and the random share in their
    proportion (``random_share``), each in collect's order. Held-back items are not sent: the watermark moves
    past them as past the uploads outside the label share."""
    now = time.time() if now is None else now
    caps: dict[str, int] = {}
    for window, (name, _) in CAPS.items():
        n = getattr(cfg, name)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise LoopError(f"{name} (EDGELOOP_{name.upper()}) is {n!r}: expected a whole number of tasks >= 0 "
                            "(0: no cap)")
        if n:
            caps[window] = n
    room = {w: max(0, n - state.sent_since(model, now - CAPS[w][1])) for w, n in caps.items()}
    report: dict[str, Any] = {"caps": caps, "room": room, "held_back": {}}
    allowed = min(room.values(), default=len(items))
    if allowed >= len(items):
        return items, report
    tightest = min(room, key=lambda w: (room[w], CAPS[w][1]))
    report["held_back"] = {tightest: len(items) - allowed}
    randoms = [p for p in items if p.get("reason") == "random"]
    hard = [p for p in items if p.get("reason") != "random"]
    take_random = min(len(randoms), max(allowed - len(hard), int(round(allowed * cfg.random_share))))
    keep = {id(p) for p in randoms[:take_random] + hard[: allowed - take_random]}
    return [p for p in items if id(p) in keep], report


def label(cfg: LoopConfig, state: LoopState, model: str, collected: dict[str, Any]) -> dict[str, Any]:
    """Send the collected items to the model's Label Studio project (created if missing), with the edge's
    prediction as a pre-annotation, as many as the collection caps allow (``held_back``: how many each cap
    held back); then move the watermark. Table windows are shown as a table of their features by channel, or
    charted when every item carries its raw readings (flows.labelviews)."""
    d = descriptor(cfg, model)
    ls = cfg.labelling()
    kind = "image" if d.get("input") in ("image", "clip") else "table"
    items, caps = within_caps(cfg, state, model, collected["items"])
    view: str | None = None
    channels: dict[str, str | None] | None = None
    if kind == "table" and items:
        series = [p.get("series") for p in items]
        view = "series" if all(isinstance(x, dict) for x in series) else "features"
        if view == "series":
            channels = {}
            for p in items:
                for ch in p["series"]:
                    if ch != "ts":
                        channels.setdefault(str(ch), (p.get("units") or {}).get(ch))
    project = ls.ensure_project(model, kind, list(d.get("labels") or ["0", "1"]), view=view, channels=channels)
    sent = ls.send(project, items) if items else 0
    state.mark_sent(model, project, items)
    state.set_watermark(model, collected["watermark"])
    return {"project": project, "sent": sent, "total_sent": state.sent_count(model),
            "held_back": sum(caps["held_back"].values()), "held_back_by": caps["held_back"], "caps": caps["caps"]}
