"""`make bench`: every benchmark in one run, then one summary table from bench/results/*.json.

All data is synthetic (seeded simulated pump telemetry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BENCHES = ["bench.pipeline_inproc", "bench.mqtt_e2e", "bench.hub_ingest", "bench.hub_fleet", "bench.uplink_recovery",
           "bench.model_apply", "bench.hot_swap", "bench.sewage", "bench.alert_latency", "bench.tutorials"]


def main() -> int:
    rc = 0
    for mod in BENCHES:
        print(f"== {mod}", flush=True)
        proc = subprocess.run([sys.executable, "-m", mod, *sys.argv[1:]], cwd=RESULTS.parent.parent,
                              env={**os.environ, "PYTHONPATH": str(RESULTS.parent.parent)})
        rc = rc or proc.returncode
    rows = []
    p = RESULTS / "pipeline_inproc.json"
    if p.exists():
        d = json.loads(p.read_text())
        for run in d["runs"].values():
            rows.append((run["label"], f"{run['records_per_s']:,.0f} rec/s", f"{run['x_baseline']:.2f}x loop"))
    m = RESULTS / "mqtt_e2e.json"
    if m.exists():
        d = json.loads(m.read_text())
        for s in d.get("summary", []):
            ratio = s.get("ratio_to_baseline")
            rows.append((f"MQTT e2e {s['run']}", f"{s['records_per_s']:,} rec/s zero loss",
                         f"{ratio:.2f}x paho" if ratio else "-"))
    h = RESULTS / "hub_ingest.json"
    if h.exists():
        d = json.loads(h.read_text())
        for s in d.get("summary", []):
            met = s.get("meets_target")
            rows.append((f"hub ingest {s['run']}", f"{s['records_per_s_median']:,} rec/s"
                         + ("" if s.get("no_loss_no_dups") else " LOSS/DUPS"),
                         "-" if met is None else ("target met" if met else "target NOT met")))
    f = RESULTS / "hub_fleet.json"
    if f.exists():
        d = json.loads(f.read_text())
        s = d["summary"]
        p99 = "no heartbeat ok" if s["p99_ms"] is None else f"p99 {s['p99_ms']:g} ms"
        rows.append((f"hub fleet {d['setup']['agents']} agents heartbeat", f"{p99}, {s['errors']} errors",
                     "target met" if s["meets_target"] else "target NOT met"))
    u = RESULTS / "uplink_recovery.json"
    if u.exists():
        d = json.loads(u.read_text())
        s = d["summary"]
        drained = f"drained in {s['drain_s']:g} s" if s["drain_s"] is not None else "not drained"
        rows.append((f"uplink recovery {d['setup']['outage_s']:g} s outage", drained,
                     "target met" if s["meets_target"] else "target NOT met"))
    ma = RESULTS / "model_apply.json"
    if ma.exists():
        s = json.loads(ma.read_text())["summary"]
        rows.append(("apply_model pump_anomaly batch 256, 1 core", f"{s['pump_records_per_s_b256']:,.0f} rec/s",
                     "target met" if s["meets_pump_target"] else "target NOT met"))
        rows.append(("apply_model intrusion batch 64, 1 core", f"{s['intrusion_crops_per_s_b64']:,.0f} crops/s",
                     "target met" if s["meets_intrusion_target"] else "target NOT met"))
    hs = RESULTS / "hot_swap.json"
    if hs.exists():
        d = json.loads(hs.read_text())
        s = d["summary"]
        rows.append((f"model hot swap x{s['swaps_done']} at {d['setup']['rate_records_per_s']:,.0f} rec/s",
                     f"lost {s['lost']}, p99 {s['p99_ms_during_swaps']:g} ms in swaps",
                     "target met" if s["meets_target"] else "target NOT met"))
    sw = RESULTS / "sewage.json"
    if sw.exists():
        s = json.loads(sw.read_text())["summary"]
        fps = s[f"edgeloop_frames_per_s_b{s['batch']}"]
        rows.append((f"sewage app video, 1 core, {s['batch']} frames/push",
                     f"{fps:,.0f} fps, {s['x_hand_written']:.2f}x hand",
                     "target met" if s["meets_target"] else "target NOT met"))
    print(f"\nsummary (synthetic data, nproc={os.cpu_count()})")
    for r in rows:
        print(f"  {r[0]:<48} {r[1]:>28} {r[2]:>14}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
