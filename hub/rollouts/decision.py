"""The rollout state machine: :func:`decide` takes what the hub observes of a group's nodes and answers the
rollout's next state and action. Pure: no database, no clock, no I/O (the controller, :mod:`hub.rollouts.controller`,
does those), so it is tested with plain data.

A rollout (``POST /api/v1/rollouts``, ``edgeloop rollout start MODEL:VERSION --to GROUP``, or with
``--pipeline`` for PIPELINE:VERSION) moves through

``canary``
    The first ``canary`` nodes of the group (sorted by name, online nodes first) get a node-level
    deployment of the version; the rest of the group keeps the group's deployment (the previous version).
    When every canary serves the version and the checks have passed for ``watch_s`` seconds in a row, the
    rollout is promoted (or by hand: ``POST .../promote``).
``rolling``
    The group's deployment is the version; the canaries' node-level deployments are removed (they follow
    the group again).
``done`` / ``done_with_offline``
    ``done`` when every node of the group is online and serves the version. While some node is offline
    (no heartbeat for the hub's ``offline_after``) and every online node serves the version, the state is
    ``done_with_offline``: settled for whoever waits, but not finished: offline nodes are listed as
    ``waiting`` and the controller keeps watching; the rollout becomes ``done`` once they are back and
    serve the version (or ``rolling`` again while one of them installs it). An offline node is never
    counted as done.
``rolled_back``
    A target node (a canary, or any node of the group once rolling) refused or failed to load the version
    (its heartbeat's model status has an error naming ``model:version``), or its dead-letter counter grew
    by more than ``checks.max_error_rate`` per heartbeat while serving the version, or, during the canary
    phase, the mean confidence of records the canaries uploaded with the version fell more than
    ``checks.max_confidence_drop`` below the mean of records made by the previous version. The canaries'
    node-level deployments go back to what they were (usually none: they follow the group's previous
    version again); a rolling rollout also puts the group's deployment back to the previous version. By
    hand: ``POST .../rollback``.
``superseded``
    A newer rollout of the same model to the same group started while this one was ``done_with_offline``.

Pipelines roll out the same way. The group's assignments of the pipeline (its instances) must name a
version: an unpinned one follows the newest version, so a new version would reach every node at once. The
canaries get node-level assignments of the new version (same instances, same devices); promotion moves the
group's assignments to it; a rollback restores them. A canary fails when its node cannot start an instance
of the version (its heartbeat's errors name the pipeline and version), or on the dead-letter rate; there is
no confidence check (a pipeline has no confidence of its own).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..client import ACTIVE, record_values

__all__ = ["Checks", "Decision", "NodeObs", "decide", "observe_model", "observe_pipeline", "select_canaries",
           "tally_confidence"]


@dataclass(frozen=True)
class Checks:
    """Thresholds of the automatic rollback (``checks`` in ``POST /api/v1/rollouts``)."""

    max_error_rate: float = 1.0          # dead letters per heartbeat a node serving the version may add
    min_heartbeats: int = 2              # heartbeats before the error rate is judged
    max_confidence_drop: float = 0.1     # canary mean confidence may be at most this below the previous one
    min_records: int = 20                # records on both sides before the confidence is judged

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Checks:
        """Checks from a mapping; ValueError names an unknown key or a bad value."""
        d = dict(d or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"checks: unknown {', '.join(map(repr, unknown))}; expected some of {', '.join(known)}")
        out: dict[str, Any] = {}
        for k, v in d.items():
            want = int if k in ("min_heartbeats", "min_records") else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
                    or (want is int and v != int(v)):
                raise ValueError(f"checks.{k}: expected a non-negative {'integer' if want is int else 'number'}, "
                                 f"got {v!r:.40}")
            out[k] = want(v)
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class NodeObs:
    """What the hub knows about one node of the group (from its last heartbeat)."""

    name: str
    online: bool
    active: str | None = None     # the version of the model it serves
    error: str | None = None      # its model store's error for the model (a refusal, a failed load)
    heartbeats: int = 0
    dead_letters: int = 0
    seen: float | None = None     # when that heartbeat came


@dataclass
class Decision:
    """:func:`decide`'s answer: the new state, at most one action, per-node statuses, updated bookkeeping."""

    state: str
    action: str | None = None     # "promote" or "rollback"
    reason: str | None = None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    healthy_since: float | None = None
    baselines: dict[str, dict[str, int]] = field(default_factory=dict)


