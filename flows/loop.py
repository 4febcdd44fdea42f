"""The agile loop as Prefect flows: collect -> label -> harvest -> retrain -> gate -> package -> rollout.

Each step is a task with retries (the hub or Label Studio may be restarting); ``agile_loop`` chains them
per model and writes a loop report. Labelling is asynchronous: a run sends new hard examples to Label
Studio and harvests what people labelled since the last run; it never waits for a person, except at the
optional approval step before a rollout (a paused run, resumed from the Prefect UI).

    python -m flows.loop            # one iteration now (or: edgeloop loop run)
    python -m flows.serve           # the deployments with their schedules (Prefect UI: run, pause, edit)
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows import steps
from flows.report import write_report
from flows.steps import LoopConfig

RETRIES = {"retries": 2, "retry_delay_seconds": [5, 30]}


@task(name="collect uploads", **RETRIES)
def collect_task(cfg: LoopConfig, model: str) -> dict[str, Any]:
    with cfg.state() as state:
        got = steps.collect(cfg, state, model)
    get_run_logger().info("%s: %d uploads since the watermark, %d marked at the edge; %d to label (budget %d: %d "
                          "hard examples, %d drawn at random)", model, got["uploads"], got["selected_at_edge"],
                          len(got["items"]), got["budget"], got["hard"], got["random"])
    return got


@task(name="send to Label Studio", **RETRIES)
def label_task(cfg: LoopConfig, model: str, collected: dict[str, Any]) -> dict[str, Any]:
    with cfg.state() as state:
        got = steps.label(cfg, state, model, collected)
    get_run_logger().info("%s: %d tasks sent to Label Studio project %s", model, got["sent"], got["project"])
    return got


@task(name="harvest annotations", **RETRIES)
def harvest_task(cfg: LoopConfig, model: str, iteration: int) -> dict[str, Any]:
    with cfg.state() as state:
        got = steps.harvest(cfg, state, model, iteration)
    log = get_run_logger()
    log.info("%s: %d new labels, data version %s", model, got["new_labels"], got["data_version"])
    for p in got["problems"]:
        log.warning("%s: annotation skipped: %s", model, p)
    return got


@task(name="retrain (dvc repro)", retries=1, retry_delay_seconds=10)
def retrain_task(cfg: LoopConfig, model: str, harvested: dict[str, Any]) -> dict[str, Any]:
    with cfg.state() as state:
        got = steps.retrain(cfg, model, harvested, state)
    get_run_logger().info("%s: %s", model, f"candidate version {got['candidate']} in {got['seconds']} s"
                          if got["retrained"] else f"not retrained: {got['why']}")
    return got


@task(name="gate: candidate vs champion")
def gate_task(cfg: LoopConfig, model: str) -> dict[str, Any]:
    got = steps.gate(cfg, model)
    get_run_logger().info("%s: %s (%s)", model, "promoted" if got["promoted"] else "not promoted", got["why"])
    return got


@task(name="package into the warehouse", **RETRIES)
def package_task(cfg: LoopConfig, model: str, version: str) -> dict[str, Any]:
    return steps.package(cfg, model, version)


@task(name="roll out (canary first)", retries=1, retry_delay_seconds=30)
def rollout_task(cfg: LoopConfig, model: str, version: str) -> dict[str, Any]:
    got = steps.rollout(cfg, model, version)
    get_run_logger().info("%s:%s: %s", model, version, got)
    return got


class Approval(BaseModel):
    """What a person answers in the Prefect UI before a new model version rolls out."""

    approve: bool = Field(description="roll this version out")
    note: str = Field("", description="why (kept in the loop report)")


def approve(model: str, gate: dict[str, Any], timeout: int) -> dict[str, Any]:
    from prefect.flow_runs import pause_flow_run

    get_run_logger().info("%s: waiting for approval of version %s in the Prefect UI (gate: %s)", model,
                          gate.get("candidate"), gate.get("why"))
    # Prefect keys run inputs by this key and allows letters, digits and dashes only (pump_anomaly would fail)
    key = re.sub(r"[^A-Za-z0-9-]+", "-", f"approve-{model}-{gate.get('candidate')}")
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, key=key)
    return {"approved": answer.approve, "note": answer.note}


def _iterate(cfg: LoopConfig, model: str, iteration: int, approval_timeout: int) -> dict[str, Any]:
    times: dict[str, float] = {}
    r: dict[str, Any] = {"times_s": times}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args)
        times[name] = round(time.perf_counter() - t, 2)
        r[name] = out
        return out

    collected = timed("collect", collect_task, cfg, model)
    r["collect"] = {k: v for k, v in collected.items() if k != "items"} | {"to_label": len(collected["items"])}
    timed("label", label_task, cfg, model, collected)
    harvested = timed("harvest", harvest_task, cfg, model, iteration)
    trained = timed("retrain", retrain_task, cfg, model, harvested)
    if not trained["retrained"]:
        return r
    decision = timed("gate", gate_task, cfg, model)
    if not decision["promoted"]:
        return r
    version = decision["candidate"]
    timed("package", package_task, cfg, model, version)
    if cfg.approval:
        r["approval"] = approve(model, decision, approval_timeout)
        if not r["approval"]["approved"]:
            return r
    timed("rollout", rollout_task, cfg, model, version)
    return r


@flow(name="agile-loop", log_prints=True)
def agile_loop(config: dict[str, Any] | None = None, approval_timeout: int = 3600) -> dict[str, Any]:
    """One iteration of the loop for every configured model; returns (and writes) the loop report.

    ``config``: :class:`~flows.steps.LoopConfig` fields; the rest come from EDGELOOP_* variables."""
    cfg = LoopConfig.from_env(**(config or {}))
    with cfg.state() as state:
        iteration = state.start_iteration()
    report: dict[str, Any] = {"iteration": iteration, "config": {k: v for k, v in asdict(cfg).items()
                                                                 if "token" not in k}, "models": {}}
    t_loop = time.perf_counter()
    for model in cfg.models:
        report["models"][model] = _iterate(cfg, model, iteration, approval_timeout)
    report["seconds"] = round(time.perf_counter() - t_loop, 1)
    files = write_report(cfg, report)
    report["files"] = [str(f) for f in files]
    with cfg.state() as state:
        state.finish_iteration(iteration, report)
    return report


@flow(name="label-sync", log_prints=True)
def label_sync(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect new hard examples into Label Studio and harvest finished annotations, without retraining:
    run often so people always have fresh tasks and their work lands in data/ quickly."""
    cfg = LoopConfig.from_env(**(config or {}))
    with cfg.state() as state:
        iteration = state.start_iteration()
    out = {}
    for model in cfg.models:
        collected = collect_task(cfg, model)
        out[model] = {"sent": label_task(cfg, model, collected)["sent"],
                      "harvested": harvest_task(cfg, model, iteration)["new_labels"]}
    with cfg.state() as state:
        state.finish_iteration(iteration, {"iteration": iteration, "label_sync": out, "models": {}})
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m flows.loop", description="one iteration of the agile loop now")
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--models", default=None, help="comma-separated (default: EDGELOOP_MODELS or pump_anomaly)")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {"workspace": args.workspace}
    if args.models:
        overrides["models"] = [m.strip() for m in args.models.split(",")]
    report = agile_loop({k: v for k, v in overrides.items() if v is not None})
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
