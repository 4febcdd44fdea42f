"""Synthetic pump telemetry with ground-truth fault labels (no real data: everything is simulated).

The model of a pump is deliberately simple but shaped like the real thing:

* **load** follows a daily cycle (low at night, peak in the afternoon) plus a slow random walk;
* **current** (A) is proportional to load, **temperature** (degC) is ambient plus a lagged share of load,
  **vibration** (mm/s RMS) is a base level plus a load share, each with sensor noise;
* **faults** are scheduled per pump as non-overlapping events with known start, end and kind:
  ``bearing_wear`` (vibration grows, temperature follows), ``overheating`` (cooling failure: temperature
  rises with a first-order response), ``cavitation`` (current and vibration oscillate), ``sensor_stuck``
  (one channel freezes) and ``sensor_spike`` (one channel shows large isolated spikes);
* ``drift="ageing"`` adds per-pump sensor offsets and gains that drift over time and a rising baseline
  temperature.  Drift is not a fault: labels stay 0 where no fault is active.

The result is columnar (:class:`Telemetry`), with :meth:`Telemetry.to_records` giving EdgeLoop records
``{"device", "product": "pump", "ts", "values": {...}}`` and :func:`windows` giving per-device window
features with a window label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FAULTS: tuple[str, ...] = ("normal", "bearing_wear", "overheating", "cavitation", "sensor_stuck", "sensor_spike")
"""Label codes: ``label == i`` means ``FAULTS[i]`` is active (0 is normal operation)."""
CHANNELS: tuple[str, ...] = ("temperature", "vibration", "current")
DRIFTS: tuple[str, ...] = ("ageing",)
T0 = 1732233600.0  # 2024-11-22T00:00:00Z, a midnight, so the daily cycle is easy to read
_DURATION_H = {  # (min, max) duration in hours per fault kind
    "bearing_wear": (4.0, 12.0),
    "overheating": (1.0, 4.0),
    "cavitation": (0.5, 3.0),
    "sensor_stuck": (0.5, 6.0),
    "sensor_spike": (0.5, 2.0),
}


@dataclass(frozen=True)
class FaultEvent:
    """Ground truth of one fault: which pump, what, when (epoch seconds, end exclusive), which channel."""

    device: str
    kind: str
    start: float
    end: float
    channel: str | None = None  # the affected sensor for sensor faults


@dataclass
class Telemetry:
    """Columnar telemetry, one row per sample, rows ordered by time (pumps interleaved)."""

    device: np.ndarray  # str
    ts: np.ndarray  # float64 epoch seconds
    temperature: np.ndarray  # float64 degC
    vibration: np.ndarray  # float64 mm/s RMS
    current: np.ndarray  # float64 A
    label: np.ndarray  # int8 code into FAULTS
    events: list[FaultEvent] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ts.size)

    def columns(self) -> dict[str, np.ndarray]:
        """The arrays by name (device, ts, temperature, vibration, current, label)."""
        return {k: getattr(self, k) for k in ("device", "ts", "temperature", "vibration", "current", "label")}

    def to_records(self) -> list[dict[str, Any]]:
        """EdgeLoop records; the ground truth is not in them (see :meth:`records_and_labels`)."""
        t, v, c = self.temperature.round(3).tolist(), self.vibration.round(4).tolist(), self.current.round(3).tolist()
        return [
            {"device": d, "product": "pump", "ts": ts,
             "values": {"temperature": t[i], "vibration": v[i], "current": c[i]}}
            for i, (d, ts) in enumerate(zip(self.device.tolist(), self.ts.tolist()))
        ]

    def records_and_labels(self) -> tuple[list[dict[str, Any]], np.ndarray]:
        """``(records, labels)``: the records and the per-record fault code."""
        return self.to_records(), self.label


def _schedule(rng: np.random.Generator, device: str, t_end: float, rate_per_day: float,
              kinds: tuple[str, ...]) -> list[FaultEvent]:
    """Non-overlapping fault events for one pump over ``[T0, t_end)``."""
    days = (t_end - T0) / 86400.0
    n = int(rng.poisson(rate_per_day * days))
    events: list[FaultEvent] = []
    for _ in range(n * 4):  # a few tries each; overlapping draws are dropped
        if len(events) >= n:
            break
        kind = str(rng.choice(kinds))
        lo, hi = _DURATION_H[kind]
        dur = min(rng.uniform(lo, hi) * 3600.0, 0.6 * (t_end - T0))
        start = T0 + rng.uniform(0.05, 1.0) * (t_end - T0 - dur)
        if any(start < e.end + 1800 and e.start < start + dur + 1800 for e in events):
            continue
        channel = str(rng.choice(CHANNELS)) if kind.startswith("sensor") else None
        events.append(FaultEvent(device, kind, float(start), float(start + dur), channel))
    return sorted(events, key=lambda e: e.start)


def _pump(rng: np.random.Generator, t: np.ndarray, events: list[FaultEvent], drift: str | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Temperature, vibration, current and label for one pump at times ``t``."""
    n, hours = t.size, (t - T0) / 3600.0
    dt = float(t[1] - t[0]) if n > 1 else 1.0
    # Load: daily cycle (minimum ~04:00, peak ~16:00) plus a slow, bounded random walk.
    walk = np.cumsum(rng.normal(0.0, 0.02 * np.sqrt(dt / 60.0), n))
    walk -= np.linspace(0.0, walk[-1], n)  # pin both ends: no long-term trend from the walk
    load = np.clip(0.6 - 0.25 * np.cos(2 * np.pi * (hours - 4.0) / 24.0) + 0.1 * np.tanh(walk), 0.1, 1.0)
    rated_a, ambient = rng.uniform(10.0, 16.0), rng.uniform(16.0, 24.0)
    lagged = np.clip(0.6 - 0.25 * np.cos(2 * np.pi * (hours - 4.75) / 24.0), 0.1, 1.0)  # heat lags ~45 min
    temp = ambient + 3.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0) + 40.0 * lagged
    vib = rng.uniform(1.2, 2.0) + 1.5 * load
    cur = rated_a * load
    label = np.zeros(n, dtype=np.int8)
    for e in events:
        m = (t >= e.start) & (t < e.end)
        if not m.any():
            continue
        label[m] = FAULTS.index(e.kind)
        p, since = (t[m] - e.start) / (e.end - e.start), t[m] - e.start
        if e.kind == "bearing_wear":
            vib[m] += 7.0 * p**1.5 * (1.0 + 0.2 * rng.standard_normal(p.size))
            temp[m] += 14.0 * p**2  # friction heat follows the vibration, later
        elif e.kind == "overheating":
            temp[m] += 28.0 * (1.0 - np.exp(-since / 1200.0))
            cur[m] *= 1.05
        elif e.kind == "cavitation":
            period = rng.uniform(20.0, 90.0)
            wave = np.sin(2 * np.pi * since / period + rng.uniform(0, 2 * np.pi))
            cur[m] *= 0.92 + 0.18 * wave + 0.05 * rng.standard_normal(p.size)
            vib[m] += 2.5 + 2.0 * np.abs(wave) + 0.6 * rng.standard_normal(p.size)
    # Sensor noise, then ageing drift of the sensors and the baseline temperature.
    temp += rng.normal(0.0, 0.3, n)
    vib = np.abs(vib + rng.normal(0.0, 0.12, n))
    cur += rng.normal(0.0, 0.15, n)
    if drift == "ageing":
        days = hours / 24.0
        temp = temp * (1.0 + rng.uniform(0.005, 0.015) * days) + rng.uniform(0.8, 1.5) * days  # gain + baseline
        vib = vib * (1.0 + rng.uniform(0.02, 0.05) * days) + rng.uniform(0.05, 0.15) * days
        cur = cur * (1.0 + rng.uniform(0.005, 0.02) * days) + rng.uniform(-0.1, 0.1) * days
    chans = {"temperature": temp, "vibration": vib, "current": cur}
    for e in events:  # sensor faults corrupt the measured value, after noise and drift
        m = np.flatnonzero((t >= e.start) & (t < e.end))
        if m.size == 0 or e.channel is None:
            continue
        x = chans[e.channel]
        if e.kind == "sensor_stuck":
            x[m] = x[m[0]]
        elif e.kind == "sensor_spike":
            hit = m[rng.random(m.size) < max(0.05, min(0.5, 3.0 / m.size))]
            x[hit] += np.sign(rng.standard_normal(hit.size)) * rng.uniform(5.0, 15.0, hit.size) * (np.abs(x[hit]) + 1)
    return temp, vib, cur, label


