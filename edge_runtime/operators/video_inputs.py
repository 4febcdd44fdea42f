"""Video-input operators: pipelines that start from a video file, a network stream or a local camera rather
than from bound devices, and the frame batches the node feeds them (and ``device_input`` of cameras)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..records import DEVICES, Batch
from .base import Operator, SpecError, parse_duration, register
from .params import field_name

__all__ = ["VideoInput", "FileInput", "StreamInput", "UsbCameraInput", "frames_batch"]


class VideoInput(Operator):
    """A pipeline that starts from a video rather than from bound devices: the node runs
    :class:`~edge_runtime.connectors.video_source.VideoSource` for it and feeds the frames to this step, which passes
    them on. ``device`` names the records' device (default: the instance)."""

    source = True
    kind = "file"
    params = {"device": "device id for the frames (default: the pipeline instance)",
              "fps": "pace / expected frame rate", "realtime": "pace a file at its frame rate (default true)",
              "loop": "restart a file at its end", "stall_timeout": "reconnect after this long without a frame",
              "output": "frame field (default frame)"}

    def configure(self, device: Any = None, output: Any = "frame", **source: Any) -> None:
        from ..connectors.video_source import parse_source

        if device is not None and not isinstance(device, str):
            raise SpecError("expected a device id", field="device")
        self.device, self.output = device, field_name(output, "output")
        for key in ("stall_timeout",):
            if key in source:
                source[key] = parse_duration(source[key], key)
        try:
            self.video = parse_source(source, self.name)
        except ValueError as exc:
            raise SpecError(str(exc)) from None

    def process(self, batch: Batch) -> Batch:
        return batch


@register
class FileInput(VideoInput):
    """Frames from a video file (looped or once, paced at its frame rate or as fast as decoded)."""

    name = "file_input"
    params = {"file": "video file path", **VideoInput.params}
    required = ("file",)
    shorthand = "file"


@register
class StreamInput(VideoInput):
    """Frames from a network stream (rtsp://, rtmp://, http(s):// MJPEG or HLS), reconnecting with backoff."""

    name = "stream_input"
    params = {"url": "stream URL", "backoff": "first reconnect wait (s)", "max_backoff": "longest wait (s)",
              **VideoInput.params}
    required = ("url",)
    shorthand = "url"


@register
class UsbCameraInput(VideoInput):
    """Frames from a local camera through V4L2 (``usb``: index or /dev/videoN)."""

    name = "usb_camera_input"
    params = {"usb": "camera index or /dev/video path", **VideoInput.params}
    required = ("usb",)
    shorthand = "usb"


def frames_batch(device: str, product: str | None, frames: list[tuple[NDArray[Any], float]],
                 field: str = "frame", index: list[int] | None = None) -> Batch:
    """A batch of frame records (no copies of the pixels); ``index`` (the frame's position in its source)
    goes into ``frame_index``."""
    n = len(frames)
    data = np.empty(n, dtype=object)
    data[:] = [f for f, _ in frames]
    b = Batch(np.full(n, DEVICES[device], dtype=np.int64), np.full(n, product, dtype=object),
              np.array([t for _, t in frames], dtype=np.float64), {})
    b.set_column(field, data)
    if index is not None:
        b.set_column("frame_index", np.asarray(index, dtype=np.int64))
    return b
