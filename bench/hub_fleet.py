"""Hub fleet load: 1,000 simulated agents heartbeating every 5 s against one hub (SQLite).

    .venv/bin/python -m bench.hub_fleet [--quick] [--nodes 1000] [--duration 60] [--interval 5]
                                        [--also 200,500] [--profile]

SYNTHETIC agents (seeded; not real nodes).

The hub is ``edgeloop hub serve`` as a subprocess (``tests.kit.hub.HubProcess``: SQLite, the admin
token, heartbeat interval 5 s, no broker). The benchmark creates the nodes through the admin API
(``POST /api/v1/nodes``), registers each with its own token (``POST .../register``, what the agent
does first), and then plays the agents from one asyncio process on raw streams: one keep-alive
HTTP/1.1 connection per node, like ``edge_runtime.hubclient.HubClient``. Each agent sends
``POST /api/v1/nodes/<node>/heartbeat`` every ``--interval`` s (random phase, +-``--jitter`` s
on each period) with a body like ``edge_runtime.node.Node.heartbeat()`` (three instances,
counters, queues, outbox stats, the desired-state ETag); when the hub says the desired state
changed, it fetches ``GET .../desired`` (If-None-Match) as the agent does.

Reported over the measured window (after ``--warmup`` s): heartbeat latency p50/p95/p99/max
(from writing the request to reading the whole response, in the client), errors (non-2xx,
timeouts, dropped connections), achieved heartbeats/s against the offered rate, how late the
generator sent (its own scheduling lag: a loaded client inflates latency), and the hub process's
CPU% (psutil; whole process, all threads), sampled every second. ``--also 200,500`` adds passes
with smaller fleets (where the knee is); ``--profile`` adds a pass (100 agents unless
``--profile-nodes``) with the hub under cProfile, every thread, CPU time, and reports the hot spots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import SEED, print_table, write_results
from tests.kit.hub import ADMIN, HubProcess

ROOT = Path(__file__).resolve().parent.parent
DATA_NOTE = "SYNTHETIC agents: seeded simulated heartbeats generated in bench/hub_fleet.py, not real nodes"
TARGET_P99_MS = 50.0
N_NODES = 1000


# -- a minimal HTTP/1.1 keep-alive client on asyncio streams ------------------------------------------------
class HttpError(Exception):
    pass


class Conn:
    """One keep-alive connection; requests go one at a time (like the agent's http.client connection)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, token: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Authorization: Bearer {token}",
                "Accept: application/json"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length, close = 0, False
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v)
                elif k == "connection" and v.strip().lower() == "close":
                    close = True
                elif k == "transfer-encoding":
                    raise HttpError("chunked responses are not expected")
            data = await self.reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError) as exc:
            self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        if close:
            self.close()
        return status, data


# -- what the agent sends --------------------------------------------------------------------------------
def heartbeat_body(i: int, beat: int, etag: str | None, rng: random.Random) -> bytes:
    """Like edge_runtime.node.Node.heartbeat(): three instances, counters, queues, outbox stats."""
    records = beat * 250 + i
    instances = [{"instance": name, "pipeline": pl, "source": src, "outputs": records // k, "queue": rng.randint(0, 3),
                  "processed": records} for name, pl, src, k in
                 (("overheat", "overheat-alert", "hub", 50), ("upload", "upload-all", "hub", 1),
                  ("vibration", "vibration-mean", "local", 4))]
    delivered = max(0, records - rng.randint(0, 200))
    return orjson.dumps({
        "instances": instances, "models": {},
        "counters": {"records": records, "dead_letters": beat // 20, "alerts": records // 997, "notifications": 0,
                     "uploads": records, "actions": 0, "mqtt_received": records},
        "queues": {"overheat": instances[0]["queue"], "upload": instances[1]["queue"], "vibration": 0},
        "outbox": {"rows": records - delivered, "bytes": (records - delivered) * 280, "media": 0, "accepted": records,
                   "delivered": delivered, "dropped": {}, "dropped_total": 0, "rejected": 0,
                   "sent": delivered // 250 + 1, "resent": 0, "acks": delivered // 250, "last_ack_at": time.time(),
                   "connected": True},
        "errors": [], "desired_etag": etag})


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))]


