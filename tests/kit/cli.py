"""The ``edgeloop`` command as the tests run it: a child process of this checkout, its output kept as text."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from edgeloop.devkit.hub import child_env

__all__ = ["edgeloop", "edgeloop_here"]


def edgeloop(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m edgeloop *args``, run to its end: this checkout importable, 200 columns (typer's messages
    and help unwrapped), ``env`` added to the environment and ``stdin`` its input. It runs in the test's
    current directory, as from a shell; ``timeout`` only guards against a hang."""
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], input=stdin, capture_output=True,
                          text=True, env={**child_env(), "COLUMNS": "200", **(env or {})}, timeout=timeout)


def edgeloop_here(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command run in this process (typer's test runner): for the many short calls of one test module
    whose imports (MLflow, torch) would otherwise cost each call an interpreter's start. Exit code, stdout and
    stderr as :func:`edgeloop` gives them; what the command leaves in this process's environment is undone."""
    import os

    from typer.testing import CliRunner

    from edgeloop.cli import app

    saved = dict(os.environ)
    try:
        r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["edgeloop", *args], r.exit_code, r.stdout, r.stderr)
