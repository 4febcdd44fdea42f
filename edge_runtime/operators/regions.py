"""The region operator: ``region_of_interest`` crops configured boxes and polygons out of frames (one record
per frame and region), each camera with its own regions where it sees the scene from elsewhere."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..records import Batch
from .base import Operator, SpecError, register
from .images import column_values, cv2, is_frame, object_column
from .params import field_name, frame_size

__all__ = ["RegionOfInterest"]


Box = tuple[int, int, int, int]
Region = tuple[str, "Area", NDArray[Any] | None]
log = logging.getLogger("edgeloop.operators")


def _is_int(c: Any) -> bool:
    return isinstance(c, int) and not isinstance(c, bool)


def _is_number(c: Any) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)


class Area:
    """A box in whole pixels, or in fractions of the frame (any camera's size): resolved per frame size."""

    __slots__ = ("coords", "fraction")

    def __init__(self, coords: tuple[float, float, float, float], fraction: bool) -> None:
        self.coords, self.fraction = coords, fraction

    @classmethod
    def parse(cls, r: Any, where: str, *, corners: bool = True) -> Area:
        """``[x0, y0, x1, y1]`` (``corners``) or ``[x, y, width, height]``: whole numbers are pixels, a number with a
        decimal point makes the box fractions of the frame (0..1); ``{pixels: [...]}`` and ``{fraction: [...]}``
        say it explicitly."""
        shape = "[x0, y0, x1, y1]" if corners else "[x, y, width, height]"
        explicit = None
        if isinstance(r, dict) and len(r) == 1 and next(iter(r)) in ("pixels", "fraction"):
            explicit, r = next(iter(r.items()))
            where = f"{where}.{explicit}"
        if not (isinstance(r, list) and len(r) == 4 and all(_is_number(c) for c in r)):
            raise SpecError(f"expected {shape} in pixels or fractions of the frame, got {r!r}", field=where)
        fraction = explicit == "fraction" or (explicit is None and not all(_is_int(c) for c in r))
        a, b, c, d = (float(x) for x in r)
        x1, y1 = (c, d) if corners else (a + c, b + d)
        if fraction:
            x1, y1 = min(x1, 1.0) if x1 <= 1 + 1e-9 else x1, min(y1, 1.0) if y1 <= 1 + 1e-9 else y1  # 0.7 + 0.3
            if not (0 <= a < x1 <= 1 and 0 <= b < y1 <= 1):
                raise SpecError(f"a box in fractions of the frame is {shape} with every edge within 0..1 and a size "
                                f"above 0, got {r}", field=where)
        elif not all(_is_int(v) for v in r) or a < 0 or b < 0 or x1 <= a or y1 <= b:
            raise SpecError(f"a box in pixels is {shape} in whole pixels >= 0 with a size above 0, got {r}",
                            field=where)
        return cls((a, b, x1, y1), fraction)

    def box(self, w: int, h: int) -> Box:
        """[x0, y0, x1, y1] in pixels of a w x h frame (fractions rounded outwards; pixels as given)."""
        x0, y0, x1, y1 = self.coords
        if self.fraction:
            return (int(math.floor(x0 * w)), int(math.floor(y0 * h)), min(w, int(math.ceil(x1 * w))),
                    min(h, int(math.ceil(y1 * h))))
        return int(x0), int(y0), int(x1), int(y1)

    def shown(self) -> list[float] | list[int]:
        return list(self.coords) if self.fraction else [int(c) for c in self.coords]


def _regions(regions: Any) -> list[Region]:
    """``{name: box}`` or ``{name: {polygon: [[x, y], ...]}}`` -> (name, area, polygon in the area's units)."""
    if not isinstance(regions, dict) or not regions:
        raise SpecError("expected a mapping of region name -> [x0, y0, x1, y1] or {polygon: [[x, y], ...]}",
                        field="regions")
    out: list[Region] = []
    for name, r in regions.items():
        where = f"regions.{name}"
        if isinstance(r, dict) and set(r) == {"polygon"}:
            pts = r["polygon"]
            if not (isinstance(pts, list) and len(pts) >= 3 and all(
                    isinstance(p, list) and len(p) == 2 and all(_is_number(c) and c >= 0 for c in p) for p in pts)):
                raise SpecError("a polygon is a list of at least 3 [x, y] points (whole pixels >= 0, or fractions "
                                "of the frame 0..1)", field=f"{where}.polygon")
            fraction = not all(_is_int(c) for p in pts for c in p)
            poly = np.array(pts, dtype=np.float64)
            if fraction and poly.max() > 1:
                raise SpecError("a polygon in fractions of the frame has every point within 0..1",
                                field=f"{where}.polygon")
            hull = [float(poly[:, 0].min()), float(poly[:, 1].min()), float(poly[:, 0].max()), float(poly[:, 1].max())]
            if not fraction:
                hull[2], hull[3] = hull[2] + 1, hull[3] + 1
            elif hull[2] <= hull[0] or hull[3] <= hull[1]:
                raise SpecError("a polygon encloses an area", field=f"{where}.polygon")
            out.append((str(name), Area((hull[0], hull[1], hull[2], hull[3]), fraction), poly))
        else:
            out.append((str(name), Area.parse(r, where), None))
    return out


@register
class RegionOfInterest(Operator):
    """Crop configured regions out of each frame: one record per frame and region, with the crop (resized
    to ``size``), the region's ``roi`` name and ``roi_box`` [x0, y0, x1, y1] in frame pixels. Regions are in
    fractions of the frame (``[0.4, 0.3, 0.7, 0.65]``: any camera) or in whole pixels (``[256, 136, 448, 323]``,
    or ``{pixels: [...]}``). Pixels of a polygon region outside the polygon are black. A pixel region partly
    outside a camera's frames is clipped to them, one wholly outside is refused (its frames dead letters naming
    the region, the camera and the size), each said once in the node's log when the camera's frames arrive."""

    name = "region_of_interest"
    params = {"regions": "name -> [x0, y0, x1, y1] or {polygon: [[x, y], ...]}, in fractions of the frame (0..1) "
                         "or whole pixels",
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
        self.fitted: dict[tuple[str | None, int, int], list[tuple[str, Box | None, NDArray[Any] | None, str]]] = {}

    def _fit(self, device: str | None, w: int, h: int) -> list[tuple[str, Box | None, NDArray[Any] | None, str]]:
        """The regions of ``device`` resolved for its w x h frames, once per camera and size: fractions scaled,
        a pixel box partly outside clipped to the frame, one wholly outside refused; each said once in the log
        with the camera and the size (and a refused one in every dead letter it causes)."""
        key = (device, w, h)
        fitted = self.fitted.get(key)
        if fitted is not None:
            return fitted
        regions = self.per_device.get(device or "", self.regions) if self.per_device else self.regions
        camera = f"camera {device}" if device is not None else "the camera"
        fitted = []
        for name, area, poly in regions:
            x0, y0, x1, y1 = area.box(w, h)
            if x0 >= w or y0 >= h:
                reason = (f"region_of_interest: region '{name}' {area.shown()} lies outside {camera}'s {w}x{h} "
                          f"frames")
                log.error("%s (pipeline step %s): its frames are dead letters for this region", reason, self.ctx.step)
                fitted.append((name, None, None, reason))
                continue
            if x1 > w or y1 > h:
                log.warning("region_of_interest: region '%s' %s clipped to %s's %dx%d frames: [%d, %d, %d, %d]",
                            name, area.shown(), camera, w, h, x0, y0, min(x1, w), min(y1, h))
                x1, y1 = min(x1, w), min(y1, h)
            mask = None
            if poly is not None:
                pts = np.rint(poly * np.array([w, h])) if area.fraction else poly
                m = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
                cv2().fillPoly(m, [pts.astype(np.int32) - np.array([x0, y0], dtype=np.int32)], 1)
                mask = m.astype(bool)
            fitted.append((name, (x0, y0, x1, y1), mask, ""))
        if len(self.fitted) > 1024:  # sizes and cameras come from outside: bounded
            self.fitted.clear()
        self.fitted[key] = fitted
        return fitted

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        cv = cv2()
        frames = column_values(batch, self.field)
        devices = batch.device.tolist()
        rows, crops, names, boxes, dead, reasons = [], [], [], [], [], []
        for i, f in enumerate(frames):
            if not is_frame(f):
                dead.append(i)
                reasons.append(f"region_of_interest: '{self.field}' is not a frame")
                continue
            h, w = f.shape[:2]
            for name, box, mask, refused in self._fit(devices[i], w, h):
                if box is None:
                    dead.append(i)
                    reasons.append(refused)
                    continue
                x0, y0, x1, y1 = box
                crop = f[y0:y1, x0:x1]
                if mask is not None:
                    crop = crop.copy()
                    crop[~mask] = 0
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
