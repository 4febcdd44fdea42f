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
    with contextlib.suppress(ChildProcessError):  # a child of this process that exited: reap it, it is gone
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
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
              url: str | None = None, timeout: float = 120.0, stage: int = 1) -> dict[str, Any]:
        """Start one service and wait until it listens. ``down`` stops later stages first."""
        opts = {"port": port, "env": env, "url": url, "timeout": timeout, "stage": stage}
        return self.spawn_all([(name, cmd, opts)])[name]

    def spawn_all(self, services: list[tuple[str, list[str], dict[str, Any]]],
                  also: Any = None) -> dict[str, dict[str, Any]]:
        """Start the services side by side, run ``also()`` meanwhile, then wait until each listens.

        A service that does not come up is stopped and raises, naming its log; the others stay up (and
        in stack.json), so ``up`` can be run again and ``down`` stops them."""
        launched: dict[str, tuple[subprocess.Popen[bytes], dict[str, Any]]] = {}
        for name, cmd, opts in services:
            if self.running(name):
                continue
            log = self.dir / f"{name}.log"
            with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
                proc = subprocess.Popen(cmd, cwd=self.root, env={**os.environ, **(opts.get("env") or {})},
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            launched[name] = (proc, opts)
            self.state["services"][name] = {"pid": proc.pid, "port": opts.get("port"), "url": opts.get("url"),
                                            "log": str(log), "stage": opts.get("stage", 1)}
        self.save()
        try:
            if also is not None:
                also()
        finally:
            failed = [self._ready(name, proc, opts) for name, (proc, opts) in launched.items()]
        if any(failed):
            raise RuntimeError("; ".join(f for f in failed if f))
        return {name: self.state["services"][name] for name, _, _ in services}

    def _ready(self, name: str, proc: subprocess.Popen[bytes], opts: dict[str, Any]) -> str | None:
        """Wait until the service listens; else stop it, forget it and say why."""
        port, log = opts.get("port"), self.state["services"][name]["log"]
        deadline = time.monotonic() + opts.get("timeout", 120.0)
        why = None
        while port is not None and not _listening(port):
            if proc.poll() is not None:
                why = f"{name} exited with code {proc.returncode}; see {log}"
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                why = f"{name} did not listen on port {port} within {opts.get('timeout', 120.0):.0f} s; see {log}"
                break
            time.sleep(0.2)
        if why:
            self.state["services"].pop(name, None)
            self.save()
        return why

    def stop_all(self, timeout: float = 20.0) -> list[str]:
        """Stop the services, the later stages first (the loop worker pauses its schedules on the Prefect
        server before that goes), each stage's at once: SIGTERM to each process group, SIGKILL to those still
        alive after ``timeout``."""
        stopped = []
        services = self.state["services"]

        def stage_of(name: str) -> int:  # a stack.json from before stages: the worker was the last stage
            return int(services[name].get("stage", 2 if name == "loop-worker" else 1))

        for stage in sorted({stage_of(n) for n in services}, reverse=True):
            pids = []
            for name, s in reversed(list(services.items())):
                pid = s.get("pid")
                if stage_of(name) == stage and pid and _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGTERM)
                    stopped.append(name)
                    pids.append(pid)
            deadline = time.monotonic() + timeout
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in pids:
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
        self.state["services"] = {}
        self.save()
        return stopped


def _signing_keys(say: Any) -> dict[str, Any]:
    """The machine's signing key pair (:func:`edge_runtime.signing.default_keys_dir`), made when missing: the
    loop's worker signs with it, ``edgeloop model package`` too, and nodes trust its public half."""
    from edge_runtime.signing import (
        PRIVATE_KEY_FILE,
        PUBLIC_KEY_FILE,
        default_keys_dir,
        init_keys,
        key_id,
        load_private_key,
    )

    d = default_keys_dir()
    if not (d / PRIVATE_KEY_FILE).is_file():
        init_keys(d)
        say(f"signing key: made {d / PRIVATE_KEY_FILE} (edgeloop keys init)")
    return {"dir": d, "public": d / PUBLIC_KEY_FILE,
            "key_id": key_id(load_private_key(d / PRIVATE_KEY_FILE).public_key())}


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
    from edge_runtime.ports import free_port

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
        from edgeloop.devkit.broker import CONFIG

        conf = stack.dir / "mosquitto.conf"
        conf.write_text(CONFIG.format(port=PORTS["broker"], max_queued=1_000_000))
        exe = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "mosquitto"
        stack.spawn("broker", [exe, "-c", str(conf)], port=PORTS["broker"], url="mqtt://127.0.0.1:1883",
                    stage=0)
    prefect_env = {"PREFECT_HOME": str(stack.dir / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    (root / "var" / "mlflow").mkdir(parents=True, exist_ok=True)

    def label_studio() -> None:  # its own start (migrations, the admin user) runs while the others start
        if stack.running("label_studio"):
            return
        from edgeloop.devkit.labelstudio import LabelStudioServer

        ls = LabelStudioServer(stack.dir / "label-studio", port["label_studio"], token=tokens["label_studio"],
                               password=tokens["label_studio_password"])
        say("label studio: starting (about 40 s the first time)")
        ls.start(timeout=300)
        s["label_studio"] = {"pid": ls.proc.pid if ls.proc else None, "port": ls.port, "url": ls.url,
                             "log": str(ls.log)}
        stack.save()

    stack.spawn_all([
        ("hub", [py, "-m", "edgeloop", "hub", "serve", "--db", f"sqlite:///{stack.dir}/hub/hub.db",
                 "--data", str(stack.dir / "hub"), "--port", str(port["hub"]), "--admin-token", tokens["hub"],
                 "--broker", f"127.0.0.1:{PORTS['broker']}"],
         {"port": port["hub"], "url": f"http://127.0.0.1:{port['hub']}"}),
        ("prefect", [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                     str(port["prefect"])],
         {"port": port["prefect"], "env": prefect_env, "url": f"http://127.0.0.1:{port['prefect']}",
          "timeout": 180}),
        # one worker and no job runner: the loop only logs runs and reads the registry (MLflow's defaults start
        # four web workers and a pool of background-job processes, a dozen interpreters on a small machine)
        ("mlflow", [str(bin_dir / "mlflow"), "server", "--backend-store-uri",
                    f"sqlite:///{root.resolve()}/var/mlflow/mlflow.db", "--host", "127.0.0.1", "--port",
                    str(port["mlflow"]), "--workers", "1"],
         {"port": port["mlflow"], "url": f"http://127.0.0.1:{port['mlflow']}", "timeout": 180,
          "env": {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}}),
    ], also=label_studio)
    keys = _signing_keys(say)
    loop_env = {**prefect_env, "PREFECT_API_URL": f"http://127.0.0.1:{port['prefect']}/api",
                "EDGELOOP_KEYS_DIR": str(keys["dir"]),
                "EDGELOOP_WORKSPACE": str(root.resolve()), "EDGELOOP_HUB_URL": f"http://127.0.0.1:{port['hub']}",
                "EDGELOOP_HUB_TOKEN": tokens["hub"],
                "EDGELOOP_LABEL_STUDIO_URL": f"http://127.0.0.1:{port['label_studio']}",
                "EDGELOOP_LABEL_STUDIO_TOKEN": tokens["label_studio"]}
    stack.spawn("loop-worker", [py, "-m", "flows.serve"], port=None, env=loop_env, stage=2)
    stack.state["env"] = loop_env
    stack.state["keys"] = {k: str(v) for k, v in keys.items()}
    stack.save()
    return stack.state


def down(root: Path) -> list[str]:
    return Stack(root).stop_all()
