"""Drift starts the loop, the Prefect way: the drift watcher turns a model's drift alarm at the hub into a Prefect
event, and the ``agile-loop/on-drift`` deployment's trigger (an automation, :mod:`flows.serve` and
prefect.yaml) runs the loop for that model only.

    edgeloop.model.drifted   resource edgeloop.model.<name>, payload: score, threshold, nodes, worst input, reason
    edgeloop.model.labelled  resource edgeloop.model.<name>, payload: labels, reason

The second closes the loop without a person starting it: a drift run sends the drifted uploads to Label Studio
and ends (the loop never waits for a person); once people finished at least ``min_labels`` of them, the watcher
emits ``edgeloop.model.labelled`` (once per loop iteration and model) and the same trigger runs the loop again,
which harvests, retrains, gates, packages and rolls out.

Why the loop side reads the hub rather than the hub emitting: the hub knows nothing of Prefect (no Prefect
import or URL in hub/, and a hub may serve fleets whose loop runs elsewhere or not at all); the watcher runs
beside the loop's deployments (``python -m flows.serve``, ``edgeloop up``), where the Prefect API is, reading
``GET /api/v1/models/{name}/drift`` with the loop's admin token. The hub decides what drift is (a score over
the model's threshold for its sustain time on a node); the watcher only decides whether to start a run:

* de-duplication: one event per alarm episode (a model's alarm that started at the same time is the same
  drift: its event id is derived from it, and the loop state remembers it);
* cooldown: at most one event per model every ``drift_cooldown_s`` (default one hour), so a drift the new
  version does not fix yet does not start a run per poll;
* the nightly cron stays as the fallback: a loop that never drifts still retrains on what people labelled.

The watcher records each check in the loop state (``edgeloop loop history`` and the tests read it).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from .config import LoopConfig, LoopError, hub_call

__all__ = ["EVENT", "LABELLED", "check", "labels_ready", "watch"]

log = logging.getLogger("flows.drift")

EVENT = "edgeloop.model.drifted"
LABELLED = "edgeloop.model.labelled"
_NS = uuid.UUID("6f1d3c2a-1f0e-4d8b-9a51-3e2b7c9d0e17")


def _reason(model: str, view: dict[str, Any]) -> str:
    nodes = view["alarm_nodes"]
    worst = {view["nodes"][n].get("worst") for n in nodes} - {None}
    top = max((view["nodes"][n]["score"] or 0.0) for n in nodes)
    return (f"{model} drifted on {', '.join(nodes)}: drift score {top:.3f} over {view['threshold']:g} for "
            f"{view['sustain_s']:g} s or more (worst input: {', '.join(sorted(worst)) or '-'})")


def event_for(model: str, view: dict[str, Any]) -> Any:
    """The Prefect event for ``model``'s alarm (its id is the same for the same alarm episode)."""
    from prefect.events import Event

    episode = f"{model}:{round(view['over_since'] or 0.0, 3)}"
    return Event(event=EVENT, id=uuid.uuid5(_NS, episode),
                 resource={"prefect.resource.id": f"edgeloop.model.{model}", "prefect.resource.name": model,
                           "edgeloop.model": model},
                 payload={"model": model, "reason": _reason(model, view), "threshold": view["threshold"],
                          "sustain_s": view["sustain_s"], "over_since": view["over_since"],
                          "nodes": {n: {k: view["nodes"][n][k] for k in ("version", "score", "worst", "rows")}
                                    for n in view["alarm_nodes"]}})


def _emit(event: Any) -> None:
    import asyncio

    from prefect.events.clients import get_events_client

    async def send() -> None:
        async with get_events_client() as client:
            await client.emit(event)

    asyncio.run(send())


