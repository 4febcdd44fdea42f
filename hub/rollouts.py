"""Model and pipeline rollouts: canary nodes first, then the whole group, rolled back automatically on bad
signals.

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

:func:`decide` is the controller's pure decision (observations in, state and actions out);
:class:`RolloutController` does the I/O: it reads heartbeats and uploads, calls :func:`decide` for every
active rollout every ``interval`` seconds, and writes deployments and the rollout's state, all in the hub's
database, so a restarted hub carries on where it stopped. :func:`start_rollout` and :func:`wait_rollout`
are the client side (the Prefect loop's rollout step).

Pipelines roll out the same way. The group's assignments of the pipeline (its instances) must name a
version: an unpinned one follows the newest version, so a new version would reach every node at once. The
canaries get node-level assignments of the new version (same instances, same devices); promotion moves the
group's assignments to it; a rollback restores them. A canary fails when its node cannot start an instance
of the version (its heartbeat's errors name the pipeline and version), or on the dead-letter rate; there is
no confidence check (a pipeline has no confidence of its own).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .client import ACTIVE, KINDS, record_values
from .db import (
    Assignment,
    ModelVersion,
    Node,
    PipelineVersion,
    Rollout,
    Upload,
    deployed_version,
    set_assignment,
    set_deployment,
)
from .service import SpecRejected

__all__ = ["KINDS", "Checks", "NodeObs", "Decision", "decide", "tally_confidence", "select_canaries", "RolloutController",
           "RolloutError"]

log = logging.getLogger("edgeloop.hub.rollouts")

_RECORD_SCAN = 5000  # uploads read per evaluation (the rest on the next one)


class RolloutError(Exception):
    """A rollout request that cannot be done: ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


# -- the pure decision -------------------------------------------------------------------------------
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


def decide(*, model: str, version: str, state: str, canaries: Iterable[str], nodes: Mapping[str, NodeObs],
           watch_s: float, checks: Checks, now: float, healthy_since: float | None = None,
           baselines: Mapping[str, Mapping[str, int]] | None = None,
           canary_confidence: Any = None, previous_confidence: Any = None) -> Decision:
    """One evaluation of a rollout; no I/O.

    ``nodes`` are the group's nodes now; ``baselines`` per node the heartbeat and dead-letter counts when
    it was first seen serving the version (set here, returned in the decision); ``*_confidence`` are
    ``[sum, n]`` tallies of record confidences made by the version on the canaries and by the previous
    version on any node of the group.
    """
    canaries = list(canaries)
    base = {k: dict(v) for k, v in (baselines or {}).items()}
    if state not in ACTIVE:
        return Decision(state=state, healthy_since=healthy_since, baselines=base)
    tag = f"{model}:{version} "
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
        if n.error and tag in n.error + " ":
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


