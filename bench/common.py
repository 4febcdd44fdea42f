"""Shared pieces of the benchmarks: synthetic telemetry, results files, tables.

Every figure these benchmarks print comes from SYNTHETIC data made here with a
fixed seed: simulated pumps, not real devices.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["N_RECORDS", "N_DEVICES", "PERIOD", "T0", "SEED", "DATA_NOTE", "device_names",
           "generate_columns", "columns_to_records", "machine_facts", "write_results", "print_table"]

N_RECORDS = 1_000_000
N_DEVICES = 1_000
PERIOD = 0.25  # each device sends every 0.25 s: a 1 s window holds 4 of its records
T0 = 1_732_272_000.0  # a whole second, so 1 s windows line up with the send rounds
SEED = 20241122
DATA_NOTE = ("SYNTHETIC data: seeded simulated pump telemetry (bench/common.py), "
             "not recorded from real devices")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_names(n_devices: int = N_DEVICES) -> list[str]:
    return [f"pump-{i:04d}" for i in range(n_devices)]


def generate_columns(n: int = N_RECORDS, n_devices: int = N_DEVICES, period: float = PERIOD,
                     seed: int = SEED) -> dict[str, Any]:
    """Synthetic pump telemetry, column-wise, in arrival (= event time) order.

    Round k sends one record from every device, device j at
    ``T0 + k*period + j*period/n_devices`` plus a small jitter that keeps ``ts``
    strictly increasing overall (so nothing is late). ``temperature`` is a
    per-device level in 72-86 plus noise (about 63-95), ``vibration`` is
    uniform in [0, 1).

    Returns ``device_idx`` (int64 index into :func:`device_names`), ``ts``,
    ``temperature``, ``vibration`` (float64 arrays) and ``names``.
    """
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.int64)
    dev = i % n_devices
    rnd = i // n_devices
    slot = period / n_devices
    ts = T0 + rnd * period + dev * slot + rng.uniform(0.0, 0.9 * slot, n)
    level = rng.uniform(72.0, 86.0, n_devices)
    temperature = level[dev] + rng.normal(0.0, 3.0, n)
    vibration = rng.random(n)
    return {"names": device_names(n_devices), "device_idx": dev, "ts": ts,
            "temperature": temperature, "vibration": vibration}


def columns_to_records(cols: dict[str, Any], product: str = "pump") -> list[dict[str, Any]]:
    """The same telemetry as Device Bus records (already parsed, validated dicts)."""
    names = cols["names"]
    return [{"device": names[d], "product": product, "ts": t, "values": {"temperature": te, "vibration": v}}
            for d, t, te, v in zip(cols["device_idx"].tolist(), cols["ts"].tolist(),
                                   cols["temperature"].tolist(), cols["vibration"].tolist(), strict=True)]


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_facts() -> dict[str, Any]:
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    return {
        "nproc": os.cpu_count(),
        "affinity": affinity,
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the machine facts added."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {"benchmark": name, "data": DATA_NOTE, "machine": machine_facts(), **payload}
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain fixed-width table on stdout (numbers right-aligned)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(line(r))


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.2f}"
