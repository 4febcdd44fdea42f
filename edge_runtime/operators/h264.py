"""H.264 video files through PyAV (libx264): what ``file_output`` writes where PyAV is installed."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["H264", "H264Writer", "h264_available"]

H264 = ("h264", "avc1")


@functools.cache
def h264_available() -> bool:
    """True when PyAV with an H.264 encoder (libx264) is installed (``pip install edgeloop[video]``)."""
    try:
        import av

        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # noqa: BLE001 - not installed, or built without libx264
        return False


class H264Writer:
    """Frames -> an H.264 MP4 through PyAV (libx264, yuv420p: plays in browsers). OpenCV's wheels cannot
    write H.264 (no encoder in their FFmpeg); ``write``/``release`` mirror cv2.VideoWriter."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], *, crf: int = 23,
                 preset: str = "veryfast") -> None:
        import fractions

        import av

        self.container = av.open(str(path), mode="w")
        rate = fractions.Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate,
                                                options={"crf": str(crf), "preset": preset})
        self.stream.width, self.stream.height = size[0] - size[0] % 2, size[1] - size[1] % 2  # yuv420p: even
        self.stream.pix_fmt = "yuv420p"
        self.size = size

    def isOpened(self) -> bool:  # noqa: N802 - cv2.VideoWriter's name
        return True

    def write(self, frame: NDArray[Any]) -> None:
        import av

        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the file {self.size[0]}x{self.size[1]}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:self.stream.height, :self.stream.width]),
                                        format="bgr24")
        for packet in self.stream.encode(vf):
            self.container.mux(packet)

    def release(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()