def _mean(tally: Any) -> tuple[float, int] | None:
    if not tally or not tally[1]:
        return None
    return tally[0] / tally[1], int(tally[1])


def decide(*, name: str, version: str, state: str, canaries: Iterable[str], nodes: Mapping[str, NodeObs],
           watch_s: float, checks: Checks, now: float, healthy_since: float | None = None,
           baselines: Mapping[str, Mapping[str, int]] | None = None,
           canary_confidence: Any = None, previous_confidence: Any = None,
           started: float | None = None) -> Decision:
    """One evaluation of a rollout of ``name`` (a model's or a pipeline's, as it is tagged in the nodes'
    errors: ``name:version``) at ``version``; no I/O.

    ``nodes`` are the group's nodes now; ``baselines`` per node the heartbeat and dead-letter counts when
    it was first seen serving the version (set here, returned in the decision); ``*_confidence`` are
    ``[sum, n]`` tallies of record confidences made by the version on the canaries and by the previous
    version on any node of the group.
    """
    canaries = list(canaries)
    base = {k: dict(v) for k, v in (baselines or {}).items()}
    if state not in ACTIVE:
        return Decision(state=state, healthy_since=healthy_since, baselines=base)
    tag = f"{name}:{version} "
    targets = set(canaries) if state == "canary" else set(nodes) | set(canaries)
    view: dict[str, dict[str, Any]] = {}
    trouble: str | None = None
    for name in sorted(set(nodes) | set(canaries)):
        n = nodes.get(name)
        entry: dict[str, Any] = {"canary": name in canaries}
        view[name] = entry
        if n is None:
            entry.update(status="offline", reason="waiting: the node was deleted")
            continue
        if name not in targets:
            entry.update(status="pending" if n.online else "offline",
                         reason="waits for the canaries" if n.online else "waiting: offline")
            continue
        # an error in a heartbeat from before the rollout began is not about it (a node restarted after a refusal)
        if n.error and tag in n.error + " " and (started is None or n.seen is None or n.seen >= started):
            entry.update(status="failed", reason=n.error)
            trouble = trouble or f"{'canary ' if name in canaries else ''}node {name} failed: {n.error}"
            continue
        if not n.online:
            entry.update(status="offline", reason="waiting: offline" + (" (last seen serving the version)"
                                                                         if n.active == version else ""))
            continue
        if n.active != version:
            entry.update(status="installing", reason=f"serves {n.active or 'nothing'}, installing {version}")
            continue
        entry.update(status="serving", reason=None)
        b = base.get(name)
        if b is None or n.heartbeats < b["heartbeats"] or n.dead_letters < b["dead_letters"]:
            base[name] = {"heartbeats": n.heartbeats, "dead_letters": n.dead_letters}  # first seen, or restarted
            continue
        beats, dead = n.heartbeats - b["heartbeats"], n.dead_letters - b["dead_letters"]
        if beats >= max(1, checks.min_heartbeats) and dead / beats > checks.max_error_rate:
            entry["reason"] = f"{dead} dead letters in {beats} heartbeats"
            trouble = trouble or (f"node {name}: error rate {dead / beats:.2f} dead letters per heartbeat "
                                  f"({dead} in {beats}) is above {checks.max_error_rate:g}")
    if trouble is None and state == "canary":
        new, old = _mean(canary_confidence), _mean(previous_confidence)
        if new and old and new[1] >= checks.min_records and old[1] >= checks.min_records \
                and old[0] - new[0] > checks.max_confidence_drop:
            trouble = (f"mean confidence on the canaries {new[0]:.3f} ({new[1]} records) is {old[0] - new[0]:.3f} "
                       f"below the previous version's {old[0]:.3f} ({old[1]} records); at most "
                       f"{checks.max_confidence_drop:g} is allowed")
    if trouble is not None:
        return Decision(state="rolled_back", action="rollback", reason=trouble, nodes=view, baselines=base)
    if state == "canary":
        ready = bool(canaries) and all(view[c]["status"] == "serving" for c in canaries)
        since = (healthy_since or now) if ready else None
        if ready and since is not None and now - since >= watch_s:
            return Decision(state="rolling", action="promote", nodes=view, baselines=base,
                            reason=f"the canaries served {version} with passing checks for {watch_s:g} s")
        return Decision(state="canary", nodes=view, healthy_since=since, baselines=base)
    statuses = [e["status"] for e in view.values()]
    if any(s in ("installing", "pending") for s in statuses):
        return Decision(state="rolling", nodes=view, baselines=base)
    waiting = sorted(k for k, e in view.items() if e["status"] == "offline")
    if waiting:
        return Decision(state="done_with_offline", nodes=view, baselines=base,
                        reason=f"every online node serves {version}; waiting for {', '.join(waiting)} (offline)")
    return Decision(state="done", nodes=view, baselines=base, reason=f"every node of the group serves {version}")


