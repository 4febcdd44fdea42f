"""Desensitisation before upload, per pipeline (the pipeline spec's ``uplink`` key)::

    uplink:
      drop: [operator_name]          # fields removed from the record's values
      hash: [plate, badge]           # fields replaced by sha256(salt + value), hex (linkable, not readable)
      salt: "per-deployment secret"  # optional
      blur: [[0, 0, 1.0, 0.25]]      # areas x, y, width, height pixelated in every image value: in fractions
                                     # of the image (a number with a point: any camera) or whole pixels

Applied on the node, before anything enters the outbox: what leaves the node is
already desensitised.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .operators.base import SpecError
from .operators.regions import Area

__all__ = ["Desensitiser", "check_uplink_spec"]


def check_uplink_spec(spec: Any) -> dict[str, Any]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise SpecError("expected a mapping with drop, hash, salt, blur", field="uplink")
    for key in spec:
        if key not in ("drop", "hash", "salt", "blur"):
            raise SpecError(f"unknown key {key!r}", field=f"uplink.{key}", hint="uplink has: drop, hash, salt, blur")
    for key in ("drop", "hash"):
        v = spec.get(key, [])
        if not isinstance(v, list) or not all(isinstance(f, str) and f for f in v):
            raise SpecError("expected a list of field names", field=f"uplink.{key}")
    if not isinstance(spec.get("salt", ""), str):
        raise SpecError("expected a text", field="uplink.salt")
    blur = spec.get("blur", [])
    if not isinstance(blur, list):
        raise SpecError("expected a list of areas [x, y, width, height]", field="uplink.blur")
    for i, r in enumerate(blur):
        Area.parse(r, f"uplink.blur[{i}]", corners=False)
    return spec


class Desensitiser:
    def __init__(self, spec: dict[str, Any] | None) -> None:
        spec = check_uplink_spec(spec)
        self.drop = tuple(spec.get("drop", ()))
        self.hash = tuple(spec.get("hash", ()))
        self.salt = spec.get("salt", "").encode()
        self.blur = [Area.parse(r, f"uplink.blur[{i}]", corners=False) for i, r in enumerate(spec.get("blur", ()))]
        self.active = bool(self.drop or self.hash or self.blur)

    def values(self, values: dict[str, Any]) -> dict[str, Any]:
        if not self.active:
            return values
        out = {k: v for k, v in values.items() if k not in self.drop}
        for k in self.hash:
            if k in out and out[k] is not None:
                out[k] = hashlib.sha256(self.salt + str(out[k]).encode()).hexdigest()
        if self.blur:
            for k, v in out.items():
                if isinstance(v, np.ndarray) and v.ndim >= 2:
                    out[k] = self.blur_image(v)
        return out

    def item(self, item: dict[str, Any]) -> dict[str, Any]:
        rec = item.get("record")
        if self.active and isinstance(rec, dict) and isinstance(rec.get("values"), dict):
            item = {**item, "record": {**rec, "values": self.values(rec["values"])}}
        return item

    def blur_image(self, img: np.ndarray, block: int = 16) -> np.ndarray:
        """Pixelate each region (block means): irreversible, and cheap without OpenCV. A clip (frames, height,
        width, channels) has each of its frames pixelated."""
        if img.ndim == 4:
            return np.stack([self.blur_image(f, block) for f in img])
        out = img.copy()
        h, w = img.shape[:2]
        for area in self.blur:
            x0, y0, x1, y1 = area.box(w, h)  # fractions of this image's size; pixels clipped to it
            x0, y0, x1, y1 = min(x0, w), min(y0, h), min(x1, w), min(y1, h)
            for by in range(y0, y1, block):
                for bx in range(x0, x1, block):
                    cell = out[by:min(by + block, y1), bx:min(bx + block, x1)]
                    cell[...] = cell.reshape(-1, *cell.shape[2:]).mean(axis=0).astype(img.dtype)
        return out

    def jpeg(self, data: bytes, quality: int = 85) -> bytes:
        """An encoded image with the blur regions applied (decoded and re-encoded only when there are any)."""
        if not self.blur:
            return data
        import cv2

        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("not a decodable image: refusing to upload it unblurred")
        from .operators.images import jpeg

        return jpeg(self.blur_image(img), quality, optimize=True)
