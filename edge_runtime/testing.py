"""Helpers for tests of pipelines and plug-ins, shipped with the runtime: :func:`wait_for` (a condition with a
deadline, never a sleep) and :func:`check_operator`, the promises every operator keeps (for plug-in authors'
tests too; it lives in :mod:`edge_runtime.operators.conformance`). Device simulators and service launchers
are scaffolding, in :mod:`edgeloop.devkit`."""

from __future__ import annotations

import time
from typing import Any, Callable

from .operators.conformance import CheckReport, OperatorCheckError, check_operator

__all__ = ["wait_for", "check_operator", "CheckReport", "OperatorCheckError"]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a condition until it is truthy or the deadline passes (then fail, naming it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
