"""Fixtures that start real services: Mosquitto on a free port, a pymodbus TCP server, an RTSP server, Label
Studio and a Prefect server (each once per session where it is slow to start)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_runtime.broker import Mosquitto, free_port
from edge_runtime.testing import ModbusServer, wait_for  # noqa: F401 - re-exported for tests

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A real mosquitto on a free port, stopped after the test (tests may stop/start it)."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: `make deps` (or apt-get install mosquitto) installs it")
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def modbus_server() -> Iterator[ModbusServer]:
    server = ModbusServer().start()
    yield server
    server.stop()


class Collector:
    """A real paho subscriber that keeps what it receives (topic, payload)."""

    def __init__(self, port: int, *topics: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{free_port()}")
        self.ready = threading.Event()

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, p: Any) -> None:
            self.ready.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self.lock:
                self.messages.append((msg.topic, msg.payload))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10), "collector could not subscribe"

    def payloads(self, topic_part: str = "") -> list[Any]:
        import json

        def decode(p: bytes) -> Any:
            try:
                return json.loads(p)
            except ValueError:
                return p.decode(errors="replace")

        with self.lock:
            return [decode(p) for t, p in self.messages if topic_part in t]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(port: int) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{free_port()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """All three reference models trained on tiny SYNTHETIC data, tracked in MLflow (tests/trained.py)."""
    from trained import build_workspace

    return build_workspace(tmp_path_factory.mktemp("workspace"))


SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"


class RtspServer:
    """tests/rtsp_server.py (a live H.264 test pattern over RTSP) run by the system interpreter.

    ``stop()`` kills it, ``start()`` starts it again on the same port (and path), so tests can cut a
    camera and bring it back.
    """

    def __init__(self, port: int | None = None, path: str = "/cam", fps: int = 25) -> None:
        self.port = port or free_port()
        self.path = path
        self.fps = fps
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
             "--fps", str(self.fps)],
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


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    """A real RTSP server (live 640x480 H.264 test pattern at 25 fps) on a free port; ``.url``."""
    import subprocess

    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
                              "gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"],
        capture_output=True, text=True) if Path(SYSTEM_PYTHON).exists() else None
    if check is None or check.returncode != 0:
        pytest.fail("the GStreamer RTSP server is not installed for /usr/bin/python3: `make deps` installs it "
                    "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-rtsp)")
    server = RtspServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Label Studio (flows.labelstudio.LabelStudioServer) started once per test session, in a temp dir.

    ``.url`` and ``.token``; ``.labelling()`` gives a client. Installed by `make label-studio`.
    """
    from flows.labelstudio import LabelStudioServer

    try:
        server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"))
        server.executable()
    except FileNotFoundError as e:
        pytest.fail(str(e))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (``prefect_test_harness``: a temporary server and database) for the whole
    session, its PREFECT_HOME in a temporary folder; the API URL."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield str(PREFECT_API_URL.value())
