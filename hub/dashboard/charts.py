"""Charts drawn on the server as inline SVG (no script, nothing fetched): a model's drift score over time per
node, with its threshold."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["drift_chart"]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
W, H, PAD_L, PAD_B, PAD_T = 640, 170, 44, 22, 8


def drift_chart(view: dict[str, Any], *, now: float | None = None, span_s: float = 86400) -> dict[str, Any]:
    """What models.html draws for ``view`` (:func:`hub.drift.drift_view`): one polyline per node and version,
    the threshold line, axis labels. x: the last ``span_s`` seconds up to now (or from the first point when
    later); y: 0 to the larger of twice the threshold and the highest score."""
    now = now or time.time()
    pts = [(t, s) for line in view["series"] for t, s in line["points"] if s is not None]
    t0 = max(now - span_s, min((t for t, _ in pts), default=now - span_s))
    t1 = max(now, t0 + 1)
    top = max([view["threshold"] * 2, *(s for _, s in pts)]) or 1.0
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T

    def x(t: float) -> float:
        return round(PAD_L + plot_w * (t - t0) / (t1 - t0), 1)

    def y(s: float) -> float:
        return round(PAD_T + plot_h * (1 - min(s, top) / top), 1)

    lines = []
    for i, line in enumerate(view["series"]):
        xy = [f"{x(t)},{y(s)}" for t, s in line["points"] if s is not None and t >= t0]
        if not xy:
            continue
        last = next((s for _, s in reversed(line["points"]) if s is not None), None)
        node = view["nodes"].get(line["node"], {})
        lines.append({"node": line["node"], "version": line["version"], "points": " ".join(xy),
                      "colour": COLOURS[i % len(COLOURS)], "last": last,
                      "alarm": bool(node.get("alarm")) and node.get("version") == line["version"]})
    return {"width": W, "height": H, "left": PAD_L, "right": W - 8, "top": PAD_T, "bottom": H - PAD_B,
            "threshold": view["threshold"], "threshold_y": y(view["threshold"]), "y_max": round(top, 3),
            "from": t0, "to": t1, "lines": lines, "alarm": view["alarm"], "sustain_s": view["sustain_s"]}
