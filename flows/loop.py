"""The agile loop as Prefect flows: collect -> label -> harvest -> retrain -> gate -> package -> rollout.

Each step is a task with retries (the hub or Label Studio may be restarting); ``agile_loop`` chains them
per model and writes a loop report. Labelling is asynchronous: a run sends new hard examples to Label
Studio and harvests what people labelled since the last run; it never waits for a person, except at the
optional approval step before a rollout (a paused run, resumed from the Prefect UI).

With ``parallel_retrain`` (EDGELOOP_PARALLEL_RETRAIN=1) the models due for retraining train at the same
time, one Dask worker process each (Prefect's Dask task runner, :func:`retrain_models`); DVC's bookkeeping
is serialised, so the workspace ends as after ``dvc repro``. Off (the default), models go one after another.

    python -m flows.loop            # one iteration now (or: edgeloop loop run)
    python -m flows.serve           # the deployments with their schedules (Prefect UI: run, pause, edit)
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows import steps
from flows.config import LoopSettings, settings
from flows.report import write_report
from flows.steps import LoopConfig


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """A failed task is retried when running it again may pass (a service restarting, a network error), not
    when it will fail the same way (a LoopError without ``retry``: a configuration error, a refused rollout)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - the result cannot be read: retry as Prefect would without this check
        return True
    return not (isinstance(exc, steps.LoopError) and not exc.retry)


RETRIES = {"retries": 2, "retry_delay_seconds": [5, 30], "retry_condition_fn": worth_retrying}


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


@task(name="retrain (dvc repro)", retries=1, retry_delay_seconds=10, retry_condition_fn=worth_retrying)
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


@task(name="roll out (canary first)", retries=1, retry_delay_seconds=30, retry_condition_fn=worth_retrying)
def rollout_task(cfg: LoopConfig, model: str, version: str) -> dict[str, Any]:
    """Canary first, then the group; the champion alias moves to ``version`` only once the group serves it. A
    rollout that rolled back fails this task (and, at the end, the run) with the reason."""
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
    # Prefect keys run inputs by this key and allows letters, digits and dashes only (a model name with _ would fail)
    key = re.sub(r"[^A-Za-z0-9-]+", "-", f"approve-{model}-{gate.get('candidate')}")
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, key=key)
    return {"approved": answer.approve, "note": answer.note}


class _ModelRun:
    """One model's part of a loop run: what each step returned and its seconds (its loop report entry)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.r: dict[str, Any] = {"times_s": self.times}

    def timed(self, name: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args)
        self.times[name] = round(time.perf_counter() - t, 2)
        self.r[name] = out
        return out


def _until_retrain(run: _ModelRun, cfg: LoopConfig, model: str, iteration: int) -> dict[str, Any]:
    collected = run.timed("collect", collect_task, cfg, model)
    run.r["collect"] = {k: v for k, v in collected.items() if k != "items"} | {"to_label": len(collected["items"])}
    run.timed("label", label_task, cfg, model, collected)
    return run.timed("harvest", harvest_task, cfg, model, iteration)


def _after_retrain(run: _ModelRun, cfg: LoopConfig, model: str, trained: dict[str, Any],
                   approval_timeout: int) -> dict[str, Any]:
    r = run.r
    if not trained["retrained"]:
        return r
    decision = run.timed("gate", gate_task, cfg, model)
    if not decision["promoted"]:
        return r
    version = decision["candidate"]
    run.timed("package", package_task, cfg, model, version)
    if cfg.approval:
        r["approval"] = approve(model, decision, approval_timeout)
        if not r["approval"]["approved"]:
            return r
    try:
        run.timed("rollout", rollout_task, cfg, model, version)
    except steps.LoopError as exc:  # the task failed (its state says so); the run goes on, then fails with it
        r["rollout"] = {"rolled_out": False, "failed": str(exc)}
    return r


def _iterate(cfg: LoopConfig, model: str, iteration: int, approval_timeout: int) -> dict[str, Any]:
    run = _ModelRun()
    harvested = _until_retrain(run, cfg, model, iteration)
    trained = run.timed("retrain", retrain_task, cfg, model, harvested)
    return _after_retrain(run, cfg, model, trained, approval_timeout)


# -- retraining several models at the same time -------------------------------------------------------------
def _log() -> Any:
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows.loop")


@task(name="retrain one model (Dask worker)", retries=1, retry_delay_seconds=10, retry_condition_fn=worth_retrying)
def train_model_task(cfg: LoopConfig, model: str, threads: int | None) -> dict[str, Any]:
    got = steps.train_stages(cfg, model, threads)
    get_run_logger().info("%s: prepared, trained and evaluated in %s s (worker pid %s)", model, got["seconds"],
                          got["pid"])
    return got


@flow(name="retrain-on-dask", log_prints=True)
def retrain_on_dask(config: dict[str, Any], harvested: dict[str, dict[str, Any]], labels: dict[str, int],
                    threads: int | None = None) -> dict[str, Any]:
    """Train the models of ``harvested`` at the same time, a task each on the flow's task runner
    (:func:`retrain_models` gives it a Dask cluster of one worker process per model): each task runs its
    model's prepare, train and evaluate stages and commits them to DVC; the shared evaluate stage is
    committed once all succeeded; each new version is then registered as retrain does (``labels``: harvested
    labels per model). ``config``: :class:`~flows.steps.LoopConfig` fields. One model's failure keeps the
    others' work. Returns ``{"models": {model: retrain summary}, "info": stage times, worker pids, failures}``."""
    cfg = LoopConfig(**config)
    log = get_run_logger()
    t = time.perf_counter()
    steps.before_parallel_retrain(cfg)
    futures = {m: train_model_task.submit(cfg, m, threads) for m in harvested}
    done: dict[str, dict[str, Any]] = {}
    for model, future in futures.items():
        try:
            done[model] = future.result()
        except Exception as exc:  # reported per model
            log.error("%s: retraining failed: %s", model, exc)
            done[model] = {"error": f"{type(exc).__name__}: {exc}"[-3000:]}
    failed = {m: d["error"] for m, d in done.items() if "error" in d}
    if failed:
        log.warning("%s failed: `dvc repro` in %s completes the pipeline", ", ".join(failed), cfg.root)
    out: dict[str, dict[str, Any]] = {}
    with cfg.state() as state:
        for m, d in done.items():
            if m in failed:
                out[m] = {"retrained": False, "failed": True, "why": failed[m]}
                continue
            out[m] = steps.register_candidate(cfg, m, harvested[m], state, labels[m], d["seconds"])
            log.info("%s: candidate version %s in %s s, at the same time as %s", m, out[m]["candidate"],
                     d["seconds"], ", ".join(x for x in done if x != m))
    info = {"workers": len(harvested), "threads_per_stage": threads, "seconds": round(time.perf_counter() - t, 1),
            "pids": {m: d.get("pid") for m, d in done.items()}, "stages": {m: d.get("stages") for m, d in done.items()},
            "cpu_s": {m: d.get("cpu_s") for m, d in done.items()},
            "omp_threads": {m: d.get("omp_threads") for m, d in done.items()}, "failed": failed}
    return {"models": out, "info": info}


