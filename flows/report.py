"""The loop report: per iteration, labels spent, accuracy on the clean and drifted holdouts, the model
versions and the time of each step; markdown + a PNG plot under ``var/loop/reports/``, also logged to the
candidate's MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .steps import LoopConfig


def _champion_metrics(cfg: LoopConfig, model: str) -> dict[str, Any]:
    from models import tracking

    champ = tracking.alias_version(model, "champion", cfg.root)
    if champ is None:
        return {}
    m = tracking.version_info(model, champ, cfg.root)["metrics"]
    return {"version": champ, "clean": m.get(f"clean.{cfg.metric}"), "drifted": m.get(f"drifted.{cfg.metric}")}


def write_report(cfg: LoopConfig, report: dict[str, Any]) -> list[Path]:
    out = cfg.root / "var" / "loop" / "reports"
    out.mkdir(parents=True, exist_ok=True)
    n = report["iteration"]
    history = []
    with cfg.state() as state:
        for it in state.iterations():
            if it["report"] and it["id"] != n:
                history.append(it["report"])
    lines = [f"# Agile loop, iteration {n}", "", f"Total {report['seconds']} s. Data: SYNTHETIC.", ""]
    for model, r in report["models"].items():
        champ = _champion_metrics(cfg, model)
        r["champion_after"] = champ
        col, lab, har = r.get("collect", {}), r.get("label", {}), r.get("harvest", {})
        gate, trained = r.get("gate", {}), r.get("retrain", {})
        lines += [f"## {model}", "",
                  "| | |", "|---|---|",
                  f"| uploads since the last run | {col.get('uploads', 0)} |",
                  f"| marked at the edge / sent to labelling | {col.get('selected_at_edge', 0)} / "
                  f"{lab.get('sent', 0)} (budget {col.get('budget', 0)}) |",
                  f"| labels harvested (new) | {har.get('new_labels', 0)} |",
                  f"| skipped annotations | {len(har.get('problems') or [])} |",
                  f"| data version (labelled) | {har.get('data_version') or '-'} |",
                  f"| retrained | {trained.get('candidate') if trained.get('retrained') else trained.get('why', '-')} |",
                  f"| gate | {'promoted' if gate.get('promoted') else 'kept the champion'}: {gate.get('why', '-')} |",
                  f"| champion after | v{champ.get('version')}: {cfg.metric} clean {_f(champ.get('clean'))}, "
                  f"drifted {_f(champ.get('drifted'))} |",
                  f"| rollout | {(r.get('rollout') or {}).get('state', '-')} |",
                  f"| time per step (s) | {', '.join(f'{k} {v}' for k, v in r['times_s'].items())} |", ""]
    md = out / f"iteration-{n:04d}.md"
    md.write_text("\n".join(lines) + "\n")
    files = [md]
    png = _plot(out / f"iteration-{n:04d}.png", history + [report], cfg.metric)
    if png is not None:
        files.append(png)
    _log_to_mlflow(cfg, report, files)
    return files


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _plot(path: Path, reports: list[dict[str, Any]], metric: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib comes with MLflow
        return None
    models = sorted({m for r in reports for m in r["models"]})
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(5 * max(len(models), 1), 3.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        its, clean, drifted = [], [], []
        for r in reports:
            champ = (r["models"].get(model) or {}).get("champion_after") or {}
            if champ:
                its.append(r["iteration"])
                clean.append(champ.get("clean"))
                drifted.append(champ.get("drifted"))
        ax.plot(its, clean, "o-", label="clean holdout")
        ax.plot(its, drifted, "s-", label="drifted holdout")
        ax.set_title(f"{model}: champion {metric} (synthetic)")
        ax.set_xlabel("iteration")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _log_to_mlflow(cfg: LoopConfig, report: dict[str, Any], files: list[Path]) -> None:
    import json

    from models import tracking

    for model, r in report["models"].items():
        run_file = cfg.root / "artifacts" / f"{model}.run.json"
        if not (r.get("retrain") or {}).get("retrained") or not run_file.exists():
            continue
        run_id = json.loads(run_file.read_text()).get("run_id")
        if run_id:
            tracking.log_files(run_id, files, f"loop/iteration-{report['iteration']}", cfg.root)
