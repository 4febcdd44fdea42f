"""cProfile for every thread of a process (the hub and its ingest are threaded), summarised as text.

``install()`` before the threads start: each thread then runs under its own profiler; ``summary()``
merges the profiles of threads with the same kind of name (e.g. the API's worker threads) and
returns the top functions by own time and by cumulative time. By default cProfile measures wall
time per thread, so a thread waiting for the GIL shows that wait in the call that released it
(socket send, select, sqlite); ``install(cpu=True)`` measures each thread's CPU time instead.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["install", "summary"]

ROOT = Path(__file__).resolve().parent.parent
_profiles: list[tuple[str, cProfile.Profile]] = []


def install(main_thread: bool = True, cpu: bool = False) -> None:
    """Profile every thread started from now on (and this one, when ``main_thread``).

    ``cpu``: measure each thread's CPU time (``time.thread_time``) instead of wall time, so time spent
    waiting (for the GIL, a lock, a database, the network) drops out and what is left is what the
    functions cost.
    """
    timer = (time.thread_time,) if cpu else ()
    orig = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_inner(self: threading.Thread) -> None:  # wraps run() of every Thread subclass too
        p = cProfile.Profile(*timer)
        _profiles.append((self.name, p))
        p.enable()
        try:
            orig(self)
        finally:
            p.disable()

    threading.Thread._bootstrap_inner = bootstrap_inner  # type: ignore[attr-defined]
    if main_thread:
        p = cProfile.Profile(*timer)
        _profiles.append(("MainThread", p))
        p.enable()


class _Snapshot:
    """A profile's completed calls, taken without disabling it.

    ``pstats.Stats(profile)`` disables the profiler, which closes the calls still open in *other*
    threads (a worker blocked in ``queue.get``) with this thread's clock: nonsense times. Calls not
    finished yet are left out here instead.
    """

    def __init__(self, p: cProfile.Profile) -> None:
        p.snapshot_stats()
        self.stats = p.stats  # type: ignore[attr-defined]

    def create_stats(self) -> None:
        pass


def _kind(name: str) -> str:
    return re.sub(r"[-_ ]?[0-9a-f]{6,}$|[-_ ]?\(?\d+\)?$|_\d+$", "", name) or name


def summary(top: int = 25) -> dict[str, Any]:
    """{thread kind: {threads, total_s, by_tottime, by_cumulative}} for threads that ran at all."""
    for name, p in _profiles:
        if name == "MainThread" and threading.current_thread() is threading.main_thread():
            p.disable()
    groups: dict[str, list[_Snapshot]] = {}
    for name, p in _profiles:
        groups.setdefault(_kind(name), []).append(_Snapshot(p))
    out: dict[str, Any] = {}
    for kind, ps in groups.items():
        try:
            st = pstats.Stats(ps[0])  # type: ignore[arg-type]
            for p in ps[1:]:
                st.add(p)  # type: ignore[arg-type]
        except TypeError:  # a profile that recorded nothing
            continue
        total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
        if total < 0.05:
            continue
        entry: dict[str, Any] = {"threads": len(ps), "total_own_s": round(total, 3)}
        for key, order, n in (("by_tottime", "tottime", top), ("by_cumulative", "cumulative", 2 * top)):
            buf = io.StringIO()
            st.stream = buf  # type: ignore[attr-defined]
            st.sort_stats(order).print_stats(n)
            entry[key] = _trim(buf.getvalue())
        out[kind] = entry
    return out


def _trim(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.splitlines()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return [ln.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "").replace(sys.base_prefix + "/", "")
            for ln in lines[start:] if ln.strip()]
