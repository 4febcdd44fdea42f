"""Multimedia operators: frames are BGR uint8 numpy arrays held in record values; only encoded results
(JPEG bytes, MP4 files) leave the node. OpenCV is imported on first use.

Video sources (``file_input``, ``stream_input``, ``usb_camera_input``) are in :mod:`.video_inputs`; cameras
bound to a product (connector ``video``) feed ``device_input`` the same frames. The H.264 writer
``file_output`` uses is in :mod:`.h264`; ``region_of_interest`` (crops of boxes and polygons) in :mod:`.regions`.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..records import DEVICES, Batch
from .base import Operator, SpecError, parse_duration, register
from .h264 import H264, H264Writer, h264_available
from .images import column_values, cv2, is_frame, jpeg, object_column
from .params import field_name, positive_int
from .state import by_code, by_device, decode, encode

log = logging.getLogger("edge_runtime.operators.media")

__all__ = ["Decode", "Encode", "Resolution", "FrameRate", "FrameStack", "FileOutput"]


class _PerFrame(Operator):
    """Apply ``convert(value, row)`` to ``field`` of every record; ``None`` or an exception: dead letter."""

    field = "frame"
    output = "frame"

    def convert(self, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        values = column_values(batch, self.field)
        out: list[Any] = []
        ok, reasons = np.ones(len(batch), dtype=bool), {}
        for i, v in enumerate(values):
            if v is None:
                ok[i], reasons[i] = False, f"{self.name}: missing field '{self.field}'"
                out.append(None)
                continue
            try:
                out.append(self.convert(v))
            except (ValueError, TypeError) as exc:
                ok[i], reasons[i] = False, f"{self.name}: {exc}"
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - cv2.error and friends: the record, not the pipeline
                ok[i], reasons[i] = False, f"{self.name}: {type(exc).__name__}: {str(exc).strip()[:200]}"
                out.append(None)
        res = Batch(batch.codes, batch.product, batch.ts, dict(batch.cols))
        res.set_column(self.output, *object_column(out))
        if not ok.all():
            bad = np.flatnonzero(~ok)
            self.ctx.dead_letter(res.take(bad), [reasons[i] for i in bad.tolist()])
            res = res.take(ok)
        return res



@register
class Decode(_PerFrame):
    """Encoded image bytes (JPEG, PNG, ...) in ``field`` -> a frame in ``output``."""

    name = "decode"
    params = {"field": "field with encoded bytes (default: image)", "output": "frame field (default: frame)"}

    def configure(self, field: Any = "image", output: Any = "frame") -> None:
        self.field, self.output = field_name(field, "field"), field_name(output, "output")

    def convert(self, value: Any) -> Any:
        if isinstance(value, str):
            import base64
            import binascii

            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("a text value must be base64-encoded image bytes") from None
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected encoded image bytes, got {type(value).__name__}")
        cv = cv2()
        img = cv.imdecode(np.frombuffer(value, dtype=np.uint8), cv.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"not a decodable image ({len(value)} bytes)")
        return img


@register
class Encode(_PerFrame):
    """A frame -> encoded bytes: ``jpeg`` (quality) or ``png``."""

    name = "encode"
    params = {"field": "frame field (default: frame)", "format": "jpeg or png", "quality": "JPEG quality 1-100",
              "optimize": "JPEG: optimal Huffman tables and a progressive scan (~1/3 smaller, 3x encode time; default false)",
              "output": "bytes field (default: <field>_<format>)"}

    def configure(self, field: Any = "frame", format: Any = "jpeg", quality: Any = 85,  # noqa: A002
                  optimize: Any = False, output: Any = None) -> None:
        self.field = field_name(field, "field")
        if format not in ("jpeg", "png"):
            raise SpecError(f"expected jpeg or png, got {format!r}", field="format",
                            hint="video (H.264/MP4) is written by file_output")
        self.format, self.quality = format, positive_int(quality, "quality", 100)
        if not isinstance(optimize, bool):
            raise SpecError(f"expected true or false, got {optimize!r}", field="optimize")
        self.optimize = optimize
        self.output = field_name(output or f"{self.field}_{format}", "output")

    def convert(self, value: Any) -> Any:
        if not is_frame(value):
            raise TypeError("expected a frame (uint8 HxWx3 array)")
        if self.format == "jpeg":
            return jpeg(value, self.quality, optimize=self.optimize)
        ok, buf = cv2().imencode(".png", value)
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()


@register
class Resolution(_PerFrame):
    """Resize frames to ``width`` x ``height`` (area interpolation when shrinking)."""

    name = "resolution"
    params = {"width": "pixels", "height": "pixels", "field": "frame field (default: frame)",
              "output": "default: the same field"}
    required = ("width", "height")

    def configure(self, width: Any, height: Any, field: Any = "frame", output: Any = None) -> None:
        self.size = (positive_int(width, "width"), positive_int(height, "height"))
        self.field = field_name(field, "field")
        self.output = field_name(output or self.field, "output")

    def convert(self, value: Any) -> Any:
        if not is_frame(value):
            raise TypeError("expected a frame (uint8 HxWx3 array)")
        cv = cv2()
        shrink = value.shape[1] * value.shape[0] > self.size[0] * self.size[1]
        return cv.resize(value, self.size, interpolation=cv.INTER_AREA if shrink else cv.INTER_LINEAR)


@register
class FrameRate(Operator):
    """Keep at most ``fps`` frames per second of event time, per device."""

    name = "frame_rate"
    params = {"fps": "frames per second to keep"}
    required = ("fps",)
    shorthand = "fps"

    def configure(self, fps: Any) -> None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
            raise SpecError(f"expected a positive number, got {fps!r}", field="fps")
        self.period = 1.0 / fps
        self.next: dict[int, float] = {}

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        keep = np.zeros(len(batch), dtype=bool)
        for i, (code, ts) in enumerate(zip(batch.codes.tolist(), batch.ts.tolist())):
            due = self.next.get(code)
            if due is None or ts >= due - 1e-6:
                keep[i] = True
                self.next[code] = (ts if due is None or ts - due > self.period else due) + self.period
        return batch if keep.all() else batch.take(keep)

    def snapshot(self) -> dict[str, Any]:
        """Per device id: the event time from which its next frame is kept."""
        return {"next": by_device(self.next)}

    def restore(self, state: dict[str, Any]) -> None:
        self.next = {c: float(t) for c, t in by_code(state["next"]).items()}


@register
class FrameStack(Operator):
    """The last ``frames`` values of ``field`` per device and region, oldest first, as one ``(N, ...)``
    array in ``output``; records go on once N values are there (a sliding window, step 1)."""

    name = "frame_stack"
    params = {"frames": "how many", "field": "what to stack (default: crop)", "output": "default: clip",
              "max_gap": "restart the stack after a gap longer than this (event time, default 1s)"}
    required = ("frames",)
    shorthand = "frames"

    def configure(self, frames: Any, field: Any = "crop", output: Any = "clip", max_gap: Any = "1s") -> None:
        self.n = positive_int(frames, "frames", 256)
        self.field, self.output = field_name(field, "field"), field_name(output, "output")
        self.max_gap = parse_duration(max_gap, "max_gap")
        self.buffers: dict[tuple[int, Any], tuple[deque[NDArray[Any]], list[float]]] = {}

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        values = column_values(batch, self.field)
        rois = column_values(batch, "roi")
        keep, clips, bad = [], [], []
        for i, (code, ts, v) in enumerate(zip(batch.codes.tolist(), batch.ts.tolist(), values)):
            if not isinstance(v, np.ndarray):
                bad.append(i)
                continue
            buf, last = self.buffers.setdefault((code, rois[i]), (deque(maxlen=self.n), [ts]))
            if ts - last[0] > self.max_gap or (buf and buf[-1].shape != v.shape):
                buf.clear()
            last[0] = ts
            buf.append(v)
            if len(buf) == self.n:
                keep.append(i)
                clips.append(np.stack(buf))
        if bad:
            self.ctx.dead_letter(batch.take(np.array(bad)), f"frame_stack: '{self.field}' is not an array")
        if not keep:
            return Batch.empty()
        out = batch.take(np.array(keep))
        out.set_column(self.output, *object_column(clips))
        return out

    def snapshot(self) -> dict[str, Any]:
        """Per device id and region: the values held (up to ``frames`` arrays, oldest first, as lists) and the
        event time of the last one."""
        names = DEVICES.names
        return {"buffers": [{"device": names[code], "roi": encode(roi), "last": last[0],
                             "values": [encode(v) for v in buf]}
                            for (code, roi), (buf, last) in self.buffers.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.buffers = {}
        for b in state["buffers"]:
            buf: deque[NDArray[Any]] = deque((decode(v) for v in b["values"]), maxlen=self.n)
            self.buffers[(DEVICES[b["device"]], decode(b["roi"]))] = (buf, [float(b["last"])])


@register
class FileOutput(Operator):
    """Write frames per device: a video file (``path`` ending in .mp4/.mkv/.avi: encode + mux) or one image
    per frame (a folder path: JPEG). ``{device}`` in the path is the record's device. ``codec: h264`` (the
    default for .mp4/.mkv) writes H.264 through PyAV where it is installed and falls back to MPEG-4 part 2
    (``mp4v``, OpenCV) with a warning where it is not; any other fourcc goes to OpenCV's writer."""

    name = "file_output"
    params = {"path": "file (.mp4/.mkv/.avi) or folder, {device} allowed", "field": "frame field (default frame)",
              "fps": "frame rate written into video files (default 10)",
              "codec": "h264 (default; PyAV/libx264, else mp4v) or an OpenCV fourcc (mp4v, MJPG, ...)",
              "crf": "H.264 quality, 0-51, lower is better (default 23)"}
    required = ("path",)
    shorthand = "path"

    def configure(self, path: Any, field: Any = "frame", fps: Any = 10, codec: Any = "h264", crf: Any = 23) -> None:
        if not isinstance(path, str) or not path:
            raise SpecError("expected a path", field="path")
        self.path, self.field = path, field_name(field, "field")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
            raise SpecError(f"expected a positive number, got {fps!r}", field="fps")
        if not isinstance(codec, str) or (codec.lower() not in H264 and len(codec) != 4):
            raise SpecError(f"expected h264 or a four-character code such as mp4v, got {codec!r}", field="codec")
        if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
            raise SpecError(f"expected an integer 0-51, got {crf!r}", field="crf")
        self.fps, self.codec, self.crf = float(fps), codec, crf
        suffix = Path(path).suffix.lower()
        self.video = suffix in (".mp4", ".avi", ".mkv")
        if self.video and codec.lower() in H264 and suffix == ".avi":
            raise SpecError("H.264 goes into .mp4 or .mkv files", field="codec", hint="use codec: MJPG for .avi")
        self.writers: dict[str, Any] = {}
        self.written = 0
        self.fallback_warned = False

    def _target(self, device: str) -> Path:
        return Path(self.path.replace("{device}", device))

    def _writer(self, target: Path, size: tuple[int, int]) -> Any:
        cv = cv2()
        codec = self.codec
        if codec.lower() in H264:
            if h264_available():
                return H264Writer(target, self.fps, size, crf=self.crf)
            if not self.fallback_warned:
                log.warning("file_output %s: no H.264 encoder on this node (pip install 'edgeloop[video]' for "
                            "PyAV); writing MPEG-4 part 2 (mp4v)", self.ctx.step)
                self.fallback_warned = True
            codec = "mp4v"
        return cv.VideoWriter(str(target), cv.VideoWriter.fourcc(*codec), self.fps, size)

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        devices = batch.device.tolist()
        for i, f in enumerate(column_values(batch, self.field)):
            if not is_frame(f):
                self.ctx.dead_letter(batch.take(np.array([i])), f"file_output: '{self.field}' is not a frame")
                continue
            target = self._target(devices[i])
            if self.video:
                w = self.writers.get(devices[i])
                if w is None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        w = self._writer(target, f.shape[1::-1])
                    except Exception as exc:  # noqa: BLE001 - PyAV/FFmpeg errors: the record says why
                        self.ctx.dead_letter(batch.take(np.array([i])), f"file_output: cannot open {target}: {exc}")
                        continue
                    if not w.isOpened():
                        self.ctx.dead_letter(batch.take(np.array([i])),
                                             f"file_output: no {self.codec} encoder for {target} on this node")
                        continue
                    self.writers[devices[i]] = w
                try:
                    w.write(f)
                except ValueError as exc:
                    self.ctx.dead_letter(batch.take(np.array([i])), f"file_output: {exc}")
                    continue
            else:
                target.mkdir(parents=True, exist_ok=True)
                (target / f"{int(batch.ts[i] * 1000)}-{uuid.uuid4().hex[:6]}.jpg").write_bytes(jpeg(f))
            self.written += 1
        return batch

    def flush(self) -> Batch:
        self.close()
        return Batch.empty()

    def close(self) -> None:
        """Finish the video files being written (a restart begins new ones)."""
        for w in self.writers.values():
            w.release()
        self.writers.clear()
