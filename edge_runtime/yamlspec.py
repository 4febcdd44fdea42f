"""YAML loading that remembers line numbers, so spec errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .operators.base import SpecError

__all__ = ["LocDict", "LocList", "load_yaml", "line_of"]


class LocDict(dict):
    """A mapping that knows the line of itself and of each key (1-based)."""

    line: int | None = None
    key_lines: dict[Any, int]


class LocList(list):
    """A sequence that knows the line of itself and of each item (1-based)."""

    line: int | None = None
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LocDict:
    loader.flatten_mapping(node)
    out = LocDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise SpecError("a mapping key must be a plain value", line=key_node.start_mark.line + 1) from None
        if key in out:
            raise SpecError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1, field=str(key))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LocList:
    out = LocList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load_yaml(source: str | Path, *, text: str | None = None) -> Any:
    """Load a YAML file (or ``text`` labelled ``source``); errors are SpecErrors with file and line."""
    name = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read: {exc.strerror}", file=name) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except SpecError as exc:
        raise exc.located(file=name) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(f"invalid YAML: {exc.problem or exc.context}", file=name, line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=name) from None


def line_of(container: Any, key: Any = None) -> int | None:
    """Line of ``container[key]`` (or of the container) when it came from YAML."""
    if key is not None:
        if isinstance(container, LocDict):
            return container.key_lines.get(key, container.line)
        if isinstance(container, LocList) and isinstance(key, int) and key < len(container.item_lines):
            return container.item_lines[key]
    return getattr(container, "line", None)
