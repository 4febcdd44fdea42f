"""The sewage-dumping pipeline in the fluent builder (the paper's Code 1); ``pipeline.yaml`` is the same."""

from __future__ import annotations

from typing import Any

from edge_runtime.pipeline import Pipeline, Plan

SHOP_FRONTS = [[0, 0, 1.0, 0.25]]  # x, y, w, h in fractions of the frame: the building wall (the top quarter of
#                                   any camera), pixelated in every image that leaves


def pipeline(regions: dict[str, Any], *, name: str = "sewage-dumping", quiet: str = "3s") -> Plan:
    """``regions``: camera id -> {"drain": [x0, y0, x1, y1]} (generate.py writes them for its cameras)."""
    return (Pipeline.named(name).product("street_camera")
            .uplink(blur=SHOP_FRONTS)
            .device_input()
            .frame_rate(fps=10)
            .region_of_interest(per_device=regions, size=128, output="crop")
            .apply_model(model="intrusion", image="crop", output="intrusion", select={"low_confidence": 0.7})
            .filter("intrusion == 1")
            .resolution(field="crop", width=64, height=64, output="crop64")
            .frame_stack(frames=4, field="crop64", output="clip")
            .apply_model(model="activity", image="clip", output="activity")
            .filter("activity == 1")
            .alert(message="sewage dumping at {device}", image="frame", quality=75, until_quiet=quiet)
            .build())