def cpu_seconds(pid: int) -> float:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:  # noqa: BLE001 - no psutil: /proc
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


async def gather_limited(n: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def setup_nodes(port: int, names: list[str], concurrency: int) -> tuple[dict[str, str], dict[str, Conn], float]:
    """Create the nodes with the admin token (a few connections), then register each on its own connection."""
    admins = [Conn("127.0.0.1", port) for _ in range(concurrency)]
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for c in admins:
        free.put_nowait(c)
    tokens: dict[str, str] = {}

    async def create(name: str) -> None:
        c = await free.get()
        try:
            status, body = await c.request("POST", "/api/v1/nodes", ADMIN,
                                           orjson.dumps({"name": name, "group": "fleet"}))
            if status != 201:
                raise RuntimeError(f"creating {name}: {status} {body[:200]!r}")
            tokens[name] = orjson.loads(body)["token"]
        finally:
            free.put_nowait(c)

    t0 = time.perf_counter()
    await asyncio.gather(*(create(n) for n in names))
    create_s = time.perf_counter() - t0
    for c in admins:
        c.close()
    conns = {n: Conn("127.0.0.1", port) for n in names}

    async def register(name: str) -> None:
        status, body = await conns[name].request(
            "POST", f"/api/v1/nodes/{name}/register", tokens[name],
            orjson.dumps({"version": "0.1.0", "hostname": f"host-{name}", "capabilities": ["mqtt", "modbus", "uplink"]}))
        if status != 200:
            raise RuntimeError(f"registering {name}: {status} {body[:200]!r}")

    await gather_limited(concurrency * 4, [register(n) for n in names])
    return tokens, conns, create_s


async def run_fleet(port: int, hub_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    names = [f"agent-{i:04d}" for i in range(args.nodes)]
    print(f"   creating and registering {len(names)} nodes ...", flush=True)
    t0 = time.perf_counter()
    tokens, conns, create_s = await setup_nodes(port, names, args.setup_concurrency)
    setup_s = time.perf_counter() - t0
    print(f"   {len(names)} nodes created in {create_s:.1f} s, registered in {setup_s - create_s:.1f} s; "
          f"heartbeating for {args.warmup:g} + {args.duration:g} s", flush=True)

    start = loop.time() + 0.5
    m_start = start + args.warmup
    end = m_start + args.duration
    lat: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    counts = {"heartbeats": 0, "desired_gets": 0, "changed": 0, "warmup_heartbeats": 0, "reconnects": 0}
    cpu_samples: list[float] = []

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def agent(i: int, name: str) -> None:
        rng = random.Random(SEED + i)
        conn, token = conns[name], tokens[name]
        etag: str | None = None
        due = start + rng.uniform(0, args.interval)
        beat = 0
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at = loop.time()
            if sent_at >= end:
                return
            measured = sent_at >= m_start
            body = heartbeat_body(i, beat, etag, rng)
            t = time.perf_counter()
            try:
                status, data = await asyncio.wait_for(
                    conn.request("POST", f"/api/v1/nodes/{name}/heartbeat", token, body), args.request_timeout)
                elapsed = time.perf_counter() - t
                if status != 200:
                    if measured:
                        err(f"http {status}")
                else:
                    resp = orjson.loads(data)
                    if measured:
                        lat.append(elapsed)
                        lags.append(sent_at - due)
                        counts["heartbeats"] += 1
                    else:
                        counts["warmup_heartbeats"] += 1
                    if resp.get("changed"):
                        counts["changed"] += 1
                        hdrs = {"If-None-Match": f'"{etag}"'} if etag else {}
                        s2, d2 = await asyncio.wait_for(conn.request("GET", f"/api/v1/nodes/{name}/desired", token,
                                                                     headers=hdrs), args.request_timeout)
                        counts["desired_gets"] += 1
                        if s2 == 200:
                            etag = orjson.loads(d2)["etag"]
                        elif s2 != 304 and measured:
                            err(f"desired http {s2}")
            except TimeoutError:
                conn.close()
                if measured:
                    err("timeout")
            except HttpError as exc:
                if measured:
                    err(str(exc).split(":")[0])
            beat += 1
            due += args.interval + rng.uniform(-args.jitter, args.jitter)

    async def sampler() -> None:
        last_t, last_c = loop.time(), cpu_seconds(hub_pid)
        tick = 0
        while loop.time() < end:
            await asyncio.sleep(1.0)
            now, c = loop.time(), cpu_seconds(hub_pid)
            if now > m_start:
                cpu_samples.append(100 * (c - last_c) / (now - last_t))
            last_t, last_c = now, c
            tick += 1
            if tick % 10 == 0:
                print(f"   t={now - start:5.1f} s  heartbeats {counts['heartbeats'] + counts['warmup_heartbeats']:,}  "
                      f"errors {sum(errors.values())}  p99 so far {pct(lat, 0.99) * 1000:.1f} ms  "
                      f"hub cpu {cpu_samples[-1] if cpu_samples else 0:.0f}%", flush=True)

    tasks = [loop.create_task(agent(i, n)) for i, n in enumerate(names)]
    samp = loop.create_task(sampler())
    await asyncio.sleep(max(0.0, m_start - loop.time()))
    hub_c0, gen_c0, w0 = cpu_seconds(hub_pid), time.process_time(), loop.time()
    await asyncio.sleep(max(0.0, end - loop.time()))
    hub_c1, gen_c1, w1 = cpu_seconds(hub_pid), time.process_time(), loop.time()
    await asyncio.gather(*tasks)
    await samp
    for c in conns.values():
        c.close()
    window = w1 - w0
    ms = [x * 1000 for x in lat]
    lag_ms = [x * 1000 for x in lags]
    return {
        "setup": {"create_nodes_s": round(create_s, 2), "register_s": round(setup_s - create_s, 2)},
        "window_s": round(window, 2),
        "offered_per_s": round(args.nodes / args.interval, 1),
        "heartbeats": counts["heartbeats"], "achieved_per_s": round(counts["heartbeats"] / window, 1),
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "attempts": counts["heartbeats"] + sum(errors.values()),
        "latency_ms": ({"p50": round(pct(ms, 0.50), 2), "p95": round(pct(ms, 0.95), 2), "p99": round(pct(ms, 0.99), 2),
                        "max": round(max(ms), 2), "mean": round(sum(ms) / len(ms), 2)} if ms else
                       {"p50": None, "p95": None, "p99": None, "max": None, "mean": None,
                        "note": "no heartbeat succeeded in the measured window"}),
        "generator_lag_ms": {"p50": round(pct(lag_ms, 0.5), 2), "p99": round(pct(lag_ms, 0.99), 2),
                             "max": round(max(lag_ms), 2) if lag_ms else 0.0},
        "hub_cpu_percent": {"mean": round(100 * (hub_c1 - hub_c0) / window, 1),
                            "max_1s": round(max(cpu_samples), 1) if cpu_samples else None,
                            "samples_1s": [round(x, 1) for x in cpu_samples]},
        "generator_cpu_percent": round(100 * (gen_c1 - gen_c0) / window, 1),
        "desired_gets": counts["desired_gets"], "warmup_heartbeats": counts["warmup_heartbeats"],
        "connections_opened": sum(c.opened for c in conns.values()),
    }


# -- the hub, optionally under cProfile --------------------------------------------------------------------
class ProfiledHub(HubProcess):
    """``edgeloop hub serve`` run by this module with every thread under cProfile (see bench/profiling.py)."""

    def __init__(self, workdir: Path, **kw: Any) -> None:
        super().__init__(workdir, **kw)
        self.profile_out = workdir / "profile.json"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.hub_fleet", "--hub-worker", str(self.profile_out), "--",
                *self.serve_args()]

    def stop(self) -> None:
        """SIGUSR1 first: the hub writes its profile while every thread is still there (even a stuck one)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while not self.profile_out.exists() and time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.1)
        super().stop()


def hub_worker(profile_out: str, cli_args: list[str]) -> None:
    """``edgeloop hub serve`` with every thread under cProfile (CPU time); SIGUSR1 writes the profile."""
    from bench import profiling

    def dump(*_: Any) -> None:
        tmp = Path(profile_out + ".tmp")
        tmp.write_bytes(orjson.dumps(profiling.summary(30)))
        tmp.replace(profile_out)

    signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises the signal after its graceful exit
    signal.signal(signal.SIGUSR1, dump)
    profiling.install(main_thread=True, cpu=True)
    from edgeloop.cli import app

    app(cli_args, standalone_mode=False)


def raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, need)) if hard != resource.RLIM_INFINITY else max(soft, need)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def one_pass(args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    label = f"{args.nodes} agents" + (", hub under cProfile" if profile else "")
    print(f"-- {label}: heartbeats every {args.interval:g} s +-{args.jitter:g} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgeloop-hub-fleet-") as tmpd:
        tmp = Path(tmpd)
        cls = ProfiledHub if profile else HubProcess
        hub = cls(tmp / "hub", heartbeat=args.interval).start()
        try:
            assert hub.proc is not None
            res = asyncio.run(run_fleet(hub.port, hub.proc.pid, args))
        finally:
            hub.stop()
        res["label"] = label
        log_lines = hub.log.read_text(errors="replace").splitlines()
        res["hub_log_errors"] = [ln for ln in log_lines if "ERROR" in ln or "Traceback" in ln][:10]
        res["hub_log_exceptions"] = sorted({ln for ln in log_lines if ln and not ln.startswith((" ", "ERROR", "Traceback",
                                                                                               "INFO", "20"))})[:10]
        if profile and isinstance(hub, ProfiledHub) and hub.profile_out.exists():
            res["profile"] = orjson.loads(hub.profile_out.read_bytes())
    lm = {k: ("-" if v is None else v) for k, v in res["latency_ms"].items()}
    print(f"   {res['heartbeats']:,} heartbeats in {res['window_s']} s = {res['achieved_per_s']}/s "
          f"(offered {res['offered_per_s']}/s)  p50 {lm['p50']} ms  p95 {lm['p95']} ms  p99 {lm['p99']} ms  "
          f"max {lm['max']} ms  errors {res['errors']}  hub cpu {res['hub_cpu_percent']['mean']}% "
          f"(max 1 s {res['hub_cpu_percent']['max_1s']}%)  generator cpu {res['generator_cpu_percent']}%  "
          f"generator lag p99 {res['generator_lag_ms']['p99']} ms", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--hub-worker"]:
        hub_worker(argv[1], argv[3:])
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops what it started
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 agents for 15 s")
    ap.add_argument("--nodes", type=int, default=None, help=f"agents (default {N_NODES})")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds (default 60, quick 15)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds heartbeating before measuring (default 5)")
    ap.add_argument("--interval", type=float, default=5.0, help="heartbeat period per agent, s")
    ap.add_argument("--jitter", type=float, default=0.5, help="+- this many s on every period")
    ap.add_argument("--request-timeout", type=float, default=10.0)
    ap.add_argument("--setup-concurrency", type=int, default=8, help="admin connections creating nodes")
    ap.add_argument("--profile", action="store_true", help="a second pass with the hub under cProfile")
    ap.add_argument("--profile-duration", type=float, default=None, help="measured s of the profiled pass")
    ap.add_argument("--profile-nodes", type=int, default=None, help="agents in the profiled pass (default 100 at most: the profiler slows the hub)")
    ap.add_argument("--also", default="", help="extra passes with these agent counts, e.g. 200,500 (same duration)")
    args = ap.parse_args(argv)
    args.nodes = args.nodes or (200 if args.quick else N_NODES)
    args.duration = args.duration or (15.0 if args.quick else 60.0)
    args.warmup = args.warmup if args.warmup is not None else 5.0
    fds = raise_fd_limit(args.nodes + 512)  # the hub subprocess inherits it
    print(f"hub_fleet: {DATA_NOTE}; nproc {os.cpu_count()}, open files limit {fds}", flush=True)
    res = one_pass(args, profile=False)
    passes = {f"{args.nodes} agents": res}
    for n in [int(x) for x in args.also.split(",") if x.strip()]:
        passes[f"{n} agents"] = one_pass(argparse.Namespace(**{**vars(args), "nodes": n}), profile=False)
    if args.profile:
        pargs = argparse.Namespace(**{**vars(args), "duration": args.profile_duration or args.duration,
                                      "nodes": args.profile_nodes or min(args.nodes, 100)})
        passes[f"{pargs.nodes} agents, hub under cProfile"] = one_pass(pargs, profile=True)
    lm = res["latency_ms"]
    meets_p99 = lm["p99"] is not None and lm["p99"] <= TARGET_P99_MS
    met = meets_p99 and res["errors"] == 0
    payload = {
        "data_note": DATA_NOTE,
        "setup": {"agents": args.nodes, "interval_s": args.interval, "jitter_s": args.jitter, "warmup_s": args.warmup,
                  "duration_s": args.duration, "request_timeout_s": args.request_timeout,
                  "hub": "edgeloop hub serve subprocess (tests.kit.hub.HubProcess), SQLite, uvicorn (h11, asyncio "
                         "loop; no uvloop/httptools installed), no broker",
                  "generator": "this process: asyncio, one keep-alive HTTP/1.1 connection per agent on raw streams",
                  "latency": "client side: request written -> whole response read",
                  "open_files_limit": fds},
        "targets": {"heartbeat_p99_ms": TARGET_P99_MS, "errors": 0},
        "summary": {"p50_ms": lm["p50"], "p95_ms": lm["p95"], "p99_ms": lm["p99"], "max_ms": lm["max"],
                    "errors": res["errors"], "achieved_per_s": res["achieved_per_s"],
                    "offered_per_s": res["offered_per_s"], "hub_cpu_percent": res["hub_cpu_percent"]["mean"],
                    "attempts": res["attempts"], "meets_p99": meets_p99, "meets_target": met},
        "passes_summary": [{"pass": k, "agents": int(k.split()[0]), "offered_per_s": p["offered_per_s"],
                            "achieved_per_s": p["achieved_per_s"], "p50_ms": p["latency_ms"]["p50"],
                            "p95_ms": p["latency_ms"]["p95"], "p99_ms": p["latency_ms"]["p99"],
                            "max_ms": p["latency_ms"]["max"], "errors": p["errors"],
                            "hub_cpu_percent": p["hub_cpu_percent"]["mean"],
                            "hub_cpu_ms_per_heartbeat": round(10 * p["hub_cpu_percent"]["mean"] / p["achieved_per_s"], 2)
                            if p["achieved_per_s"] else None} for k, p in passes.items()],
        "load_average_at_end": os.getloadavg(),
        "passes": passes,
    }
    path = write_results("hub_fleet", payload)
    print()
    print_table([[p["label"], p["heartbeats"], p["achieved_per_s"], *(p["latency_ms"][k] if p["latency_ms"][k] is not None
                                                                      else "-" for k in ("p50", "p95", "p99", "max")),
                  p["errors"], p["hub_cpu_percent"]["mean"]] for p in passes.values()],
                ["pass", "heartbeats ok", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "hub cpu%"])
    print(f"target: heartbeat p99 <= {TARGET_P99_MS:g} ms with no errors: {'met' if met else 'NOT met'}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
