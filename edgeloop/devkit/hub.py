"""``edgeloop hub serve`` and ``edgeloop node run`` as child processes: for the demo, the tests and the benchmarks.

``stop()`` then ``start()`` keeps the port and the database (a hub that goes away and comes back).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from edge_runtime.hubclient import HubClient
from edge_runtime.ports import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """The environment for EdgeLoop child processes: this checkout importable, output unbuffered."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class HubProcess:
    def __init__(self, workdir: Path, *, admin_token: str, db_url: str | None = None,
                 broker_port: int | None = None, heartbeat: float = 1.0) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = admin_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url or f"sqlite:///{workdir}/hub.db"
        self.broker_port = broker_port
        self.heartbeat = heartbeat
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "hub.log"

    def serve_args(self) -> list[str]:
        args = ["hub", "serve", "--db", self.db_url, "--data", str(self.dir), "--port", str(self.port),
                "--admin-token", self.admin_token, "--heartbeat", str(self.heartbeat),
                "--drift-every", str(self.heartbeat)]  # a drift point per heartbeat: demos and tests are short
        return args + (["--broker", f"127.0.0.1:{self.broker_port}"] if self.broker_port else [])

    def command(self) -> list[str]:
        return [sys.executable, "-m", "edgeloop", *self.serve_args()]

    def start(self, timeout: float = 60) -> HubProcess:
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))  # noqa: SIM115
        if not wait_port(self.port, timeout=timeout):
            self.stop()
            raise RuntimeError(f"hub did not start: {self.log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            wait_port(self.port, up=False, timeout=10)

    def kill(self) -> None:
        """SIGKILL: the hub dies mid-request, mid-transaction (a crash, not a shutdown)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            wait_port(self.port, up=False, timeout=10)

    def admin(self) -> HubClient:
        return HubClient(self.url, self.admin_token)

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class NodeProcess:
    """``edgeloop node run`` as a subprocess (SIGTERM or SIGKILL)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".log")

    def start(self) -> NodeProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeloop", "node", "run", "--config",
                                      str(self.config)], cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))  # noqa: SIM115
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
