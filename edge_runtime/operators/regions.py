"""The region operator: ``region_of_interest`` crops configured boxes and polygons out of frames (one record
per frame and region), each camera with its own regions where it sees the scene from elsewhere."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..records import Batch
from .base import Operator, SpecError, register
from .images import column_values, cv2, is_frame, object_column
from .params import field_name, frame_size

__all__ = ["RegionOfInterest"]


def _regions(regions: Any) -> list[tuple[str, tuple[int, int, int, int], NDArray[Any] | None]]:
    """``{name: [x0, y0, x1, y1]}`` or ``{name: {polygon: [[x, y], ...]}}`` -> (name, box, polygon)."""
    if not isinstance(regions, dict) or not regions:
        raise SpecError("expected a mapping of region name -> [x0, y0, x1, y1] or {polygon: [[x, y], ...]}",
                        field="regions")
    out: list[tuple[str, tuple[int, int, int, int], NDArray[Any] | None]] = []
    for name, r in regions.items():
        where = f"regions.{name}"
        if isinstance(r, dict) and set(r) == {"polygon"}:
            pts = r["polygon"]
            if not (isinstance(pts, list) and len(pts) >= 3 and all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(c, int) and not isinstance(c, bool)
                                                                and c >= 0 for c in p) for p in pts)):
                raise SpecError("a polygon is a list of at least 3 [x, y] points (whole pixels >= 0)",
                                field=f"{where}.polygon")
            poly = np.array(pts, dtype=np.int32)
            box = (int(poly[:, 0].min()), int(poly[:, 1].min()), int(poly[:, 0].max()) + 1,
                   int(poly[:, 1].max()) + 1)
            out.append((str(name), box, poly))
        elif isinstance(r, list) and len(r) == 4 and all(isinstance(c, int) and not isinstance(c, bool) for c in r):
            x0, y0, x1, y1 = r
            if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
                raise SpecError(f"a box is [x0, y0, x1, y1] with 0 <= x0 < x1 and 0 <= y0 < y1, got {r}",
                                field=where)
            out.append((str(name), (x0, y0, x1, y1), None))
        else:
            raise SpecError(f"expected [x0, y0, x1, y1] or {{polygon: [[x, y], ...]}}, got {r!r}", field=where)
    return out


@register
class RegionOfInterest(Operator):
    """Crop configured regions out of each frame: one record per frame and region, with the crop (resized
    to ``size``), the region's ``roi`` name and ``roi_box`` [x0, y0, x1, y1] in frame coordinates. Pixels of a
    polygon region outside the polygon are black. A region that does not fit the frame: a dead letter."""

    name = "region_of_interest"
    params = {"regions": "name -> [x0, y0, x1, y1] or {polygon: [[x, y], ...]}",
              "per_device": "device -> its own regions (cameras see the scene from different places)",
              "field": "frame field",
              "size": "crop size: N or [w, h] (default: the region's own size)", "output": "crop field (default crop)",
              "keep_frame": "keep the full frame in the output records (default true)"}
    def configure(self, regions: Any = None, per_device: Any = None, field: Any = "frame", size: Any = None,
                  output: Any = "crop", keep_frame: Any = True) -> None:
        if regions is None and per_device is None:
            raise SpecError("give regions (for every device) or per_device (device -> regions), or both",
                            field="regions")
        self.regions = _regions(regions) if regions is not None else []
        if per_device is not None and not isinstance(per_device, dict):
            raise SpecError("expected a mapping device -> regions", field="per_device")
        self.per_device = {}
        for dev, r in (per_device or {}).items():
            try:
                self.per_device[str(dev)] = _regions(r)
            except SpecError as exc:
                sub = (exc.field or "").removeprefix("regions").lstrip(".")
                raise SpecError(exc.problem, field=f"per_device.{dev}" + (f".{sub}" if sub else ""),
                                hint=exc.hint) from None
        self.field, self.output = field_name(field, "field"), field_name(output, "output")
        self.size = None if size is None else frame_size(size, "size")
        if not isinstance(keep_frame, bool):
            raise SpecError("expected true or false", field="keep_frame")
        self.keep_frame = keep_frame
        self.masks: dict[tuple[str, tuple[int, int]], NDArray[Any]] = {}

    def _mask(self, name: str, box: tuple[int, int, int, int], poly: NDArray[Any]) -> NDArray[Any]:
        key = (name, (box[2] - box[0], box[3] - box[1]))
        if key not in self.masks:
            m = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=np.uint8)
            cv2().fillPoly(m, [poly - np.array([box[0], box[1]], dtype=np.int32)], 1)
            self.masks[key] = m.astype(bool)
        return self.masks[key]

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        cv = cv2()
        frames = column_values(batch, self.field)
        devices = batch.device.tolist() if self.per_device else None
        rows, crops, names, boxes, dead, reasons = [], [], [], [], [], []
        for i, f in enumerate(frames):
            if not is_frame(f):
                dead.append(i)
                reasons.append(f"region_of_interest: '{self.field}' is not a frame")
                continue
            h, w = f.shape[:2]
            regions = self.per_device.get(devices[i], self.regions) if devices is not None else self.regions
            for name, (x0, y0, x1, y1), poly in regions:
                if x1 > w or y1 > h:
                    dead.append(i)
                    reasons.append(f"region_of_interest: region '{name}' [{x0}, {y0}, {x1}, {y1}] is outside the "
                                   f"{w}x{h} frame")
                    continue
                crop = f[y0:y1, x0:x1]
                if poly is not None:
                    crop = crop.copy()
                    crop[~self._mask(name, (x0, y0, x1, y1), poly)] = 0
                if self.size is not None and (crop.shape[1], crop.shape[0]) != self.size:
                    crop = cv.resize(crop, self.size, interpolation=cv.INTER_AREA)
                else:
                    crop = np.ascontiguousarray(crop)
                rows.append(i)
                crops.append(crop)
                names.append(name)
                boxes.append([x0, y0, x1, y1])
        if dead:
            self.ctx.dead_letter(batch.take(np.array(dead)), reasons)
        if not rows:
            return Batch.empty()
        idx = np.array(rows)
        out = batch.take(idx)
        if not self.keep_frame:
            out.cols.pop(self.field, None)
        out.set_column(self.output, *object_column(crops))
        out.set_column("roi", np.array(names, dtype=object))
        out.set_column("roi_box", *object_column(boxes))
        return out