def generate_telemetry(n_pumps: int, hours: float, *, rate_hz: float = 1.0, seed: int, drift: str | None = None,
                       fault_rate: float = 2.0, faults: tuple[str, ...] | None = None, t0: float = T0) -> Telemetry:
    """Simulate ``n_pumps`` pumps for ``hours`` hours sampled at ``rate_hz``; same seed, same arrays.

    ``fault_rate`` is the expected number of fault events per pump and day; ``faults`` restricts the kinds
    (default: all of ``FAULTS[1:]``); ``drift`` is ``None`` or ``"ageing"``; ``t0`` shifts all timestamps.
    """
    if drift is not None and drift not in DRIFTS:
        raise ValueError(f"drift must be None or one of {DRIFTS}, got {drift!r}")
    kinds = tuple(faults) if faults is not None else FAULTS[1:]
    if unknown := set(kinds) - set(FAULTS[1:]):
        raise ValueError(f"unknown fault kinds {sorted(unknown)}")
    n = max(2, int(round(hours * 3600.0 * rate_hz)))
    t = T0 + np.arange(n) / rate_hz
    root = np.random.SeedSequence(seed)
    cols: list[tuple[np.ndarray, ...]] = []
    events: list[FaultEvent] = []
    for k, child in enumerate(root.spawn(n_pumps)):  # one stream per pump: adding pumps keeps the others
        rng = np.random.default_rng(child)
        name = f"pump-{k + 1}"
        ev = _schedule(rng, name, float(t[-1]) + 1.0 / rate_hz, fault_rate, kinds) if kinds else []
        cols.append((np.full(n, name), t, *_pump(rng, t, ev, drift)))
        events += ev
    device, ts, temp, vib, cur, label = (np.concatenate(c) for c in zip(*cols))
    order = np.argsort(ts, kind="stable")  # interleave pumps as a live stream would
    shift = t0 - T0
    events = [FaultEvent(e.device, e.kind, e.start + shift, e.end + shift, e.channel) for e in events]
    return Telemetry(device[order], ts[order] + shift, temp[order], vib[order], cur[order], label[order], events)


