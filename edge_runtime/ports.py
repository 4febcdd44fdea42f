"""Free ports for servers started next, and waiting on a port: for launchers of local services (a broker, a
hub, Label Studio) and the servers the tests and benchmarks start."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

__all__ = ["free_port", "wait_port"]

_PICK = random.Random()  # noqa: S311 - not secret; its own, so tests that seed the global random do not repeat picks


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free port for a server started next (TCP, or ``socket.SOCK_DGRAM`` for UDP), picked below the
    kernel's ephemeral range: the OS gives the ephemeral ports to outgoing connections (and RTP streams), so
    one of those could take a port picked there before its server binds it."""
    lo, _hi = _ephemeral_range()
    if lo > 12000:
        for _ in range(50):
            port = _PICK.randrange(10000, lo)
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0, up: bool = True) -> bool:
    """Wait until a TCP port accepts (up=True) or refuses (up=False) connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                if up:
                    return True
        except OSError:
            if not up:
                return True
        time.sleep(0.02)
    return False
