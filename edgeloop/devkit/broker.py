"""Start a local MQTT broker: Mosquitto on a free port (tests, demo, benchmarks).

The configuration says how queues are set: Mosquitto's default
``max_queued_messages 1000`` silently drops QoS 0/1 messages for a subscriber
that falls behind, so it is raised here (and loss is always counted by the
tests and benchmarks, never assumed).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from edge_runtime.ports import free_port, wait_port

__all__ = ["CONFIG", "Mosquitto"]

CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
# a subscriber that falls behind queues up to this many messages (default 1000 silently drops)
max_queued_messages {max_queued}
max_queued_bytes 0
max_inflight_messages 1000
# small MQTT packets (a PUBACK, then an uplink ack) must not wait 40 ms for a delayed TCP ACK
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
"""


class Mosquitto:
    """A mosquitto process on 127.0.0.1:port; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, port: int | None = None, *, max_queued: int = 1_000_000, extra: str = "") -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.exe = exe
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="edgeloop-mosquitto-"))
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(CONFIG.format(port=self.port, max_queued=max_queued) + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "log.txt", "ab"))  # noqa: SIM115
        if not wait_port(self.port, timeout=timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not open port {self.port}: {(self.dir / 'log.txt').read_text()[-500:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            wait_port(self.port, up=False, timeout=5)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