def _items(rows: Iterable[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(row, the upload item) for stored upload rows whose body is a JSON object."""
    for row in rows:
        try:
            item = orjson.loads(row.body)
        except orjson.JSONDecodeError:
            continue
        if isinstance(item, dict):
            yield row, item


def select_canaries(nodes: Iterable[NodeObs], n: int) -> list[str]:
    """The first ``n`` nodes: online nodes first, then by name (deterministic)."""
    return [x.name for x in sorted(nodes, key=lambda x: (not x.online, x.name))][:n]


# -- I/O: the controller in the hub process -----------------------------------------------------------
def _counters(view: Mapping[str, Any]) -> dict[str, Any]:
    """A node's name, online state, heartbeats and dead letters: NodeObs fields whatever is rolled out."""
    dead = (view.get("counters") or {}).get("dead_letters", 0)
    dead = dead.get("total", 0) if isinstance(dead, Mapping) else dead
    return {"name": view["name"], "online": bool(view.get("online")), "heartbeats": int(view.get("heartbeats") or 0),
            "dead_letters": int(dead) if isinstance(dead, (int, float)) and not isinstance(dead, bool) else 0}


def _observe(view: Mapping[str, Any], model: str) -> NodeObs:
    status = view.get("models") or {}
    per = (status.get("models") or {}).get(model) if isinstance(status, Mapping) else None
    per = per if isinstance(per, Mapping) else {}
    return NodeObs(active=str(per["active"]) if per.get("active") is not None else None,
                   error=str(per["error"]) if per.get("error") else None, **_counters(view))


def _observe_pipeline(view: Mapping[str, Any], pipeline: str, instances: Iterable[str]) -> NodeObs:
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


def view(r: Rollout) -> dict[str, Any]:
    """A rollout as the API shows it (``name`` is the model's or the pipeline's, as ``kind`` says)."""
    stats = r.stats or {}
    conf = {k: (None if not v or not v[1] else {"mean": round(v[0] / v[1], 6), "records": int(v[1])})
            for k, v in (("canary", stats.get("canary_conf")), ("previous", stats.get("previous_conf")))}
    nodes = [{"node": k, **v} for k, v in sorted((r.nodes or {}).items())]
    kind = r.kind or "model"
    return {"id": r.id, "kind": kind, "name": r.model, "model": r.model if kind == "model" else None,
            "pipeline": r.model if kind == "pipeline" else None, "version": r.version, "group": r.group, "previous": r.previous,
            "canary": r.canary, "watch_s": r.watch_s, "checks": r.checks, "state": r.state, "canaries": r.canaries,
            "nodes": nodes, "waiting": [n["node"] for n in nodes if n.get("status") == "offline"],
            "healthy_since": r.healthy_since, "reason": r.reason, "confidence": conf, "created_at": r.created_at,
            "updated_at": r.updated_at, "finished_at": r.finished_at}


class RolloutController:
    """Evaluates every active rollout every ``interval`` seconds in a background thread.

    State lives in the database (``rollouts``); a lock serialises the thread with the API's start, promote
    and rollback in this process, and ``SELECT ... FOR UPDATE`` (PostgreSQL) with other hub processes.
    """

    def __init__(self, hub: Any, interval: float = 0.5) -> None:
        self.hub = hub
        self.interval = interval
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop
    def start(self) -> RolloutController:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="rollout-controller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the database away: try again next time
                log.exception("evaluating rollouts failed")

    def tick(self) -> None:
        """Evaluate every active rollout once."""
        with self.hub.sessions() as s:
            ids = s.scalars(sa.select(Rollout.id).where(Rollout.state.in_(ACTIVE)).order_by(Rollout.id)).all()
        for rid in ids:
            with self.lock, self.hub.sessions() as s:
                r = self._locked(s, rid)
                if r is not None and r.state in ACTIVE:
                    self._evaluate(s, r)
                    s.commit()

    # -- helpers
    @staticmethod
    def _locked(s: Session, rid: int) -> Rollout | None:
        q = sa.select(Rollout).where(Rollout.id == rid)
        if s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update()
        return s.scalars(q).first()

    def _group(self, s: Session, group: str, name: str, kind: str = "model") -> dict[str, NodeObs]:
        now = time.time()
        nodes = s.scalars(sa.select(Node).where(Node.group == group).order_by(Node.name))
        if kind == "pipeline":
            instances = [a.instance for a in self._instances(s, group, name)]
            return {n.name: _observe_pipeline(self.hub.node_view(n, now), name, instances) for n in nodes}
        return {n.name: _observe(self.hub.node_view(n, now), name) for n in nodes}

    @staticmethod
    def _instances(s: Session, group: str, pipeline: str) -> list[Assignment]:
        """The group's assignments (instances) of ``pipeline``."""
        return list(s.scalars(sa.select(Assignment).where(Assignment.target == f"group:{group}",
                                                          Assignment.pipeline == pipeline)
                              .order_by(Assignment.instance)))

    def _scan(self, s: Session, r: Rollout, stats: dict[str, Any], nodes: Iterable[str]) -> None:
        """Tally the confidences of records uploaded since the last scan."""
        names = list(nodes)
        rows = s.execute(sa.select(Upload.pk, Upload.node, Upload.body)
                         .where(Upload.pk > stats.get("cursor", 0), Upload.kind == "record", Upload.node.in_(names))
                         .order_by(Upload.pk).limit(_RECORD_SCAN)).all() if names else []
        for row, item in _items(rows):
            for ver, (total, n) in tally_confidence([item], r.model).items():
                key = "canary_conf" if ver == r.version and row.node in r.canaries else \
                    "previous_conf" if ver == r.previous else None
                if key:
                    t = stats.setdefault(key, [0.0, 0])
                    stats[key] = [t[0] + total, t[1] + n]
        if rows:
            stats["cursor"] = rows[-1].pk

    def _evaluate(self, s: Session, r: Rollout, *, now: float | None = None) -> Decision:
        now = now or time.time()
        nodes = self._group(s, r.group, r.model, r.kind or "model")
        stats = dict(r.stats or {})
        if r.kind != "pipeline":
            self._scan(s, r, stats, nodes)
        d = decide(model=r.model, version=r.version, state=r.state, canaries=r.canaries, nodes=nodes,
                   watch_s=r.watch_s, checks=Checks.from_dict(r.checks), now=now, healthy_since=r.healthy_since,
                   baselines=stats.get("baselines"), canary_confidence=stats.get("canary_conf"),
                   previous_confidence=stats.get("previous_conf"))
        stats["baselines"] = d.baselines
        if d.action == "rollback":
            self._roll_back(s, r)
        elif d.action == "promote":
            self._promote(s, r)
        if d.state != r.state:
            log.info("rollout %d (%s:%s to group %s): %s -> %s%s", r.id, r.model, r.version, r.group, r.state,
                     d.state, f": {d.reason}" if d.reason else "")
            r.reason = d.reason
        elif d.reason and d.state == "done_with_offline":
            r.reason = d.reason
        if d.state in ("done", "rolled_back"):
            r.finished_at = now
        r.state, r.nodes, r.healthy_since, r.stats, r.updated_at = d.state, d.nodes, d.healthy_since, stats, now
        return d

    def _promote(self, s: Session, r: Rollout) -> None:
        if r.kind == "pipeline":
            for a in self._instances(s, r.group, r.model):
                a.version = int(r.version)
            self._release_canaries(s, r)
        else:
            set_deployment(s, f"group:{r.group}", r.model, r.version)
            for c in r.canaries:  # the canaries follow the group again
                set_deployment(s, f"node:{c}", r.model, None)
        self.hub.bump(s)

    def _roll_back(self, s: Session, r: Rollout) -> None:
        if r.kind == "pipeline":
            if r.state != "canary" and r.previous is not None:  # the group had the version: back to the previous
                for a in self._instances(s, r.group, r.model):
                    a.version = int(r.previous)
            self._release_canaries(s, r)
        else:
            if r.state != "canary":  # the group had the version: back to the previous one
                set_deployment(s, f"group:{r.group}", r.model, r.previous)
            for c in r.canaries:
                if s.get(Node, c) is not None:
                    set_deployment(s, f"node:{c}", r.model, (r.saved or {}).get(c))
        self.hub.bump(s)

    def _release_canaries(self, s: Session, r: Rollout) -> None:
        """A pipeline rollout's canaries follow the group's assignments again (they had none of their own: a
        rollout over a node's own assignment is refused)."""
        for c in r.canaries:
            for a in self._instances(s, r.group, r.model):
                set_assignment(s, f"node:{c}", a.instance, None)

    # -- what the API calls
    def create(self, s: Session, *, model: str | None = None, version: str, group: str, canary: int = 1,
               watch_s: float = 60.0, checks: Mapping[str, Any] | None = None,
               pipeline: str | None = None) -> dict[str, Any]:
        """Start a rollout of ``model`` (a warehouse version) or of ``pipeline`` (a hub pipeline version) to
        ``group``: RolloutError with the HTTP status when it cannot."""
        if (model is None) == (pipeline is None):
            raise RolloutError(422, "name either a model or a pipeline to roll out")
        kind, name = ("model", model) if model is not None else ("pipeline", pipeline)
        assert name is not None
        try:
            chk = Checks.from_dict(checks)
        except ValueError as exc:
            raise RolloutError(422, str(exc)) from None
        if kind == "model" and s.scalars(sa.select(ModelVersion.id).where(
                ModelVersion.name == name, ModelVersion.version == version)).first() is None:
            raise RolloutError(404, f"no model {name!r} version {version!r} in the warehouse: upload it first "
                                    "(edgeloop model package)")
        pv = None
        if kind == "pipeline":
            if not version.isdigit() or int(version) > 2**63 - 1:
                raise RolloutError(422, f"pipeline versions are whole numbers, got {version!r}")
            version = str(int(version))
            pv = s.scalars(sa.select(PipelineVersion).where(PipelineVersion.name == name,
                                                            PipelineVersion.version == int(version))).first()
            if pv is None:
                raise RolloutError(404, f"no pipeline {name!r} version {version} at the hub: put it first "
                                        "(POST /api/v1/pipelines)")
        with self.lock:
            nodes = self._group(s, group, name, kind)
            if canary > len(nodes):
                raise RolloutError(422, f"canary {canary} is more than the {len(nodes)} node(s) of group {group!r}")
            busy = s.scalars(sa.select(Rollout).where(Rollout.model == name, Rollout.kind == kind,
                                                      Rollout.group == group,
                                                      Rollout.state.in_(("canary", "rolling")))).first()
            if busy is not None:
                raise RolloutError(409, f"rollout {busy.id} of {kind} {name}:{busy.version} to group {group!r} is "
                                        f"{busy.state}: promote or roll it back first")
            canaries = select_canaries(nodes.values(), canary)
            saved: dict[str, Any] = {}
            if kind == "model":
                previous = deployed_version(s, f"group:{group}", name)
                if previous == version:
                    raise RolloutError(409, f"group {group!r} is already deployed {name}:{version}")
                for c in canaries:
                    saved[c] = deployed_version(s, f"node:{c}", name)
                    set_deployment(s, f"node:{c}", name, version)
            else:
                assert pv is not None
                previous = self._pipeline_previous(s, group, pv)
                for c in canaries:  # node-level assignments of the new version (none were there: see above)
                    for a in self._instances(s, group, name):
                        set_assignment(s, f"node:{c}", a.instance, name, pv.version, a.devices, a.params)
            self.hub.bump(s)
            r = Rollout(model=name, kind=kind, version=version, group=group, previous=previous, canary=canary,
                        watch_s=float(watch_s), checks=chk.to_dict(), state="canary", canaries=canaries, saved=saved,
                        stats={"cursor": 0}, nodes={}, created_at=time.time(), updated_at=time.time())
            s.add(r)
            s.flush()
            for old in s.scalars(sa.select(Rollout).where(Rollout.model == name, Rollout.kind == kind,
                                                          Rollout.group == group,
                                                          Rollout.state == "done_with_offline")):
                old.state, old.reason, old.finished_at = "superseded", f"superseded by rollout {r.id}", time.time()
            stats: dict[str, Any] = {"cursor": s.scalar(sa.select(sa.func.max(Upload.pk))) or 0}
            if kind == "model" and previous is not None and nodes:  # the previous version's recent confidence
                rows = s.execute(sa.select(Upload.body).where(Upload.kind == "record", Upload.node.in_(list(nodes)))
                                 .order_by(Upload.pk.desc()).limit(_RECORD_SCAN)).all()
                prev = tally_confidence((item for _row, item in _items(rows)), name).get(previous)
                if prev:
                    stats["previous_conf"] = prev
            r.stats = stats
            self._evaluate(s, r)
            s.commit()
            return view(r)

    def _pipeline_previous(self, s: Session, group: str, pv: PipelineVersion) -> str:
        """The version the group's instances of ``pv``'s pipeline are pinned to; RolloutError when there is
        none, one is unpinned (it follows the newest version: nothing to roll out), a node of the group has its
        own assignment of one, they differ, or their params do not fit ``pv``."""
        pipeline, version = pv.name, str(pv.version)
        instances = self._instances(s, group, pipeline)
        where = f"group {group!r}"
        if not instances:
            raise RolloutError(404, f"{where} runs no instance of pipeline {pipeline!r}: assign one first "
                                    f"(PUT /api/v1/assignments/group:{group}/<instance>)")
        unpinned = [a.instance for a in instances if a.version is None]
        if unpinned:
            raise RolloutError(409, f"{where} runs pipeline {pipeline!r} unpinned (instance {', '.join(unpinned)} "
                                    "follows the newest version, so a new version reaches every node at once): pin "
                                    f"it (PUT /api/v1/assignments/group:{group}/{unpinned[0]} with a version) to roll "
                                    "out versions")
        overridden = s.scalars(sa.select(Assignment).where(
            Assignment.instance.in_([a.instance for a in instances]),
            Assignment.target.in_(sa.select(sa.literal("node:") + Node.name).where(Node.group == group)))
            .order_by(Assignment.target, Assignment.instance)).all()
        if overridden:  # the node's own assignment wins over the group's: the rollout could not reach it
            o = overridden[0]
            raise RolloutError(409, f"node {o.target.removeprefix('node:')} of {where} has its own assignment of "
                                    f"instance {o.instance!r} ({o.pipeline}), which the group's version does not "
                                    f"reach: remove it (DELETE /api/v1/assignments/{o.target}/{o.instance}) first")
        pinned = sorted({int(a.version) for a in instances if a.version is not None})
        if len(pinned) > 1:
            raise RolloutError(409, f"{where}'s instances of pipeline {pipeline!r} are pinned to different versions "
                                    f"({', '.join(map(str, pinned))}): pin them to one first")
        if str(pinned[0]) == version:
            raise RolloutError(409, f"{where} already runs {pipeline}:{version}")
        for a in instances:  # the instances' params and pinned models must fit the new version: known up front
            try:
                self.hub.check_instance(s, pv.spec, a.params, f"pipeline {pipeline} v{version}")
            except SpecRejected as exc:
                raise RolloutError(422, f"instance {a.instance!r} of {where} with params {a.params or {}} cannot "
                                        f"run {pipeline}:{version}: {exc}") from None
        return str(pinned[0])

    def promote(self, s: Session, rid: int) -> dict[str, Any]:
        """Promote a canary rollout to the whole group now (without waiting for ``watch_s``)."""
        with self.lock:
            r = self._locked(s, rid)
            if r is None:
                raise RolloutError(404, f"no rollout {rid}")
            if r.state != "canary":
                raise RolloutError(409, f"rollout {rid} is {r.state}: only a canary rollout can be promoted")
            self._promote(s, r)
            r.state, r.reason, r.healthy_since, r.updated_at = "rolling", "promoted by hand", None, time.time()
            self._evaluate(s, r)
            s.commit()
            return view(r)

    def rollback(self, s: Session, rid: int) -> dict[str, Any]:
        """Roll a rollout back now: canaries (and, once rolling, the group) to what they had before."""
        with self.lock:
            r = self._locked(s, rid)
            if r is None:
                raise RolloutError(404, f"no rollout {rid}")
            if r.state not in (*ACTIVE, "done"):
                raise RolloutError(409, f"rollout {rid} is {r.state}: nothing to roll back")
            if r.state == "done":
                newer = s.scalars(sa.select(Rollout.id).where(Rollout.model == r.model, Rollout.kind == r.kind,
                                                              Rollout.group == r.group, Rollout.id > r.id)).first()
                if newer is not None:
                    raise RolloutError(409, f"rollout {newer} came after rollout {rid}: roll that one back")
            self._roll_back(s, r)
            r.state, r.reason, r.finished_at = "rolled_back", "rolled back by hand", time.time()
            r.updated_at = r.finished_at
            s.commit()
            return view(r)