def windows(data: Telemetry, window_s: float = 600.0) -> dict[str, np.ndarray]:
    """Per-device fixed (tumbling) windows of ``window_s`` seconds with features and a window label.

    Returns columns ``device, start, count``, ``<channel>_{mean,std,min,max}`` for temperature, vibration
    and current, ``anomalous`` (bool: a fault is active in some sample of the window) and ``fault`` (the
    most frequent non-zero code in the window, 0 if none).
    """
    names, dev = np.unique(data.device, return_inverse=True)
    widx = np.floor((data.ts - data.ts.min()) / window_s).astype(np.int64)
    key = dev.astype(np.int64) * (int(widx.max()) + 1) + widx
    order = np.argsort(key, kind="stable")
    key_s = key[order]
    starts = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
    count = np.diff(np.r_[starts, key_s.size])
    first = order[starts]
    out: dict[str, np.ndarray] = {
        "device": names[dev[first]],
        "start": data.ts.min() + widx[first] * window_s,
        "count": count,
    }
    for ch in CHANNELS:
        x = getattr(data, ch)[order]
        mean = np.add.reduceat(x, starts) / count
        sq = np.add.reduceat(x * x, starts) / count
        out[f"{ch}_mean"], out[f"{ch}_std"] = mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))
        out[f"{ch}_min"], out[f"{ch}_max"] = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
    lab = data.label[order].astype(np.int64)
    out["anomalous"] = np.maximum.reduceat(lab, starts) > 0
    hist = np.zeros((starts.size, len(FAULTS)), dtype=np.int64)
    np.add.at(hist, (np.repeat(np.arange(starts.size), count), lab), 1)
    hist[:, 0] = 0
    out["fault"] = np.where(out["anomalous"], hist.argmax(axis=1), 0).astype(np.int8)
    return out
