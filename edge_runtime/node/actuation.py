"""Device actions: ``device_output`` steps queue them, one thread carries them out through the connectors.

An action sets properties (``{"kind": "set", "device", "values"}``) or calls a product service
(``{"kind": "service", "device", "service", "args"}``). Values and arguments are checked against the
device's product here, then the device's connector does the rest (``write`` / ``call_service``). Anything
refused (an unknown device, a bad value, a device that cannot do it, a device that does not answer) is a
dead letter with the reason, and the next action goes ahead.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..records import RecordError

if TYPE_CHECKING:
    from ..connectors.base import Connector
    from ..devices.bus import DeadLetterSink
    from ..devices.catalog import Catalog

__all__ = ["Actuator"]

log = logging.getLogger("edgeloop.node")


class Actuator:
    """The node's queue of device actions and the thread that carries them out."""

    def __init__(self, catalog: Catalog, connectors: Mapping[str, Connector], dead_letters: DeadLetterSink,
                 *, maxsize: int = 10000) -> None:
        self.catalog, self.connectors, self.dead_letters = catalog, connectors, dead_letters
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=maxsize)
        #: actions carried out
        self.done = 0
        self._thread = threading.Thread(target=self._run, name="actuator", daemon=True)

    def put(self, action: dict[str, Any]) -> None:
        self.queue.put(action)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Carry out what is queued, then stop."""
        self.queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            action = self.queue.get()
            if action is None:
                return
            try:
                self.act(action)
                self.done += 1
            except RecordError as exc:
                self.dead_letters.add(source=f"device_output/{action.get('device')}", reason=exc.reason,
                                      record=action, device=action.get("device"))
            except Exception as exc:  # a connector's bug must not stop every later action
                log.exception("device_output %s failed", action.get("device"))
                self.dead_letters.add(source=f"device_output/{action.get('device')}",
                                      reason=f"device_output failed: {type(exc).__name__}: {exc}", record=action,
                                      device=action.get("device"))

    def act(self, action: dict[str, Any]) -> None:
        """Carry out one action through the target device's connector; RecordError says why not."""
        device = action["device"]
        binding = self.catalog.devices.get(device)
        if binding is None:
            raise RecordError(f"unknown device {device!r}")
        product = self.catalog.products[binding.product]
        connector = self.connectors.get(binding.connector)
        if connector is None:  # a device bound after the node started (not running here)
            raise RecordError(f"device {device} ({binding.connector}) is not connected on this node")
        if action["kind"] == "service":
            service = product.services.get(action["service"])
            if service is None:
                raise RecordError(f"product '{product.name}' has no service {action['service']!r}")
            args = {}
            for name, spec in service.args.items():
                if name not in action["args"]:
                    raise RecordError(f"service {service.name} needs argument {name!r}")
                args[name] = spec.check(action["args"][name])
            connector.call_service(device, service.name, args, binding.services.get(service.name))
            return
        values = {k: product.properties[k].check(v) if k in product.properties else v
                  for k, v in action["values"].items()}
        for k in values:
            if k not in product.properties:
                raise RecordError(f"product '{product.name}' has no property {k!r}")
        connector.write(device, values)