def dask_task_runner(workers: int) -> Any:
    """Prefect's Dask task runner on a local cluster: ``workers`` processes of one thread each. Without a
    Prefect server configured (PREFECT_API_URL) this process runs a temporary one; the workers are pointed
    at it instead of each starting their own."""
    from prefect.settings import PREFECT_API_URL
    from prefect_dask import DaskTaskRunner

    env: dict[str, str] = {}
    if not PREFECT_API_URL.value():
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            env["PREFECT_API_URL"] = str(client.api_url)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "env": env})


@contextmanager
def _environment_kept() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def retrain_models(cfg: LoopConfig, harvested: dict[str, dict[str, Any]], *,
                   threads: int | None = None) -> dict[str, Any]:
    """The retrain step of several models at once (``harvested``: each model's harvest summary). The models
    due (enough new labels, :func:`~flows.steps.retrain_due`) train at the same time through
    :func:`retrain_on_dask`, a Dask worker process per model; with fewer than two due there is nothing to
    overlap and the sequential retrain runs. ``threads``: caps each stage's BLAS/OpenMP threads (None: no
    cap, the OS shares the cores; a cap of cores/models was slower when one model trains much longer than the
    other, bench/parallel_retrain.py). Returns ``{"models": {model: retrain summary}, "parallel": what ran in
    parallel, or None}``."""
    with cfg.state() as state:
        due = {m: steps.retrain_due(cfg, m, state) for m in harvested}
    out: dict[str, Any] = {"models": {m: {"retrained": False, "why": why} for m, (_, why) in due.items() if why},
                           "parallel": None}
    for m, r in out["models"].items():
        _log().info("%s: not retrained: %s", m, r["why"])
    todo = [m for m, (_, why) in due.items() if why is None]
    if len(todo) < 2:
        for m in todo:
            out["models"][m] = retrain_task(cfg, m, harvested[m])
        return out
    import dask

    config = {k: v for k, v in asdict(cfg).items() if "token" not in k} | {"workspace": str(cfg.root)}
    flow_ = retrain_on_dask.with_options(task_runner=dask_task_runner(len(todo)))
    # Dask's nannies set OMP/MKL/OPENBLAS_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_ for their workers (inherited
    # by the stages: a CNN's training ran 1.7x slower) and in this process's own environment: neither
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}), _environment_kept():
        got = flow_(config, {m: harvested[m] for m in todo}, {m: due[m][0] for m in todo}, threads)
    out["models"].update(got["models"])
    out["parallel"] = got["info"]
    return out


