"""The agile loop's deployments, served by this process, and the drift watcher beside them:

    python -m flows.serve            # PREFECT_API_URL: the Prefect server (``edgeloop up`` starts one)

* ``agile-loop/nightly``: the whole loop for every model, every night at 02:00 UTC (the fallback);
* ``agile-loop/on-drift``: the loop for ONE model, started by its trigger (an automation, on the Automations
  page) when the drift watcher emits ``edgeloop.model.drifted`` for it, and again with
  ``edgeloop.model.labelled`` once people labelled what that run sent (:mod:`flows.drift`): the run's parameters
  name the model and why it started;
* ``label-sync/hourly``: new hard examples into Label Studio and finished labels into data/, hourly.

They show in the Prefect UI (Deployments), where people run them now, pause their schedules or change
parameters (a form: :class:`flows.config.LoopSettings`). The watcher thread reads the hub's drift alarms
every EDGELOOP_DRIFT_POLL_S seconds (60) with the loop's EDGELOOP_* settings; without a hub token it only
logs why it cannot. ``prefect.yaml`` declares the same deployments and trigger for a work pool
(``prefect deploy --all``) when the loop runs on other machines (run the watcher there with
``edgeloop loop watch``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

SCHEDULES = {"agile-loop/nightly": "0 2 * * *", "label-sync/hourly": "15 * * * *"}
DRIFT_PARAMETERS = {"config": {"models": ["{{ event.resource['edgeloop.model'] }}"]},
                    "reason": "{{ event.payload.reason }}"}


def drift_trigger() -> Any:
    """The automation: each ``edgeloop.model.drifted`` event runs the loop for the model it names."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.drift import EVENT, LABELLED

    return DeploymentEventTrigger(name="edgeloop: a model drifted", description="run the agile loop for the model "
                                  "whose drift alarm the hub raised, and again once people labelled what it sent "
                                  "(flows.drift)",
                                  expect={EVENT, LABELLED}, match={"prefect.resource.id": "edgeloop.model.*"},
                                  for_each={"prefect.resource.id"}, threshold=1, within=0,
                                  parameters=DRIFT_PARAMETERS)


def deployments(config: dict[str, Any] | None = None) -> list[Any]:
    from flows.loop import agile_loop, label_sync

    params = {"config": config or {}}
    return [
        agile_loop.to_deployment(name="nightly", cron=SCHEDULES["agile-loop/nightly"], parameters=params,
                                 tags=["edgeloop", "agile-loop"],
                                 description="collect -> label -> harvest -> retrain -> gate -> package -> rollout"),
        agile_loop.to_deployment(name="on-drift", parameters=params, triggers=[drift_trigger()], concurrency_limit=1,
                                 tags=["edgeloop", "agile-loop", "drift"],
                                 description="the loop for one model, started when its drift alarm is raised"),
        label_sync.to_deployment(name="hourly", cron=SCHEDULES["label-sync/hourly"], parameters=params,
                                 tags=["edgeloop", "labelling"],
                                 description="new hard examples to Label Studio, finished labels into data/"),
    ]


def start_watcher(stop: threading.Event) -> threading.Thread:
    """The drift watcher as a daemon thread of this process (it stops with it)."""
    from flows.config import LoopConfig
    from flows.drift import watch

    cfg = LoopConfig.from_env()
    t = threading.Thread(target=watch, args=(cfg, stop, cfg.drift_poll_s), name="drift-watcher", daemon=True)
    t.start()
    return t


def main() -> int:
    from prefect import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    start_watcher(stop)
    try:
        serve(*deployments())
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
