"""The node agent: registers with the hub, heartbeats, and reconciles toward the desired state.

The desired state (pipeline instances with their specs and device bindings, the
products they need) is cached on disk after every change, so a node restarted
while the hub is away runs what it ran before. The hub being unreachable never
stops anything: the agent retries with backoff and the node runs on.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from . import __version__, jsonio
from .hubclient import HubClient, HubError, HubUnreachable

__all__ = ["Agent"]

log = logging.getLogger("edgeloop.agent")


class Agent:
    def __init__(self, node: Any, client: HubClient, *, cache_path: str | Path, interval: float = 10.0) -> None:
        self.node = node
        self.client = client
        self.cache_path = Path(cache_path)
        self.interval = interval
        self.etag: str | None = None
        self.registered = False
        self.hub_reachable: bool | None = None
        self.last_error: str | None = None
        self.heartbeats = 0
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

    def _apply(self, doc: dict[str, Any], *, cache: bool = True) -> None:
        self.node.reconcile(doc)
        # a model download that failed for a passing reason (hub away, 5xx): fetch and apply again next beat
        self.etag = None if getattr(self.node.models, "retry", False) else doc.get("etag")
        if cache:
            tmp = self.cache_path.with_suffix(".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(jsonio.dumps(doc))
            os.replace(tmp, self.cache_path)

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
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._cycle()
                self.hub_reachable, self.last_error, backoff = True, None, 0.5
                wait = self.interval
            except HubUnreachable as exc:
                if self.hub_reachable is not False:
                    log.warning("hub unreachable (%s): running on the last desired state", exc)
                self.hub_reachable, self.last_error = False, str(exc)
                wait, backoff = backoff, min(backoff * 2, self.interval)
            except HubError as exc:
                self.last_error = str(exc)
                if exc.status in (401, 403):
                    log.error("the hub refused this node's token (%s): check `hub.token` in the node config", exc)
                    self.registered = False
                else:
                    log.warning("hub error: %s", exc)
                wait, backoff = backoff, min(backoff * 2, max(self.interval, 30))
            except Exception as exc:  # a bug here must not take the node down
                log.exception("agent cycle failed")
                self.last_error = repr(exc)
                wait = self.interval
            self._now.wait(wait)
            self._now.clear()
