"""The rollout controller: the I/O around :func:`hub.rollouts.decision.decide`. It reads the group's heartbeats and
the records the canaries upload, calls :func:`decide` for every active rollout every ``interval`` seconds, and
writes deployments (or assignments, for pipelines) and the rollout's state, all in the hub's database, so a
restarted hub carries on where it stopped. The API's start, promote and rollback come here too
(:class:`RolloutError` carries the HTTP status of a refusal)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..client import ACTIVE
from ..core import Hub
from ..db import (
    Assignment,
    ModelVersion,
    Node,
    PipelineVersion,
    Rollout,
    Upload,
    bump_revision,
    deployed_version,
    set_assignment,
    set_deployment,
)
from ..specs import SpecRejected, check_instance
from .decision import (
    Checks,
    Decision,
    NodeObs,
    decide,
    observe_model,
    observe_pipeline,
    select_canaries,
    tally_confidence,
)
from .views import view

__all__ = ["RolloutController", "RolloutError"]

log = logging.getLogger("edgeloop.hub.rollouts")

_RECORD_SCAN = 5000  # uploads read per evaluation (the rest on the next one)


class RolloutError(Exception):
    """A rollout request that cannot be done: ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail



def _rolled_back(nodes: dict[str, dict[str, Any]], previous: str | None) -> dict[str, dict[str, Any]]:
    """The nodes of a rollout that rolled back, as they end: none serves the version any more (a view that
    kept "serving" after the rollback told the admin the opposite of what runs), a failed one keeps why."""
    back = f"back to {previous}" if previous else "back to what it had before"
    out = {}
    for name, e in nodes.items():
        e = dict(e)
        if e.get("status") in ("serving", "installing", "pending"):
            was = e["status"]
            e.update(status="rolled_back", reason=f"{back} (it was {was})")
        out[name] = e
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


class RolloutController:
    """Evaluates every active rollout every ``interval`` seconds in a background thread.

    State lives in the database (``rollouts``); a lock serialises the thread with the API's start, promote
    and rollback in this process, and ``SELECT ... FOR UPDATE`` (PostgreSQL) with other hub processes.
    """

    def __init__(self, hub: Hub, interval: float = 0.5) -> None:
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
            return {n.name: observe_pipeline(self.hub.node_view(n, now), name, instances) for n in nodes}
        return {n.name: observe_model(self.hub.node_view(n, now), name) for n in nodes}

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
        d = decide(name=r.model, version=r.version, state=r.state, canaries=r.canaries, nodes=nodes,
                   watch_s=r.watch_s, checks=Checks.from_dict(r.checks), now=now, healthy_since=r.healthy_since,
                   baselines=stats.get("baselines"), canary_confidence=stats.get("canary_conf"),
                   previous_confidence=stats.get("previous_conf"), started=r.created_at)
        stats["baselines"] = d.baselines
        if d.action == "rollback":
            self._roll_back(s, r)
            d.nodes = _rolled_back(d.nodes, r.previous)
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
        bump_revision(s)

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
        bump_revision(s)

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
            bump_revision(s)
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
                check_instance(s, pv.spec, a.params, f"pipeline {pipeline} v{version}")
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
            r.nodes = _rolled_back(r.nodes or {}, r.previous)
            r.state, r.reason, r.finished_at = "rolled_back", "rolled back by hand", time.time()
            r.updated_at = r.finished_at
            s.commit()
            return view(r)
