"""The benchmark pipeline written by hand: one pass of plain Python over Record dicts.

Does what this EdgeLoop pipeline does::

    device_input (product pump) -> filter temperature > 75 -> time_window 1s per device
    -> aggregate temperature: mean, vibration: max -> custom_function temp_f = mean*9/5+32
    -> filter vibration_max > 0.5

Windows are tumbling, aligned to whole multiples of ``size``, one open window per
device; a window is emitted when a record of a later window arrives for its
device, and at end of input (then by window start, ties by first arrival). A
record for an older window than the device's open one is late and dropped.
Each output is a Record whose ``ts`` is the window end, with values
``temperature_mean``, ``vibration_max``, ``count``, ``window_start``, ``temp_f``
(the fields EdgeLoop's aggregate and custom_function produce).

Written the way one would write it without a framework: running sums per open
window instead of lists, locals for hot names, no per-record function calls
except for the emitted windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def run_baseline(records: Iterable[dict[str, Any]], *, product: str = "pump", size: float = 1.0,
                 min_temperature: float = 75.0, min_vibration: float = 0.5) -> tuple[list[dict[str, Any]], int]:
    """Returns (output records in emission order, number of late records dropped)."""
    out: list[dict[str, Any]] = []
    append = out.append
    floor = math.floor
    # device -> [window index, arrival seq of first record, product, temperature sum, count, vibration max]
    open_windows: dict[str, list[Any]] = {}
    late = 0

    def emit(device: str, st: list[Any]) -> None:
        vmax = st[5]
        if vmax > min_vibration:
            mean = st[3] / st[4]
            w = st[0]
            append({"device": device, "product": st[2], "ts": float((w + 1) * size),
                    "values": {"temperature_mean": mean, "vibration_max": vmax, "count": st[4],
                               "window_start": float(w * size), "temp_f": mean * 9 / 5 + 32}})

    for seq, rec in enumerate(records):
        prod = rec["product"]
        if prod != product and prod is not None:
            continue
        values = rec["values"]
        t = values["temperature"]
        if not t > min_temperature:
            continue
        device = rec["device"]
        v = values["vibration"]
        win = floor(rec["ts"] / size)
        st = open_windows.get(device)
        if st is None:
            open_windows[device] = [win, seq, prod, t, 1, v]
        elif win == st[0]:
            st[3] += t
            st[4] += 1
            if v > st[5]:
                st[5] = v
        elif win > st[0]:
            emit(device, st)
            open_windows[device] = [win, seq, prod, t, 1, v]
        else:
            late += 1
    for device, st in sorted(open_windows.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        emit(device, st)
    return out, late