def tally_confidence(items: Iterable[Mapping[str, Any]], model: str) -> dict[str, list[float]]:
    """``{version: [sum, n]}`` of the confidences in uploaded records made by ``model`` (read through
    :func:`edge_runtime.modelkit.model_outputs`)."""
    from edge_runtime.modelkit import model_outputs

    out: dict[str, list[float]] = {}
    for item in items:
        values = record_values(item)
        for output, version in model_outputs(values, model):
            conf = values.get(f"{output}_confidence")
            if isinstance(conf, (int, float)) and not isinstance(conf, bool) and math.isfinite(conf):
                t = out.setdefault(version, [0.0, 0])
                t[0] += float(conf)
                t[1] += 1
    return out


def select_canaries(nodes: Iterable[NodeObs], n: int) -> list[str]:
    """The first ``n`` nodes: online nodes first, then by name (deterministic)."""
    return [x.name for x in sorted(nodes, key=lambda x: (not x.online, x.name))][:n]


# -- observations: what a node's view (its newest heartbeat) says about what is rolled out ---------------
def _counters(view: Mapping[str, Any]) -> dict[str, Any]:
    """A node's name, online state, heartbeats and dead letters: NodeObs fields whatever is rolled out."""
    dead = (view.get("counters") or {}).get("dead_letters", 0)
    dead = dead.get("total", 0) if isinstance(dead, Mapping) else dead
    seen = view.get("last_seen")
    return {"name": view["name"], "online": bool(view.get("online")), "heartbeats": int(view.get("heartbeats") or 0),
            "seen": float(seen) if isinstance(seen, (int, float)) else None,
            "dead_letters": int(dead) if isinstance(dead, (int, float)) and not isinstance(dead, bool) else 0}


def observe_model(view: Mapping[str, Any], model: str) -> NodeObs:
    """A node's ``model``: the version it serves and its model store's error about it, from its heartbeat."""
    status = view.get("models") or {}
    per = (status.get("models") or {}).get(model) if isinstance(status, Mapping) else None
    per = per if isinstance(per, Mapping) else {}
    return NodeObs(active=str(per["active"]) if per.get("active") is not None else None,
                   error=str(per["error"]) if per.get("error") else None, **_counters(view))


def observe_pipeline(view: Mapping[str, Any], pipeline: str, instances: Iterable[str]) -> NodeObs:
    """A node's ``instances`` (the group's assignments of ``pipeline``): the version they run (several while it
    swaps them: not the rollout's; absent from a node too old to say it) and its reconcile errors about them,
    each tagged ``pipeline:version`` as :func:`decide` matches them."""
    names = set(instances)
    running = sorted({str(i.get("version")) for i in view.get("instances") or []
                      if isinstance(i, Mapping) and i.get("instance") in names and i.get("pipeline") == pipeline
                      and i.get("source") == "hub"})
    errors = [e for e in view.get("errors") or [] if isinstance(e, Mapping) and e.get("pipeline") == pipeline
              and e.get("instance") in names and not e.get("retry")]  # retry: pending (a model download), not refused
    error = "; ".join(f"{pipeline}:{e.get('version')} instance {e.get('instance')}: {e.get('error')}"
                      for e in errors) or None
    return NodeObs(active=",".join(running) or None, error=error, **_counters(view))

