"""Video sources: files, network streams (RTSP, RTMP, HTTP/MJPEG, HLS through OpenCV's FFmpeg backend) and
USB cameras (V4L2), decoded to BGR numpy frames that stay in the process.

:class:`VideoSource` reads one source on its own thread and hands each frame to a callback. A live source
that fails to open, stalls (no frame for ``stall_timeout``) or drops is reopened with jittered exponential
backoff (``backoff`` growing to ``max_backoff``);
a file that ends is looped or finished; unreadable frames are counted and skipped. Everything is counted
(:meth:`VideoSource.stats`) for heartbeats. OpenCV is imported when a source starts, never at import.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from ..backoff import Backoff

__all__ = ["VideoSource", "SourceSpec", "parse_source"]

log = logging.getLogger("edgeloop.video")

Frame = NDArray[np.uint8]
OnFrame = Callable[[Frame, float, int], None]  # frame, timestamp (epoch s), index


class SourceSpec:
    """Where frames come from: ``file`` (a path), ``url`` (a stream), ``usb`` (a V4L2 index or /dev path) or
    ``onvif`` (a camera whose media profile's stream URI is asked for at every open: connectors/onvif.py).

    ``realtime`` paces a file at its frame rate (``fps`` overrides it); ``loop`` restarts a file at its end.
    """

    def __init__(self, *, file: str | None = None, url: str | None = None, usb: int | str | None = None,
                 onvif: dict[str, Any] | None = None, fps: float | None = None, realtime: bool = True, loop: bool = False,
                 stall_timeout: float = 5.0, backoff: float = 0.5, max_backoff: float = 10.0) -> None:
        given = [k for k, v in (("file", file), ("url", url), ("usb", usb), ("onvif", onvif)) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of file, url, usb or onvif")
        self.kind = given[0]
        self.file, self.url, self.usb, self.onvif = file, url, usb, onvif
        self.fps, self.realtime, self.loop = fps, realtime, loop
        self.stall_timeout, self.backoff, self.max_backoff = stall_timeout, backoff, max_backoff

    @property
    def live(self) -> bool:
        return self.kind != "file"

    def describe(self) -> str:
        if self.onvif is not None:
            return f"ONVIF camera {self.onvif['host']}:{self.onvif.get('port', 80)}"
        return {"file": f"file {self.file}", "url": f"stream {self.url}", "usb": f"camera {self.usb}"}[self.kind]


def parse_source(options: dict[str, Any], where: str = "source") -> SourceSpec:
    """A :class:`SourceSpec` from a mapping (device binding options or operator params); ValueError names
    the problem."""
    allowed = {"file", "url", "usb", "onvif", "fps", "realtime", "loop", "stall_timeout", "backoff", "max_backoff"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("fps", "stall_timeout", "backoff", "max_backoff"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ValueError(f"{where}.{key}: expected a positive number, got {v!r}")
    url = options.get("url")
    if url is not None and (not isinstance(url, str) or "://" not in url):
        raise ValueError(f"{where}.url: expected a stream URL such as rtsp://host/path, got {url!r}")
    usb = options.get("usb")
    if usb is not None and not (isinstance(usb, int) and not isinstance(usb, bool) and usb >= 0
                                or isinstance(usb, str) and usb.startswith("/dev/")):
        raise ValueError(f"{where}.usb: expected a camera index (0, 1, ...) or a /dev/video path, got {usb!r}")
    cam = options.get("onvif")
    if cam is not None:
        keys = {"host", "port", "profile", "username_env", "password_env"}
        if not isinstance(cam, dict) or not isinstance(cam.get("host"), str) or set(cam) - keys:
            raise ValueError(f"{where}.onvif: expected {{host, port, profile, username_env, password_env}}, got {cam!r}")
        port = cam.get("port", 80)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"{where}.onvif.port: expected a port number, got {port!r}")
    return SourceSpec(**{k: v for k, v in options.items() if k in allowed})


class VideoSource:
    """Decode one source on a thread; ``on_frame(frame, ts, index)`` for every frame, in order."""

    def __init__(self, name: str, spec: SourceSpec, on_frame: OnFrame, *,
                 on_end: Callable[[], None] | None = None) -> None:
        self.name = name
        self.spec = spec
        self.on_frame = on_frame
        self.on_end = on_end
        self.counters = {"frames": 0, "opens": 0, "reconnects": 0, "open_failures": 0, "stalls": 0,
                         "corrupt_frames": 0, "callback_errors": 0}
        self.connected = False
        self._t0: float | None = None  # the video clock of a file
        self.last_error: str | None = None
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"video-{name}", daemon=True)

    def start(self) -> VideoSource:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {"source": self.spec.describe(), "connected": self.connected, **self.counters,
                "last_error": self.last_error}

    # -- reading --------------------------------------------------------------------------------
    def _open(self) -> Any:
        import cv2

        s = self.spec
        if s.file is not None:
            if not Path(s.file).is_file():
                raise OSError(f"no such video file {s.file}")
            cap = cv2.VideoCapture(str(s.file), cv2.CAP_FFMPEG)
        elif s.url is not None or s.onvif is not None:
            url = str(s.url)
            if s.onvif is not None:  # asked again at every open: a camera may change its URI or come back elsewhere
                from .onvif import stream_uri

                url = stream_uri(s.onvif, timeout=max(5.0, s.stall_timeout))
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(s.stall_timeout * 1000),
                                    # FFmpeg fails a frozen read after ~3 read timeouts: half the stall budget
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(100, int(s.stall_timeout * 500))])
        elif isinstance(s.usb, int):
            cap = cv2.VideoCapture(s.usb, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(str(s.usb), cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"cannot open {s.describe()}")
        return cap

    def _run(self) -> None:
        backoff = Backoff(self.spec.backoff, self.spec.max_backoff)
        index = 0
        try:
            while not self._stop.is_set():
                try:
                    cap = self._open()
                except Exception as exc:  # noqa: BLE001 - cv2.error, OSError: count, back off, retry
                    self.counters["open_failures"] += 1
                    self._error(f"{exc}")
                    if not self.spec.live:
                        return  # a missing or unreadable file does not come back
                    self._stop.wait(backoff.next())
                    continue
                self.counters["opens"] += 1
                if self.counters["opens"] > 1:
                    self.counters["reconnects"] += 1
                self.connected = True
                try:
                    before = index
                    index, ended = self._read(cap, index)
                    if index > before:
                        backoff.reset()  # it delivered: the next outage starts from a short wait
                finally:
                    cap.release()
                    self.connected = False
                if not self.spec.live and (ended == "stopped" or not self.spec.loop or index == before):
                    return  # a file: done (or looping a file that yields nothing)
                if self.spec.live and not self._stop.is_set():
                    self._stop.wait(backoff.next())
        finally:
            self.finished.set()
            if self.on_end is not None:
                self.on_end()

    def _read(self, cap: Any, index: int) -> tuple[int, str]:
        import cv2

        s = self.spec
        fps = s.fps or (cap.get(cv2.CAP_PROP_FPS) or 0.0)
        period = 1.0 / fps if (s.realtime and not s.live and fps > 0) else 0.0
        # a file keeps its own clock: frame i is at start + i / fps (event time), as a camera stamps its frames
        # when it captures them, so windows, rates and "one alert per event" mean what they mean on the live
        # camera whether the file is read as fast as it decodes or paced, and however late a loaded node reads
        video_clock = not s.live and fps > 0
        if video_clock and self._t0 is None:  # anchored once: a looped file's clock keeps running
            self._t0 = time.time() - index / fps
        t0 = self._t0 if video_clock and self._t0 is not None else 0.0
        t_next = time.monotonic()
        failures = 0
        last_frame = time.monotonic()
        while not self._stop.is_set():
            t_read = time.monotonic()
            try:
                ok, frame = cap.read()
            except Exception as exc:  # noqa: BLE001 - cv2.error inside a read: a failed read, not the end
                self._error(f"{s.describe()}: read failed: {exc}")
                ok, frame = False, None
            # a frame that only came after a read timeout is a stale one FFmpeg hands back
            slow = s.live and time.monotonic() - t_read >= 0.45 * s.stall_timeout
            now = t0 + index / fps if video_clock else time.time()
            if not ok or frame is None:
                if not s.live:  # a file: a frame it cannot decode (count, skip) or its end
                    total, pos = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_POS_FRAMES)
                    if total and pos < total and failures < 10:
                        failures += 1  # counted as corrupt only if decoding resumes after them
                        continue
                    return index, "eof"
                quiet = time.monotonic() - last_frame
                if quiet >= s.stall_timeout or failures >= 3:
                    self.counters["stalls"] += 1
                    why = f"no frame for {quiet:.1f} s" if quiet >= s.stall_timeout else \
                        f"the stream ended ({failures + 1} failed reads in a row)"
                    self._error(f"{s.describe()}: {why}: reconnecting")
                    return index, "stalled"
                failures += 1
                continue
            if not s.live:
                self.counters["corrupt_frames"] += failures
            failures = 0
            if not slow:
                last_frame = time.monotonic()
            if frame.ndim != 3 or frame.dtype != np.uint8:
                self.counters["corrupt_frames"] += 1
                continue
            self.counters["frames"] += 1
            try:
                self.on_frame(frame, now, index)
            except Exception:  # noqa: BLE001 - a failing consumer must not stop the camera
                self.counters["callback_errors"] += 1
                log.exception("frame callback of %s failed", self.name)
            index += 1
            if period:
                t_next += period
                delay = t_next - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    t_next = time.monotonic()
        return index, "stopped"

    def _error(self, msg: str) -> None:
        if msg != self.last_error:
            log.warning("%s: %s", self.name, msg)
        self.last_error = msg
