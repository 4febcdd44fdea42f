"""The closing report of ``edgeloop demo``: markdown, PNG plots and an HTML page from the demo's figures.

Written to a folder (``var/demo-report`` by default) that outlives the demo's temporary files: ``report.md``,
``report.html`` (the same tables, with the plots embedded as files beside it), ``accuracy.png`` (the pump
model before and after the agile loop), ``drift.png`` (its drift score at the edge over time, per version) and ``cameras.png`` (per-camera frame rate and alert latency). All
figures come from the run; the devices and videos are SYNTHETIC and the report says so.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _sections(fig: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]], str]]:
    """(title, rows of (what, value), note) per part of the demo that ran."""
    out = []
    if "pumps" in fig:
        p = fig["pumps"]
        out.append(("Pump monitoring on edge-1 (SYNTHETIC pumps: MQTT and a Modbus simulator)", [
            ("records on the Device Bus", _f(p["records"])),
            ("records/s (the simulated pumps are paced: 10 readings/s each)", _f(p.get("records_per_s"), 1)),
            ("alerts (overheating)", _f(p["alerts"])),
            ("device actions (pump-3 stopped by a Modbus coil write)", _f(p["actions"])),
            ("dead letters", _f(p["dead_letters"]))], ""))
    if "cameras" in fig:
        c = fig["cameras"]["all"]
        out.append(("Sewage-dumping detection on edge-cameras (SYNTHETIC street-camera videos over RTSP)", [
            ("frames", _f(c["frames"])),
            ("frames/s per camera (live, paced at 10 fps)", _f(c["fps"], 1)),
            ("alerts / dumping acts in the videos", f"{c['alerts']} / {c['acts']}"),
            ("precision / recall against the ground truth", f"{_f(c['precision'], 2)} / {_f(c['recall'], 2)}"),
            ("latency frame -> alert stored at the hub, p50 / p99 ms",
             f"{_f(c['latency_p50_ms'], 0)} / {_f(c['latency_p99_ms'], 0)}"),
            ("bytes uploaded (alert JSON + JPEG)", _f(c["uploaded_bytes"])),
            ("uploaded / video bytes", f"{c['uploaded_bytes'] / c['video_bytes']:.2%}" if c["video_bytes"] else "-"),
            ("uploaded / raw frame bytes (bytes saved by deciding at the edge)",
             f"{c['uploaded_bytes'] / c['raw_frame_bytes']:.3%}" if c["raw_frame_bytes"] else "-")], ""))
    if "loop" in fig:
        lp = fig["loop"]
        it = lp["iterations"][0]
        rows = [
            ("field windows the node scored with version 1", _f(it["field_windows"])),
            ("sent to Label Studio (labels spent)", f"{it['labels_sent']} ({it['label_share']:.1%} of the uploads)"),
            ("drifted holdout accuracy: version 1 -> candidate",
             f"{_f(it['champion_drifted'])} -> {_f(it['candidate_drifted'])}"),
            ("clean holdout accuracy: version 1 -> candidate",
             f"{_f(it['champion_clean'])} -> {_f(it['candidate_clean'])}"),
            ("gate", ("promoted" if it["promoted"] else "kept the champion") + f": {it['why'] or ''}"),
            ("rollout to group pumps (canary 1, then all)",
             f"#{(it['rollout'] or {}).get('rollout', '-')} {(it['rollout'] or {}).get('state', '-')}"),
            ("accuracy at the node on the drifted data it scored with version 1", _f(it["node_accuracy"])),
        ]
        if lp.get("after"):
            a = lp["after"]
            rows.append((f"new drifted data ({a['field_windows']} windows, never labelled), the same on two nodes: "
                         f"edge-q (version {a['control_version']}) / edge-p (version {a['node_version']})",
                         f"{_f(a['control_accuracy'])} / {_f(a['node_accuracy'])}"))
        rows += [("loop wall time: collect run + retrain run, s", f"{it['run_1_s']} + {it['run_2_s']}"),
                 ("SIMULATED annotator, s (stands in for people; not part of the loop)", _f(it["annotator_s"], 1))]
        out.append(("The agile loop on the pumps (Prefect, Label Studio, MLflow, BentoML; SYNTHETIC drift)", rows,
                    "Labels come from a SIMULATED annotator answering from the generator's ground truth through "
                    "Label Studio's API."))
    return out


def _plots(folder: Path, fig: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if "loop" in fig:
        it = fig["loop"]["iterations"][0]
        bars = {"drifted holdout": (it["champion_drifted"], it["candidate_drifted"]),
                "clean holdout": (it["champion_clean"], it["candidate_clean"])}
        if fig["loop"].get("after"):
            a = fig["loop"]["after"]
            bars["at the edge, new drifted data"] = (a["control_accuracy"], a["node_accuracy"])
        f, ax = plt.subplots(figsize=(6, 3.4))
        xs = range(len(bars))
        ax.bar([x - 0.2 for x in xs], [b[0] for b in bars.values()], 0.4, label="before the loop (v1)")
        ax.bar([x + 0.2 for x in xs], [b[1] for b in bars.values()], 0.4, label="after one iteration")
        ax.set_xticks(list(xs), list(bars))
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_title("pump anomaly model, SYNTHETIC drift")
        ax.legend(loc="lower right", fontsize=8)
        f.tight_layout()
        f.savefig(folder / "accuracy.png", dpi=90)
        plt.close(f)
        made.append(folder / "accuracy.png")
    if fig.get("drift") and fig["drift"]["series"]:
        d = fig["drift"]
        f, ax = plt.subplots(figsize=(6, 3.2))
        t0 = min(p[0] for s in d["series"] for p in s["points"])
        for s in d["series"]:
            pts = [(p[0] - t0, p[1]) for p in s["points"] if p[1] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{s['node']} version {s['version']}")
        ax.axhline(d["threshold"], color="red", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlabel("seconds")
        ax.set_ylabel("drift score (PSI)")
        ax.set_title("pump anomaly model: drift at the edge, SYNTHETIC data")
        ax.legend(fontsize=7)
        f.tight_layout()
        f.savefig(folder / "drift.png", dpi=90)
        plt.close(f)
        made.append(folder / "drift.png")
    if "cameras" in fig:
        cams = {k: v for k, v in fig["cameras"].items() if k not in ("all", "ok")}
        f, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
        a1.bar(list(cams), [v["fps"] for v in cams.values()])
        a1.set_title("frames/s per camera")
        a2.bar(list(cams), [v["latency_p50_ms"] or 0 for v in cams.values()], label="p50")
        a2.bar(list(cams), [(v["latency_p99_ms"] or 0) - (v["latency_p50_ms"] or 0) for v in cams.values()],
               bottom=[v["latency_p50_ms"] or 0 for v in cams.values()], label="p99")
        a2.set_title("frame -> alert at the hub, ms")
        a2.legend(fontsize=8)
        f.suptitle("sewage-dumping detection, SYNTHETIC videos", fontsize=10)
        f.tight_layout()
        f.savefig(folder / "cameras.png", dpi=90)
        plt.close(f)
        made.append(folder / "cameras.png")
    return made


def write_report(folder: Path, fig: dict[str, Any]) -> list[Path]:
    """Write report.md, report.html and the plots into ``folder``; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    sections = _sections(fig)
    pngs = _plots(folder, fig)
    took = fig.get("seconds")
    md = ["# EdgeLoop demo report", "", "Devices, videos and drift are SYNTHETIC; every figure was measured in this run"
          + (f" ({took:.0f} s)." if took else "."), ""]
    for title, rows, note in sections:
        md += [f"## {title}", "", "| what | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows], ""]
        if note:
            md += [note, ""]
    md += [f"![{p.stem}]({p.name})" for p in pngs]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    e = html.escape
    body = [f"<h1>EdgeLoop demo report</h1><p>Devices, videos and drift are SYNTHETIC; every figure was measured "
            f"in this run{f' ({took:.0f} s)' if took else ''}.</p>"]
    for title, rows, note in sections:
        body.append(f"<h2>{e(title)}</h2><table>" + "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in rows)
                    + "</table>" + (f"<p><small>{e(note)}</small></p>" if note else ""))
    body += [f'<img src="{e(p.name)}" alt="{e(p.stem)}">' for p in pngs]
    (folder / "report.html").write_text(
        "<!doctype html><html lang=en><meta charset=utf-8><title>EdgeLoop demo report</title><style>"
        "body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:.5em 0}"
        "td{border-bottom:1px solid #ddd;padding:.3em .8em}td:last-child{text-align:right}img{margin:1em 1em 0 0}"
        "</style>" + "".join(body) + "</html>\n")
    return [folder / "report.md", folder / "report.html", *pngs]