def _iterate_parallel(cfg: LoopConfig, iteration: int,
                      approval_timeout: int) -> tuple[dict[str, Any], dict[str, Any]]:
    names = cfg.model_names()
    runs = {m: _ModelRun() for m in names}
    harvested = {m: _until_retrain(runs[m], cfg, m, iteration) for m in names}
    t = time.perf_counter()
    trained = retrain_models(cfg, harvested)
    took = round(time.perf_counter() - t, 2)
    for m, run in runs.items():
        run.r["retrain"] = trained["models"][m]
        run.times["retrain"] = trained["models"][m].get("seconds", 0.0)
    report = {m: _after_retrain(runs[m], cfg, m, runs[m].r["retrain"], approval_timeout) for m in names}
    return report, (trained["parallel"] or {}) | {"retrain_step_s": took}


@flow(name="agile-loop", log_prints=True)
def agile_loop(config: LoopSettings | None = None, approval_timeout: int = 3600,
               parallel_retrain: bool | None = None, reason: str = "") -> dict[str, Any]:
    """One iteration of the loop for every configured model; returns (and writes) the loop report, also kept
    as the run's Prefect artifact. The run fails when a rollout rolled back or retraining failed.

    ``config``: :class:`~flows.config.LoopSettings` (a dict of its fields from Python); what it leaves empty
    comes from EDGELOOP_* variables. ``reason``: why this run started (a schedule, a person, or the drift
    automation naming the model and its score), kept in the report.
    ``parallel_retrain`` (default: the config's, EDGELOOP_PARALLEL_RETRAIN, off): collect, label and harvest
    every model, retrain those due at the same time (Prefect's Dask task runner, a process per model), then
    gate, package and roll out each. Off, each model goes through every step before the next starts."""
    cfg = settings(config).config()
    if parallel_retrain is not None:
        cfg.parallel_retrain = parallel_retrain
    if reason:
        get_run_logger().info("started because: %s", reason)
    with cfg.state() as state:
        iteration = state.start_iteration()
    report: dict[str, Any] = {"iteration": iteration, "config": {k: v for k, v in asdict(cfg).items()
                                                                 if "token" not in k}, "models": {}}
    if reason:
        report["reason"] = reason
    t_loop = time.perf_counter()
    if cfg.parallel_retrain and len(cfg.model_names()) > 1:
        report["models"], report["parallel_retrain"] = _iterate_parallel(cfg, iteration, approval_timeout)
    else:
        for model in cfg.model_names():
            report["models"][model] = _iterate(cfg, model, iteration, approval_timeout)
    report["seconds"] = round(time.perf_counter() - t_loop, 1)
    files = write_report(cfg, report)
    report["files"] = [str(f) for f in files]
    with cfg.state() as state:
        state.finish_iteration(iteration, report)
    _artifact(report, files)
    failed = report.get("parallel_retrain", {}).get("failed")
    if failed:
        raise steps.LoopError(f"retraining failed for {', '.join(failed)} (the other models went on; report: "
                              f"{report['files'][0] if report['files'] else '-'}): {failed}")
    refused = {m: r["rollout"]["failed"] for m, r in report["models"].items() if (r.get("rollout") or {}).get("failed")}
    if refused:
        raise steps.LoopError("; ".join(refused.values()) + f" (report: {report['files'][0] if report['files'] else '-'})")
    return report


def _artifact(report: dict[str, Any], files: list[Any]) -> None:
    """The iteration's report (its markdown) as a Prefect artifact of the run, keyed per workspace so the
    Artifacts page keeps its history."""
    from pathlib import Path

    from prefect.artifacts import create_markdown_artifact

    md = next((Path(f) for f in files if str(f).endswith(".md")), None)
    text = md.read_text() if md is not None and md.is_file() else f"iteration {report['iteration']}"
    try:
        create_markdown_artifact(markdown=text, key="agile-loop-report",
                                 description=f"agile loop iteration {report['iteration']}")
    except Exception as exc:  # noqa: BLE001 - the report is on disk and in MLflow; the artifact is a view of it
        _log().warning("the iteration report did not become a Prefect artifact: %s", exc)


@flow(name="label-sync", log_prints=True)
def label_sync(config: LoopSettings | None = None) -> dict[str, Any]:
    """Collect new hard examples into Label Studio and harvest finished annotations, without retraining:
    run often so people always have fresh tasks and their work lands in data/ quickly."""
    cfg = settings(config).config()
    with cfg.state() as state:
        iteration = state.start_iteration()
    out = {}
    for model in cfg.model_names():
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
    ap.add_argument("--models", default=None, help="comma-separated (default: EDGELOOP_MODELS, else every model of the workspace)")
    ap.add_argument("--parallel-retrain", action="store_true", default=None,
                    help="retrain the models due at the same time (Dask; default: EDGELOOP_PARALLEL_RETRAIN)")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {"workspace": args.workspace}
    if args.models:
        overrides["models"] = [m.strip() for m in args.models.split(",")]
    report = agile_loop({k: v for k, v in overrides.items() if v is not None},
                        parallel_retrain=args.parallel_retrain)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
