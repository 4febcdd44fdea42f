"""Declarative config sections: a frozen dataclass per YAML mapping, its defaults and converters in one place.

A section is a dataclass whose fields say their own default, how a YAML value becomes the field's value,
and what the field is for::

    @dataclass(frozen=True)
    class Limits:
        max_payload: int = setting(65536, count, "largest device message taken, bytes")
        queue: int = setting(64, count, "micro-batches waiting per pipeline instance")

    limits = parse_section(Limits, data.get("limits"), name="limits", file=file, parent=data)

:func:`parse_section` refuses keys the section does not have (naming the key, its line and the keys the
section has), converts each value (a refusal names the field and its line), and leaves absent or null
values at their defaults. A field may read another YAML key (``key="token_env"``), or be a section (or a
list of sections) of its own. Converters are small functions ``value -> value`` that raise
:class:`SpecError` saying what they expected; the parser adds where.

Nothing here imports more than the standard library, the spec error and the YAML line table: node start-up
stays light (pydantic would add ~160 ms to ``import edge_runtime.node`` on a Raspberry-class machine's
budget for very little).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

from .operators.base import SpecError, parse_duration
from .yamlspec import line_of

__all__ = ["setting", "parse_section", "keys_of", "ExtraKeys", "count", "whole", "number", "text", "boolean", "one_of",
           "optional", "duration", "port", "env_secret", "text_list", "Convert"]

T = TypeVar("T")
Convert = Callable[[Any], Any]


class ExtraKeys(Protocol):
    """Keys a section takes beyond its dataclass' fields (node.yaml: the sections connectors declare)."""

    def keys(self) -> list[str]: ...

    def parser(self, key: str) -> Callable[[Any, str], Any] | None:
        """A parser ``(value, field) -> value`` for ``key``, or None when the key is not one of these."""


def setting(default: Any, convert: Convert | None = None, doc: str = "", *, key: str | None = None,
            section: type | None = None, items: type | None = None) -> Any:
    """A section field: its default, its converter, what it is for (``doc``: the error hint), the YAML ``key``
    it reads when that differs from the field name; ``section``/``items``: a nested section (or a list of
    them) instead of a converter."""
    meta = {"convert": convert, "doc": doc, "key": key, "section": section, "items": items}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def keys_of(cls: type) -> list[str]:
    """The YAML keys a section takes, in declaration order."""
    return [f.metadata.get("key") or f.name for f in dataclasses.fields(cls)]


def parse_section(cls: type[T], data: Any, *, name: str, file: str | None, parent: Any = None, at: Any = None,
                  extra: ExtraKeys | None = None, extras: dict[str, Any] | None = None) -> T:
    """The section ``cls`` from YAML ``data`` (None: every default), named ``name`` in messages and found in
    ``parent`` under ``at`` (default: ``name``).

    ``extra``: keys the dataclass does not declare and their parsers; what they return goes into ``extras``.
    """
    prefix = f"{name}." if name else ""
    keys = keys_of(cls)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError("expected {" + ", ".join(keys) + "}", file=file,
                        line=line_of(parent, name if at is None else at), field=name or None, hint=_doc(cls))
    for key in data:
        if key in keys:
            continue
        parse_extra = extra.parser(str(key)) if extra is not None else None
        if parse_extra is None:
            every = [*keys, *(extra.keys() if extra is not None else [])]
            raise SpecError(f"unknown key {key!r}", file=file, line=line_of(data, key), field=f"{prefix}{key}",
                            hint=f"{name or 'a node config'} has: " + ", ".join(sorted(every)))
        if extras is not None:
            extras[str(key)] = parse_extra(data[key], f"{prefix}{key}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cast(Any, cls)):
        key = f.metadata.get("key") or f.name
        value = data.get(key)
        if value is None:
            continue
        fld = f"{prefix}{key}"
        nested, items = f.metadata.get("section"), f.metadata.get("items")
        if nested is not None:
            if f.default is None and isinstance(value, Mapping) and not value:
                continue  # an optional section left empty: as if absent
            values[f.name] = parse_section(nested, value, name=fld, file=file, parent=data, at=key)
            continue
        if items is not None:
            if not isinstance(value, list):
                raise SpecError("expected a list", file=file, line=line_of(data, key), field=fld)
            values[f.name] = [parse_section(items, v, name=f"{fld}[{i}]", file=file, parent=value, at=i)
                              for i, v in enumerate(value)]
            continue
        convert = f.metadata.get("convert")
        if convert is None:
            values[f.name] = value
            continue
        try:
            values[f.name] = convert(value)
        except SpecError as exc:
            raise SpecError(exc.problem, file=file, line=line_of(data, key), field=fld,
                            hint=exc.hint or f.metadata.get("doc") or None) from None
    return cls(**values)


def _doc(cls: type) -> str | None:
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc and not doc[0].startswith(cls.__name__ + "(") else None


# -- converters ---------------------------------------------------------------------------------------
def whole(value: Any, *, lo: int | None = None, hi: int | None = None, what: str = "a whole number") -> int:
    """An integer (a whole float or a numeric string too, as ``int()`` took them before)."""
    if isinstance(value, bool):
        raise SpecError(f"expected {what}, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip().replace("_", ""))
        except ValueError:
            raise SpecError(f"expected {what}, got {value!r}") from None
    if not isinstance(value, int) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SpecError(f"expected {what}, got {value!r}")
    return value


def count(value: Any) -> int:
    """A positive whole number."""
    return whole(value, lo=1, what="a positive whole number")


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"expected a number, got {value!r}")
    return float(value)


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"expected text, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise SpecError(f"expected true or false, got {value!r}")


def duration(value: Any) -> float:
    """``10s``, ``500ms``, ``5m``, ``1h``, ``2d`` or seconds."""
    return parse_duration(value, "")


def one_of(*allowed: Any) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, bool) or value not in allowed:
            raise SpecError(f"expected {' or '.join(map(str, allowed))}, got {value!r}")
        return value

    return convert


def optional(convert: Convert) -> Convert:
    return lambda value: None if value is None else convert(value)


def port(*, zero: str | None = None, what: str = "a port number") -> Convert:
    """A TCP/UDP port; ``zero``: what port 0 means when it is allowed (``"any free port"``)."""
    def convert(value: Any) -> int:
        label = f"{what} (0: {zero})" if zero else what
        if isinstance(value, bool) or not isinstance(value, int) or not (0 if zero else 1) <= value < 65536:
            raise SpecError(f"expected {label}, got {value!r}")
        return value

    return convert


def env_secret(value: Any) -> str:
    """The name of an environment variable -> its value, which must be set (a secret kept out of the file)."""
    name = text(value)
    secret = os.environ.get(name)
    if not secret:
        raise SpecError(f"environment variable {name!r} is not set")
    return secret


def text_list(value: Any) -> list[str]:
    """One text or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise SpecError(f"expected a text or a list of them, got {value!r}")
    return list(items)
