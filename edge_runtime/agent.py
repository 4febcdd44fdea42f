"""The node agent: registers with the hub, heartbeats, and reconciles toward the desired state.

The desired state (pipeline instances with their specs and device bindings, the products they need, the
model versions to serve) is cached on disk after every change, so a node restarted while the hub is away
runs what it ran before. The hub being unreachable never stops anything: the agent retries with backoff
and the node runs on.

:meth:`Agent.reconcile` starts, replaces and stops the hub-assigned instances through the node's
primitives (``add_instance``, ``remove_instance``, ``pin_models``); the instances of the node's own config
are never touched.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, jsonio
from .backoff import Backoff
from .devices.catalog import load_catalog
from .hubclient import HubClient, HubError, HubUnreachable
from .operators.base import SpecError
from .pipeline import parse_pipeline

if TYPE_CHECKING:
    from .node import InstanceConfig, Node

__all__ = ["Agent"]

log = logging.getLogger("edgeloop.agent")


class Agent:
    def __init__(self, node: Node, client: HubClient, *, cache_path: str | Path, interval: float = 10.0) -> None:
        self.node = node
        self.client = client
        self.cache_path = Path(cache_path)
        self.interval = interval
        self.etag: str | None = None
        self.registered = False
        self.hub_reachable: bool | None = None
        self.last_error: str | None = None
        self.heartbeats = 0
        #: hub-assigned instance -> fingerprint of what runs
        self.managed: dict[str, str] = {}
        #: hub-assigned instance -> the hub's pipeline version it runs
        self.managed_versions: dict[str, Any] = {}
        #: what the last reconcile could not do (reported in heartbeats)
        self.errors: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._now = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent", daemon=True)
        self.base = f"/api/v1/nodes/{node.cfg.node}"

    def apply_cached(self) -> bool:
        """Run the last desired state we know (start-up without the hub)."""
        if not self.cache_path.exists():
            return False
        try:
            doc = jsonio.loads(self.cache_path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("desired-state cache %s is unreadable (%s): waiting for the hub", self.cache_path, exc)
            return False
        self._apply(doc, cache=False)
        log.info("running the cached desired state %s until the hub answers", self.etag)
        return True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._now.set()
        self._thread.join(10)
        self.client.close()

    def poke(self) -> None:
        """Heartbeat now (tests, and after a local change)."""
        self._now.set()

    # -- desired state ---------------------------------------------------------------------------
    def reconcile(self, desired: dict[str, Any]) -> list[dict[str, Any]]:
        """Start, replace and stop hub-assigned instances to match ``desired``; others are not touched.

        An instance that does not validate here (unknown device, product mismatch, params) or fails to
        start is not started and is reported in heartbeats (with its pipeline and version); if an earlier
        version of it runs, that one keeps running. The rest go ahead.
        """
        node, catalog = self.node, self.node.cfg.catalog
        models = node.models
        errors: list[dict[str, Any]] = []
        models.retry = False  # set again by an install below that may pass later (the hub away)
        if desired.get("models"):  # models first: pipelines need them
            errors += [{"model": n, "error": e} for n, e in models.reconcile(desired["models"]).items()]
        local = {ic.name for ic in node.cfg.instances}
        for p in desired.get("products") or []:
            if p.get("name") not in catalog.products:
                try:
                    cat = load_catalog([], products_data=[(f"hub:product {p.get('name')}", p.get("spec"))])
                    catalog.products.update(cat.products)
                except SpecError as exc:
                    errors.append({"product": p.get("name"), "error": str(exc)})
        wanted: dict[str, tuple[str, InstanceConfig, Any]] = {}
        for entry in desired.get("instances") or []:
            name = entry.get("instance")
            try:
                fp, ic = self._instance(entry, local)
                unpinned = node.pin_models(ic.plan) if self.managed.get(name) != fp else []
                if unpinned:  # not started without its model: what runs keeps running, the hub hears why
                    errors.append({"instance": name, "pipeline": entry.get("pipeline"), "version": entry.get("version"),
                                   "error": "; ".join(f"model {n}:{v} cannot be served here: {e}"
                                                      for n, v, e, _ in unpinned),
                                   # the hub away: pending, not a refusal (a rollout does not fail on it)
                                   **({"retry": True} if all(r for *_, r in unpinned) else {})})
                    continue
                wanted[name] = (fp, ic, entry.get("version"))
            except (SpecError, KeyError, TypeError) as exc:  # named with the version: a rollout's canary check
                errors.append({"instance": name, "pipeline": entry.get("pipeline"), "version": entry.get("version"),
                               "error": str(exc)})
        for own in node.cfg.instances:  # the node's own instances: pins not installed at start, downloaded now
            for n, v, e, _ in node.pin_models(own.plan):
                errors.append({"instance": own.name, "model": f"{n}:{v}", "error": f"cannot be served here: {e}"})
        refused = {e["instance"] for e in errors if "instance" in e and "model" not in e}
        with node.lock:
            for name in list(self.managed):
                if name in refused:  # a new version or binding that does not fit: what runs keeps running
                    continue
                if name not in wanted or wanted[name][0] != self.managed[name]:
                    node.remove_instance(name)
                    del self.managed[name]
                    self.managed_versions.pop(name, None)
                    log.info("pipeline instance %s stopped", name)
            for name, (fp, ic, version) in wanted.items():
                if name not in self.managed:
                    try:
                        node.add_instance(ic)
                    except Exception as exc:  # an operator that fails to start: reported like a spec error
                        node.remove_instance(name)
                        errors.append({"instance": name, "pipeline": ic.plan.name, "version": version,
                                       "error": f"failed to start: {exc}"})
                        continue
                    self.managed[name] = fp
                    self.managed_versions[name] = version
                    log.info("pipeline instance %s started (%s v%s)", name, ic.plan.name, version)
            self.errors = errors
            node.unpin_unused()
        for err in errors:
            log.error("desired state: %s", err)
        return errors

    def _instance(self, entry: dict[str, Any], local: set[str]) -> tuple[str, InstanceConfig]:
        """A hub-assigned instance, checked against this node: its fingerprint and config."""
        from .node import InstanceConfig

        catalog = self.node.cfg.catalog
        name = entry.get("instance")
        if name in local:
            raise SpecError(f"instance {name!r} is defined in the node's own config; rename one")
        plan = parse_pipeline(entry["spec"], file=f"hub:{entry.get('pipeline')}@v{entry.get('version')}",
                              params=entry.get("params"))
        devices = entry.get("devices")
        if devices is None:
            devices = catalog.devices_of(plan.product) if plan.product else list(catalog.devices)
        for d in devices:
            b = catalog.devices.get(d)
            if b is None:
                raise SpecError(f"device {d!r} is not bound on this node")
            if plan.product and b.product != plan.product:
                raise SpecError(f"device {d!r} is a {b.product}, the pipeline needs a {plan.product}")
        fp = jsonio.dumps([entry.get("pipeline"), entry.get("version"), entry["spec"], sorted(devices),
                           entry.get("params")]).decode()
        return fp, InstanceConfig(str(name), plan, list(devices))

    def _apply(self, doc: dict[str, Any], *, cache: bool = True) -> None:
        self.reconcile(doc)
        # a model download that failed for a passing reason (hub away, 5xx): fetch and apply again next beat
        self.etag = None if self.node.models.retry else doc.get("etag")
        if cache:
            tmp = self.cache_path.with_suffix(".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(jsonio.dumps(doc))
            os.replace(tmp, self.cache_path)

    # -- the loop ---------------------------------------------------------------------------------
    def _cycle(self) -> None:
        if not self.registered:
            reg = self.client.post(f"{self.base}/register",
                                   {"version": __version__, "hostname": os.uname().nodename,
                                    "capabilities": ["mqtt", "modbus", "uplink", "models"]})
            self.interval = float(reg.get("heartbeat_interval", self.interval))
            self.registered = True
            log.info("registered with the hub as %s (group %s)", reg.get("node"), reg.get("group"))
        hb = self.node.heartbeat()
        hb["desired_etag"] = self.etag
        resp = self.client.post(f"{self.base}/heartbeat", hb)
        self.heartbeats += 1
        if resp.get("desired_etag") != self.etag:
            headers = {"If-None-Match": f'"{self.etag}"'} if self.etag else {}
            status, doc, _ = self.client.request("GET", f"{self.base}/desired", headers=headers)
            if status == 200:
                self._apply(doc)
                log.info("desired state %s applied", self.etag)

    def _run(self) -> None:
        backoff = Backoff(0.5, max(self.interval, 30.0))
        while not self._stop.is_set():
            try:
                self._cycle()
                self.hub_reachable, self.last_error = True, None
                backoff.reset()
                wait = self.interval
            except HubUnreachable as exc:
                if self.hub_reachable is not False:
                    log.warning("hub unreachable (%s): running on the last desired state", exc)
                self.hub_reachable, self.last_error = False, str(exc)
                wait = backoff.next(cap=self.interval)  # back soon: the hub is only away
            except HubError as exc:
                self.last_error = str(exc)
                if exc.status in (401, 403):
                    log.error("the hub refused this node's token (%s): check `hub.token` in the node config", exc)
                    self.registered = False
                else:
                    log.warning("hub error: %s", exc)
                wait = backoff.next(cap=max(self.interval, 30.0))
            except Exception as exc:  # a bug here must not take the node down
                log.exception("agent cycle failed")
                self.last_error = repr(exc)
                wait = self.interval
            self._now.wait(wait)
            self._now.clear()
