"""``edgeloop up`` / ``edgeloop down``: the local stack for a person, on one machine.

Starts, each as a detached process with its log under ``var/up/``: an MQTT broker (Mosquitto, unless
one answers on the configured address), the hub (``edgeloop hub serve`` with SQLite), a Prefect server,
a process serving the agile loop's deployments (``python -m flows.serve``), the MLflow UI on the
workspace's tracking store, and Label Studio. Prints the URLs and the tokens; ``var/up/stack.json``
holds the process ids, ``edgeloop down`` stops them. A service already running (per stack.json) is left
alone, so ``up`` can be run again after one part failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PORTS = {"broker": 1883, "hub": 8080, "prefect": 4200, "mlflow": 5000, "label_studio": 8081}


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.dir = self.root / "var" / "up"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / "stack.json"
        self.state: dict[str, Any] = json.loads(self.file.read_text()) if self.file.exists() else {"services": {}}

    def save(self) -> None:
        """Written owner-only: it holds the hub's admin token and Label Studio's password."""
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state, f, indent=2)

    def running(self, name: str) -> bool:
        s = self.state["services"].get(name)
        return bool(s and s.get("pid") and _alive(s["pid"]))

    def spawn(self, name: str, cmd: list[str], *, port: int | None, env: dict[str, str] | None = None,
              url: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
        if self.running(name):
            return self.state["services"][name]
        log = self.dir / f"{name}.log"
        proc = subprocess.Popen(cmd, cwd=self.root, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        while port is not None and not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f} s; see {log}")
            time.sleep(0.2)
        entry = {"pid": proc.pid, "port": port, "url": url, "log": str(log)}
        self.state["services"][name] = entry
        self.save()
        return entry

    def stop_all(self, timeout: float = 20.0) -> list[str]:
        stopped = []
        for name, s in reversed(list(self.state["services"].items())):
            pid = s.get("pid")
            if pid and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                stopped.append(name)
        self.state["services"] = {}
        self.save()
        return stopped


def up(root: Path, *, say: Any = print) -> dict[str, Any]:
    """Start what is not running; returns {service: {url, pid, ...}} and the tokens."""
    stack = Stack(root)
    py = sys.executable
    bin_dir = Path(py).parent
    tokens = stack.state.setdefault("tokens", {})
    tokens.setdefault("hub", "ela_" + secrets.token_urlsafe(32))
    tokens.setdefault("label_studio", secrets.token_hex(20))
    tokens.setdefault("label_studio_password", secrets.token_urlsafe(12))
    stack.save()
    s = stack.state["services"]
    from edge_runtime.broker import free_port

    port = {}
    for name in ("hub", "prefect", "mlflow", "label_studio"):
        if stack.running(name):
            port[name] = s[name]["port"]
        elif _listening(PORTS[name]):
            port[name] = free_port()
            say(f"{name}: port {PORTS[name]} is taken, using {port[name]}")
        else:
            port[name] = PORTS[name]

    if _listening(PORTS["broker"]) and not stack.running("broker"):
        s["broker"] = {"pid": None, "port": PORTS["broker"], "url": "mqtt://127.0.0.1:1883", "external": True}
        say("broker: using the one on 127.0.0.1:1883")
    else:
        from edge_runtime.broker import CONFIG

        conf = stack.dir / "mosquitto.conf"
        conf.write_text(CONFIG.format(port=PORTS["broker"], max_queued=1_000_000))
        exe = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "mosquitto"
        stack.spawn("broker", [exe, "-c", str(conf)], port=PORTS["broker"], url="mqtt://127.0.0.1:1883")
    stack.spawn("hub", [py, "-m", "edge_runtime.cli", "hub", "serve", "--db", f"sqlite:///{stack.dir}/hub/hub.db",
                        "--data", str(stack.dir / "hub"), "--port", str(port["hub"]), "--admin-token",
                        tokens["hub"], "--broker", f"127.0.0.1:{PORTS['broker']}"],
                port=port["hub"], url=f"http://127.0.0.1:{port['hub']}")
    prefect_env = {"PREFECT_HOME": str(stack.dir / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    stack.spawn("prefect", [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                            str(port["prefect"])], port=port["prefect"], env=prefect_env,
                url=f"http://127.0.0.1:{port['prefect']}", timeout=180)
    (root / "var" / "mlflow").mkdir(parents=True, exist_ok=True)
    stack.spawn("mlflow", [str(bin_dir / "mlflow"), "server", "--backend-store-uri",
                           f"sqlite:///{root.resolve()}/var/mlflow/mlflow.db", "--host", "127.0.0.1", "--port",
                           str(port["mlflow"])], port=port["mlflow"], url=f"http://127.0.0.1:{port['mlflow']}",
                timeout=180)
    if not stack.running("label_studio"):
        from flows.labelstudio import LabelStudioServer

        ls = LabelStudioServer(stack.dir / "label-studio", port["label_studio"], token=tokens["label_studio"],
                               password=tokens["label_studio_password"])
        say("label studio: starting (about 40 s the first time)")
        ls.start(timeout=300)
        s["label_studio"] = {"pid": ls.proc.pid if ls.proc else None, "port": ls.port, "url": ls.url,
                             "log": str(ls.log)}
        stack.save()
    loop_env = {**prefect_env, "PREFECT_API_URL": f"http://127.0.0.1:{port['prefect']}/api",
                "EDGELOOP_WORKSPACE": str(root.resolve()), "EDGELOOP_HUB_URL": f"http://127.0.0.1:{port['hub']}",
                "EDGELOOP_HUB_TOKEN": tokens["hub"],
                "EDGELOOP_LABEL_STUDIO_URL": f"http://127.0.0.1:{port['label_studio']}",
                "EDGELOOP_LABEL_STUDIO_TOKEN": tokens["label_studio"]}
    stack.spawn("loop-worker", [py, "-m", "flows.serve"], port=None, env=loop_env)
    stack.state["env"] = loop_env
    stack.save()
    return stack.state


def down(root: Path) -> list[str]:
    return Stack(root).stop_all()
