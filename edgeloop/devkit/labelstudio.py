"""Label Studio as a child process: ``label-studio start`` (installed in its own venv by ``make label-studio``:
its pins conflict with Prefect's) on a free port with an admin user and an API token, for ``edgeloop up``, the
demo and the tests. ``python -m edgeloop.devkit.labelstudio [workdir]`` serves one until stopped."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from edge_runtime.ports import free_port, wait_port
from flows.labelstudio import Labelling, LabellingError, healthy

__all__ = ["DEFAULT_BIN", "LabelStudioServer"]

ROOT = Path(__file__).resolve().parents[2]
#: where ``make label-studio`` installs the command line; EDGELOOP_LABEL_STUDIO_BIN overrides it
DEFAULT_BIN = ROOT / ".venv-ls" / "bin" / "label-studio"
INSTALL_HINT = "`make label-studio` installs it (python3.11 -m venv .venv-ls; .venv-ls/bin/pip install label-studio==1.23.2)"


class LabelStudioServer:
    """``label-studio start`` on 127.0.0.1:port with its data (SQLite, uploads) under ``workdir``.

    An admin user and a legacy API token (``token``) are created on first start; ``stop()`` then
    ``start()`` keeps port, data and token. The log is ``workdir/label-studio.log``. A fresh data dir
    takes about 40 s to start on an idle machine (database migrations), two minutes on 2 busy cores.
    """

    def __init__(self, workdir: Path | str, port: int | None = None, *, token: str | None = None,
                 username: str = "edgeloop@example.com", password: str | None = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token or secrets.token_hex(20)
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.log = self.dir / "label-studio.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None  # seconds the last start() took

    @staticmethod
    def executable() -> Path:
        """The ``label-studio`` command: EDGELOOP_LABEL_STUDIO_BIN, else .venv-ls/bin/label-studio."""
        exe = Path(os.environ.get("EDGELOOP_LABEL_STUDIO_BIN") or DEFAULT_BIN)
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise FileNotFoundError(f"Label Studio is not installed at {exe}: {INSTALL_HINT}, "
                                    "or set EDGELOOP_LABEL_STUDIO_BIN to a label-studio command")
        return exe

    def env(self) -> dict[str, str]:
        """The environment of the server: admin user, token, data dir, local webhooks allowed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        return {
            **env,
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            # without it label-studio-sdk's token gets 401 ("legacy token authentication has been disabled")
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.dir / "data"),
            # webhooks to the hub on 127.0.0.1
            "SSRF_PROTECTION_ENABLED": "false",
            "LATEST_VERSION_CHECK": "false",  # no PyPI request at every start
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }

    def command(self) -> list[str]:
        return [str(self.executable()), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self, timeout: float = 300.0) -> LabelStudioServer:
        """Start and wait until ``/health`` answers; raise with the log's tail when it does not."""
        cmd = self.command()
        self.started_in = None
        t0 = time.monotonic()
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise LabellingError(f"label-studio exited with code {code} before answering on {self.url}; "
                                     f"log {self.log}:\n{self._log_tail()}")
            if wait_port(self.port, timeout=0.5) and healthy(self.url):
                self.started_in = time.monotonic() - t0
                return self
        self.stop()
        raise LabellingError(f"label-studio did not answer {self.url}/health within {timeout:.0f} s; "
                             f"log {self.log}:\n{self._log_tail()}")

    def _log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to the server's process group (its workers too), SIGKILL after 20 s."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
            wait_port(self.port, up=False, timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def labelling(self) -> Labelling:
        """A :class:`Labelling` client for this server."""
        return Labelling(self.url, self.token)

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


if __name__ == "__main__":  # pragma: no cover - by hand: `python -m edgeloop.devkit.labelstudio [workdir]` serves until stopped
    import sys
    import tempfile

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on SIGTERM too (not only Ctrl-C)
    with LabelStudioServer(Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())) as srv:
        print(json.dumps({"url": srv.url, "token": srv.token, "started_in_s": round(srv.started_in or 0, 1)}),
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while srv.running:
                time.sleep(1)