def check(cfg: LoopConfig, *, now: float | None = None, emit: Any = _emit) -> list[dict[str, Any]]:
    """One look at every model's drift at the hub; emits an event for each new alarm not in cooldown. Returns
    what it decided per model (``emitted``, ``duplicate``, ``cooldown``, ``quiet`` or ``error``)."""
    now = now or time.time()
    hub = cfg.hub()
    out = []
    for model in cfg.model_names():
        try:
            view = hub_call(cfg, lambda m=model: hub.get(f"/api/v1/models/{m}/drift?since={now - 3 * 86400:.0f}"))
        except LoopError as exc:
            out.append({"model": model, "decision": "error", "why": str(exc)})
            continue
        decision: dict[str, Any] = {"model": model, "alarm": view["alarm"],
                                    "score": max((v["score"] or 0.0 for v in view["nodes"].values()), default=None)}
        if not view["alarm"]:
            out.append(decision | {"decision": "quiet"})
            continue
        event = event_for(model, view)
        with cfg.state() as state:
            if state.drift_event_seen(str(event.id)):
                out.append(decision | {"decision": "duplicate", "event": str(event.id)})
                continue
            last = state.last_drift_event(model)
            if last is not None and now - last < cfg.drift_cooldown_s:
                out.append(decision | {"decision": "cooldown", "why": f"a run started {now - last:.0f} s ago "
                                                                       f"(cooldown {cfg.drift_cooldown_s:g} s)"})
                continue
            emit(event)
            state.record_drift_event(model, str(event.id), now, event.payload["reason"])
        log.info("%s: drift alarm -> %s (%s)", model, EVENT, event.payload["reason"])
        out.append(decision | {"decision": "emitted", "event": str(event.id), "reason": event.payload["reason"]})
    out += labels_ready(cfg, now=now, emit=emit)
    with cfg.state() as state:
        state.record_drift_check(now, out)
    return out


_progress: dict[str, tuple[int, float]] = {}  # model -> (finished labels not harvested, since when that many)


def labels_ready(cfg: LoopConfig, *, now: float | None = None, emit: Any = _emit) -> list[dict[str, Any]]:
    """For each model with tasks out for labelling: once people finished at least ``min_labels`` not harvested
    yet, and either every task sent is done or no new label came for ``labels_settle_s`` (people stopped for
    now), emit ``edgeloop.model.labelled`` (once per model and loop iteration: the run it starts harvests
    them). Not on every label: a run per trickle of labels would retrain for each."""
    from prefect.events import Event

    now = now or time.time()
    out = []
    for model in cfg.model_names():
        with cfg.state() as state:
            waiting = state.sent_count(model) > state.harvested_count(model)
            # the labelling round: since the last finished iteration (a run that started and harvests them now
            # is the one this event started)
            iteration = max((it["id"] for it in state.iterations() if it["finished"]), default=0)
        if not waiting:
            continue
        try:
            ls = cfg.labelling()
            project = ls.find_project(model)
            done = ls.harvest(project)[0] if project is not None else []
        except Exception as exc:  # noqa: BLE001 - Label Studio away: next time
            out.append({"model": model, "decision": "error", "why": f"Label Studio: {exc}"})
            continue
        with cfg.state() as state:
            new = state.new_annotations(r["annotation_id"] for r in done)
            remaining = state.sent_count(model) - state.harvested_count(model) - len(new)
            count, since = _progress.get(model, (-1, now))
            if len(new) != count:
                count, since = len(new), now
                _progress[model] = (count, since)
            settled = remaining <= 0 or now - since >= cfg.labels_settle_s
            if len(new) < cfg.min_labels or not settled:
                out.append({"model": model, "decision": "labelling", "labels": len(new), "needed": cfg.min_labels,
                            "remaining": remaining})
                continue
            reason = (f"{len(new)} new labels of {model} in Label Studio (at least {cfg.min_labels}): harvest, "
                      "retrain, gate, roll out")
            event = Event(event=LABELLED, id=uuid.uuid5(_NS, f"{model}:labelled:{iteration}"),
                          resource={"prefect.resource.id": f"edgeloop.model.{model}", "prefect.resource.name": model,
                                    "edgeloop.model": model},
                          payload={"model": model, "labels": len(new), "reason": reason})
            if state.drift_event_seen(str(event.id)):
                out.append({"model": model, "decision": "duplicate", "event": str(event.id), "labels": len(new)})
                continue
            emit(event)
            state.record_drift_event(f"{model}:labelled", str(event.id), now, reason)
        log.info("%s: labels ready -> %s (%s)", model, LABELLED, reason)
        out.append({"model": model, "decision": "emitted", "event": str(event.id), "reason": reason,
                    "labels": len(new)})
    return out


def watch(cfg: LoopConfig, stop: threading.Event, poll_s: float = 60.0) -> None:
    """Check every ``poll_s`` seconds until ``stop`` is set (the thread :mod:`flows.serve` runs)."""
    while not stop.is_set():
        try:
            check(cfg)
        except Exception:  # noqa: BLE001 - a bad check (hub away, no token yet) must not end the watcher
            log.exception("drift check failed; next in %s s", poll_s)
        stop.wait(poll_s)
