"""The ``edgeloop`` command as the tests run it: a child process of this checkout, its output kept as text."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from edgeloop.devkit.hub import child_env

__all__ = ["edgeloop"]


def edgeloop(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m edgeloop *args``, run to its end: this checkout importable, 200 columns (typer's messages
    and help unwrapped), ``env`` added to the environment and ``stdin`` its input. It runs in the test's
    current directory, as from a shell; ``timeout`` only guards against a hang."""
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], input=stdin, capture_output=True,
                          text=True, env={**child_env(), "COLUMNS": "200", **(env or {})}, timeout=timeout)
