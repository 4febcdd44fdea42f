"""Rollout to a fleet: seconds until 100 SIMULATED nodes serve a new model version, and records lost.

    .venv/bin/python -m bench.rollout [--nodes 100] [--interval 1.0] [--canary 1] [--watch 2]
                                      [--score 50] [--db sqlite|postgresql]

A real hub process (``edgeloop hub serve``, its rollout controller inside) and ``--nodes`` SIMULATED nodes
(:class:`edgeloop.devkit.simfleet.SimNode`, threads in this process): each has a real ModelStore that downloads the
signed bundle from the hub's warehouse, verifies its signature, loads and health-checks it, then swaps it
in; each heartbeats every ``--interval`` s and scores ``--score`` SYNTHETIC rows a step with whatever
version is active. Version 1 serves the group; the bench starts a rollout of version 2 (``--canary``
nodes first, watched ``--watch`` s) and times, from the start request:

- canary serving, canary phase over (the controller moves to the rest), every node serving 2, rollout
  state ``done``;
- records lost: rows a node could not score because no version was active at that moment (a real node
  would dead-letter them). Target 0.

The seconds include the canary watch (a setting, reported) and the nodes' heartbeat interval (each node
learns its new desired state on its next round). Writes bench/results/rollout.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import write_results

MODEL = "bench_model"


def run(nodes: int, interval: float, canary: int, watch: float, score: int, db: str) -> dict[str, Any]:
    from edge_runtime.signing import init_keys
    from edgeloop.devkit import simfleet
    from edgeloop.devkit.hub import HubProcess
    from hub.client import start_rollout, wait_rollout

    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-rollout-") as tmp_s:
        tmp = Path(tmp_s)
        pg = None
        if db == "postgresql":
            from edgeloop.devkit.postgres import PgDatabase

            pg = PgDatabase()
        hub = HubProcess(tmp / "hub", admin_token="ela_bench-admin-token-0123456789",  # noqa: S106 (a throwaway hub)
                         heartbeat=interval,
                         db_url=pg and pg.url).start()
        fleet: list[simfleet.SimNode] = []
        try:
            admin = hub.admin()
            keys = tmp / "keys"
            init_keys(keys)
            for version, seed in (("1", 1), ("2", 2)):
                simfleet.publish(admin, simfleet.make_bundle(tmp / "bundles", MODEL, version, seed), MODEL, version,
                                 keys)
            admin.put(f"/api/v1/models/{MODEL}/deployments/group:fleet", {"version": "1"})
            fleet = [simfleet.SimNode(hub.url, admin, f"n{i:03d}", "fleet", tmp / "nodes", keys, model=MODEL,
                                      interval=interval, score_per_step=score) for i in range(nodes)]
            t = time.perf_counter()
            for n in fleet:
                n.start()
            until(lambda: all(n.serving() == "1" for n in fleet), 300, "the fleet to serve version 1")
            until(lambda: sum(v["online"] for v in admin.get("/api/v1/nodes")) == nodes, 60, "every node online")
            first = time.perf_counter() - t
            t0 = time.time()
            started = start_rollout(admin, MODEL, "2", "fleet", canary=canary, watch_s=watch)
            marks: dict[str, float] = {}

            def progress() -> bool:
                r = admin.get(f"/api/v1/rollouts/{started['id']}")
                now = time.time() - t0
                canaries = [n for n in fleet if n.name in r["canaries"]]
                if "canary_serving" not in marks and all(n.serving() == "2" for n in canaries):
                    marks["canary_serving"] = now
                if "rest_started" not in marks and r["state"] not in ("canary",):
                    marks["rest_started"] = now
                if "all_serving" not in marks and all(n.serving() == "2" for n in fleet):
                    marks["all_serving"] = now
                if r["state"] in ("done", "done_with_offline", "rolled_back", "failed"):
                    marks.setdefault("settled", now)
                    marks["state"] = r["state"]  # type: ignore[assignment]
                return "all_serving" in marks and "settled" in marks

            until(progress, 600, "the rollout to settle", every=0.05)
            final = wait_rollout(admin, started["id"], 10)
            per_node = sorted(n.first_served.get("2", float("nan")) - t0 for n in fleet)
            lost = sum(n.unscored for n in fleet)
            scored = sum(sum(n.scored.values()) for n in fleet)
            errors = sum(n.errors for n in fleet)
        finally:
            for n in fleet:
                n.stop()
            hub.stop()
            if pg is not None:
                pg.drop()
    return {"nodes": nodes, "db": db, "heartbeat_interval_s": interval, "canary": canary, "watch_s": watch,
            "fleet_first_version_s": round(first, 2), "state": final["state"], "reason": final.get("reason"),
            "canary_serving_s": round(marks["canary_serving"], 2), "rest_started_s": round(marks["rest_started"], 2),
            "all_serving_s": round(marks["all_serving"], 2), "done_s": round(marks["settled"], 2),
            "after_canary_phase_s": round(marks["all_serving"] - marks["rest_started"], 2),
            "node_serving_s": {"p50": round(per_node[len(per_node) // 2], 2), "max": round(per_node[-1], 2)},
            "rows_scored": scored, "records_lost": lost, "node_errors": errors}


def until(cond: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rollout", description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0, help="each node's heartbeat period, s")
    ap.add_argument("--canary", type=int, default=1)
    ap.add_argument("--watch", type=float, default=2.0, help="seconds the canaries must stay healthy")
    ap.add_argument("--score", type=int, default=50, help="SYNTHETIC rows each node scores per heartbeat")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--quick", action="store_true", help="20 nodes")
    args = ap.parse_args(argv)
    nodes = 20 if args.quick else args.nodes
    r = run(nodes, args.interval, args.canary, args.watch, args.score, args.db)
    print(f"rollout to {nodes} SIMULATED nodes ({args.db}, heartbeat {args.interval} s, canary {args.canary} "
          f"watched {args.watch} s): canary serving {r['canary_serving_s']} s, rest started {r['rest_started_s']} s, "
          f"all serving {r['all_serving_s']} s ({r['after_canary_phase_s']} s after the canary phase), "
          f"{r['state']} at {r['done_s']} s; records lost {r['records_lost']} of {r['rows_scored']:,} scored; "
          f"node errors {r['node_errors']}")
    write_results("rollout", {"note": "SYNTHETIC: simulated nodes (edgeloop.devkit.simfleet) with real model stores, a real hub "
                                      "process and real signed bundles", "runs": {f"{nodes}-{args.db}": r}})
    return 0 if r["state"] == "done" and r["records_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
