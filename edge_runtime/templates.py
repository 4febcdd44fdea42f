"""Pipelines as templates: declared parameters with their defaults, an instance's values, ``${name}`` references.

A pipeline is a template: ``params`` declares parameters with their defaults, and step parameters (and
``uplink``) use them as ``${name}``. Many instances run one pipeline with their own values (node.yaml's
``params:`` of an instance, a hub assignment's ``params``, ``--param`` on the command line)::

    name: overheat
    product: pump
    params: {limit: 80, level: WARN}
    steps:
      - device_input: {}
      - filter: "temperature > ${limit}"
      - alert: {level: "${level}", message: "{device} over ${limit} degC"}

A value that is exactly ``${name}`` becomes the parameter's value with its type (a number, a list...);
inside longer text it is written in as text (strings as they are: quote them in an expression, e.g.
``device == "${pump}"``). ``$${`` is a literal ``${``. Every parameter has a default, so the pipeline
runs and validates as it is; an instance's value must be of its default's kind (a number for a number...)
and is checked like the defaults; an unknown parameter or reference is a :class:`SpecError`. Substitution is text and typed values only: nothing
is evaluated.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from .operators.base import SpecError
from .yamlspec import line_of

__all__ = ["ParamValueError", "param_values", "substitute_params"]


class ParamValueError(SpecError):
    """An instance's parameter values that the pipeline does not take (not the pipeline's own mistake): the
    caller locates it where the values were given (a node.yaml instance, a hub assignment)."""


_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_WHOLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def param_values(data: dict[str, Any], given: dict[str, Any] | None, file: str | None) -> dict[str, Any] | None:
    """The declared parameters' values: defaults, then ``given`` (an instance's). SpecError names a problem of the
    declaration, ParamValueError one of the given values."""
    declared = data.get("params")
    if given is not None and not isinstance(given, dict):
        raise ParamValueError(f"expected a mapping of parameter values, got {type(given).__name__}", file=file,
                              field="params")
    if declared is None:
        if given:
            raise ParamValueError(f"unknown parameter(s) {', '.join(map(repr, given))}: the pipeline declares none",
                                  file=file, field="params", hint="a pipeline declares its params: with defaults")
        return None
    if not isinstance(declared, dict):
        raise SpecError("expected a mapping of parameter names to their defaults", file=file,
                        line=line_of(data, "params"), field="params")
    for k, v in declared.items():
        def bad(problem: str, k: Any = k) -> SpecError:
            return SpecError(problem, file=file, line=line_of(declared, k), field=f"params.{k}")

        if not isinstance(k, str) or not _PARAM_NAME.match(k):
            raise bad(f"parameter {k!r}: expected a name of letters, digits and _")
        if v is None:
            raise bad(f"parameter {k!r} needs a default: the pipeline must run as it is")
        if not _finite(v):
            raise bad(f"parameter {k!r}: {v!r} is not a finite number")
    values = dict(declared)
    for k, v in (given or {}).items():
        fld = f"params.{k}"
        if k not in declared:
            raise ParamValueError(f"unknown parameter {k!r}", file=file, field=fld,
                                  hint="the pipeline declares: " + ", ".join(sorted(declared)))
        if v is None:
            raise ParamValueError(f"parameter {k!r}: no value given", file=file, field=fld)
        if _kind(v) != _kind(declared[k]):
            raise ParamValueError(f"parameter {k!r}: expected {_kind(declared[k])} like its default "
                                  f"{declared[k]!r}, got {v!r}", file=file, field=fld)
        if not _finite(v):
            raise ParamValueError(f"parameter {k!r}: {v!r} is not a finite number", file=file, field=fld)
        values[k] = v
    return values


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a parameter value (they are not JSON, and not numbers an expression reads)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _kind(value: Any) -> str:
    """A parameter value's kind: an instance's value must be of its default's."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a text"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def substitute_params(value: Any, values: dict[str, Any], where: str | None = None) -> Any:
    """``value`` (a step's parameters) with ``${name}`` references replaced; SpecError on an unknown one, naming
    the field (``where``: the path to ``value``)."""
    if isinstance(value, dict):
        return {k: substitute_params(v, values, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_params(v, values, f"{where}[{i}]" if where else f"[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _WHOLE.match(value)
    if whole and whole.group(1) in values:
        return copy.deepcopy(values[whole.group(1)])

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name = m.group(1)
        if name not in values:
            raise SpecError(f"${{{name}}} is not a declared parameter", field=where,
                            hint=f"declare it under params: with a default (declared: {', '.join(sorted(values)) or 'none'}"
                                 "); a literal ${ is written $${")
        return _text(values[name])
    return _REF.sub(one, value)
