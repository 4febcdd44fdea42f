"""The agile loop's deployments, with their schedules, served by this process:

    python -m flows.serve            # PREFECT_API_URL: the Prefect server (``edgeloop up`` starts one)

* ``agile-loop/nightly``: the whole loop for every model, every night at 02:00 UTC;
* ``label-sync/hourly``: new hard examples into Label Studio and finished labels into data/, hourly.

They show in the Prefect UI (Deployments), where people run them now, pause their schedules or change
parameters. ``prefect.yaml`` declares the same deployments for a work pool (``prefect deploy --all``)
when the loop runs on other machines.
"""

from __future__ import annotations

from typing import Any

SCHEDULES = {"agile-loop/nightly": "0 2 * * *", "label-sync/hourly": "15 * * * *"}


def deployments(config: dict[str, Any] | None = None) -> list[Any]:
    from flows.loop import agile_loop, label_sync

    params = {"config": config or {}}
    return [
        agile_loop.to_deployment(name="nightly", cron=SCHEDULES["agile-loop/nightly"], parameters=params,
                                 tags=["edgeloop", "agile-loop"],
                                 description="collect -> label -> harvest -> retrain -> gate -> package -> rollout"),
        label_sync.to_deployment(name="hourly", cron=SCHEDULES["label-sync/hourly"], parameters=params,
                                 tags=["edgeloop", "labelling"],
                                 description="new hard examples to Label Studio, finished labels into data/"),
    ]


def main() -> int:
    from prefect import serve

    serve(*deployments())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
