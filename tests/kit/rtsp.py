"""tests/kit/rtsp_server.py run by the system interpreter: a real RTSP server the video tests cut and bring back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.ports import free_port

__all__ = ["RtspServer", "SYSTEM_PYTHON"]

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"


class RtspServer:
    """tests/kit/rtsp_server.py (a live H.264 test pattern over RTSP) run by the system interpreter.

    ``stop()`` kills it, ``start()`` starts it again on the same port (and path), so tests can cut a
    camera and bring it back.
    """

    def __init__(self, port: int | None = None, path: str = "/cam", fps: int = 25, frames: str | None = None) -> None:
        self.port = port or free_port()
        self.path = path
        self.fps = fps
        self.frames = frames  # a printf pattern of JPEG frames to play (a real video) instead of the test pattern
        self.url = f"rtsp://127.0.0.1:{self.port}{path}"
        self.proc: Any = None

    def start(self, timeout: float = 15.0) -> RtspServer:
        import subprocess
        import tempfile

        assert self.proc is None, "already running"
        # stderr to a file, not a pipe nobody drains (GStreamer warnings must never block the server)
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--port", str(self.port), "--path", self.path,
             "--fps", str(self.fps), *(["--frames", self.frames] if self.frames else [])],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        # a thread reads the first line so the wait below has a deadline (readline alone would block)
        first_line: list[str] = []
        got = threading.Event()

        def read_first() -> None:
            first_line.append(proc.stdout.readline())
            got.set()

        threading.Thread(target=read_first, daemon=True).start()
        got.wait(timeout)  # "ready", EOF (it died) or the deadline, whichever comes first
        if first_line and first_line[0].strip() == "ready":
            return self
        self.proc = None
        proc.kill()
        proc.wait(5)
        self.stderr.seek(0)
        err = self.stderr.read()
        pytest.fail(f"rtsp server on port {self.port} did not get ready in {timeout} s "
                    f"(exit {proc.returncode}): {err.strip()[-2000:]}")

    def stop(self) -> None:
        import subprocess

        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        self.stderr.close()
