"""Checks of step parameters that several operator families share.

Each returns the value in the form the operator keeps, or raises :class:`SpecError` naming the field
(durations: :func:`~edge_runtime.operators.base.parse_duration`).
"""

from __future__ import annotations

from typing import Any

from ..expr import Expression, ExpressionError
from .base import SpecError

__all__ = ["expression", "names", "field_name", "positive_int", "frame_size"]


def expression(source: Any, field: str) -> Expression:
    """A safe expression (filter, custom_function, device_output)."""
    try:
        return Expression(source)
    except ExpressionError as exc:
        raise SpecError(str(exc), field=field) from None


def names(value: Any, field: str) -> list[str] | None:
    """A name or a list of names (None stays None: "all")."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"expected a list of names, got {value!r}", field=field)
    return list(value)


def field_name(value: Any, name: str) -> str:
    """The name of a record field."""
    if not isinstance(value, str) or not value:
        raise SpecError("expected a field name", field=name)
    return value


def positive_int(value: Any, name: str, maximum: int = 1 << 16) -> int:
    """A whole number from 1 to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise SpecError(f"expected a whole number from 1 to {maximum}, got {value!r}", field=name)
    return value


def frame_size(value: Any, name: str) -> tuple[int, int]:
    """``128`` or ``[width, height]`` -> (w, h)."""
    if isinstance(value, list) and len(value) == 2:
        return positive_int(value[0], f"{name}[0]"), positive_int(value[1], f"{name}[1]")
    n = positive_int(value, name)
    return n, n
