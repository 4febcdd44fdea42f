"""Pipeline specs (YAML/JSON) and the fluent builder, both producing one validated :class:`Plan`.

YAML::

    name: pump-overheat
    product: pump
    steps:
      - device_input: {properties: [temperature, vibration]}
      - filter: "temperature > 80"
      - time_window: {size: 10s}
      - aggregate: {temperature: mean, vibration: max}

Python::

    Pipeline.named("pump-overheat").product("pump") \\
        .device_input(properties=["temperature", "vibration"]).filter("temperature > 80") \\
        .time_window(size="10s").aggregate(temperature="mean", vibration="max").build()

Validation happens when the plan is built: unknown operators, bad parameters, a
missing input step, an aggregate without a window, duplicate step ids: each is a
:class:`SpecError` naming file, line, step and field.

A pipeline is a template with parameters (``params:`` and ``${name}``): :mod:`edge_runtime.templates`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .desensitise import check_uplink_spec
from .operators import StepContext, lookup
from .operators.base import SpecError
from .templates import ParamValueError, param_values, substitute_params
from .yamlspec import line_of, load_yaml

__all__ = ["ParamValueError", "Plan", "Step", "Pipeline", "load_pipeline", "parse_pipeline", "substitute_params"]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_. ")


@dataclass(frozen=True)
class Step:
    op: str
    params: Any
    id: str
    line: int | None = field(default=None, compare=False)


def pinned_models(plan: Plan) -> list[tuple[str, str]]:
    """The model versions the plan's ``apply_model`` steps pin (``model: name:version``), in step order:
    what a node installs and loads before it starts the instance."""
    out: list[tuple[str, str]] = []
    for step in plan.steps:
        ref = step.params.get("model") if step.op == "apply_model" and isinstance(step.params, dict) else None
        if isinstance(ref, str) and ref.count(":") == 1:
            name, version = ref.split(":")
            if name and version and (name, version) not in out:
                out.append((name, version))
    return out


@dataclass
class Plan:
    """A validated pipeline: what the engine instantiates (once per pipeline instance)."""

    name: str
    product: str | None
    steps: list[Step]
    file: str | None = field(default=None, compare=False)
    uplink: dict[str, Any] | None = None  # desensitisation before upload (see desensitise.py)
    params: dict[str, Any] | None = None  # the values ``${name}`` were replaced by (defaults, then the instance's)
    template: dict[str, Any] | None = field(default=None, compare=False)  # the spec before substitution

    def to_dict(self) -> dict[str, Any]:
        """The spec (as a template: ``${name}`` references and the declared defaults, when it has params)."""
        if self.template is not None:  # parsed: the spec as written (${name}, $${), not as substituted
            steps = [{op: _plain(params), **({"id": sid} if sid != _default_id(op, i) else {})}
                     for i, (op, params, sid) in enumerate(_raw_steps(self.template["steps"]))]
            uplink, params = self.template.get("uplink"), self.template.get("params")
        else:
            steps = [{s.op: _plain(s.params), **({"id": s.id} if s.id != _default_id(s.op, i) else {})}
                     for i, s in enumerate(self.steps)]
            uplink, params = self.uplink, None
        out: dict[str, Any] = {"name": self.name}
        if self.product is not None:
            out["product"] = self.product
        if params:
            out["params"] = _plain(params)
        out["steps"] = steps
        if uplink:
            out["uplink"] = _plain(uplink)
        return out

    def bind(self, params: dict[str, Any] | None) -> Plan:
        """The pipeline with an instance's parameter values over its declared defaults (not over this plan's own
        values), validated; this plan itself for None or ``{}``."""
        if params is None or params == {}:
            return self
        return parse_pipeline(self.template if self.template is not None else self.to_dict(), file=self.file,
                              params=params)

    def instantiate(self, make_ctx: Callable[[Step], StepContext]) -> list[Any]:
        """Fresh operator objects for one pipeline instance."""
        return [lookup(s.op)(copy.deepcopy(_plain(s.params)), make_ctx(s)) for s in self.steps]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _default_id(op: str, index: int) -> str:
    return f"{index + 1}:{op}"


def _raw_steps(steps: list[Any]) -> list[tuple[str, Any, str]]:
    """(operator, parameters, id) of a checked spec's steps."""
    out = []
    for i, raw in enumerate(steps):
        op = next(k for k in raw if k != "id")
        out.append((str(op), raw[op], raw.get("id", _default_id(str(op), i))))
    return out


def parse_pipeline(data: Any, *, file: str | None = None, params: dict[str, Any] | None = None) -> Plan:
    """Validate a decoded spec (from YAML or JSON) into a Plan; ``params``: an instance's parameter values
    (over the declared defaults)."""
    if not isinstance(data, dict):
        raise SpecError(f"a pipeline must be a mapping with name and steps, got {type(data).__name__}",
                        file=file, line=line_of(data))
    known = {"name", "product", "steps", "description", "version", "uplink", "params"}
    for key in data:
        if key not in known:
            raise SpecError(f"unknown key {key!r}", file=file, line=line_of(data, key), field=str(key),
                            hint="a pipeline has: " + ", ".join(sorted(known)))
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or not set(name) <= _NAME_CHARS:
        raise SpecError(f"expected a name of letters, digits and - _ . (got {name!r})", file=file,
                        line=line_of(data, "name"), field="name")
    product = data.get("product")
    if product is not None and not isinstance(product, str):
        raise SpecError("expected a product name", file=file, line=line_of(data, "product"), field="product")
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise SpecError("expected a non-empty list of steps", file=file,
                        line=line_of(data, "steps") or line_of(data), field="steps")
    steps: list[Step] = []
    for i, raw in enumerate(steps_raw):
        line = line_of(steps_raw, i)
        label = f"#{i + 1}"
        if not isinstance(raw, dict) or not raw:
            raise SpecError("each step is a mapping {operator: parameters}", file=file, line=line, step=label)
        keys = [k for k in raw if k != "id"]
        if len(keys) != 1:
            raise SpecError(f"a step names exactly one operator, got {keys or 'none'}", file=file,
                            line=line, step=label)
        op = keys[0]
        step_id = raw.get("id", _default_id(str(op), i))
        if not isinstance(step_id, str) or not step_id:
            raise SpecError("expected a text id", file=file, line=line, step=label, field="id")
        steps.append(Step(str(op), raw[op], step_id, line_of(raw, op) or line))
    values = param_values(data, params, file)
    resolved = []  # without params too: a ${name} there is a mistake, named here rather than left in the text
    for i, st in enumerate(steps):
        try:
            resolved.append(Step(st.op, substitute_params(st.params, values or {}), st.id, st.line))
        except SpecError as exc:
            raise exc.located(file=file, line=st.line, step=f"#{i + 1} {st.op}") from None
    steps = resolved
    try:
        uplink_raw = substitute_params(data.get("uplink"), values or {})
    except SpecError as exc:
        raise exc.located(file=file, line=line_of(data, "uplink"), field_prefix="uplink") from None
    try:
        uplink = check_uplink_spec(uplink_raw)
    except SpecError as exc:
        raise exc.located(file=file, line=line_of(data, "uplink")) from None
    template = {k: copy.deepcopy(data[k]) for k in ("name", "product", "params", "steps", "uplink") if k in data}
    plan = Plan(name.strip(), product, steps, file, uplink or None, values, template)
    validate(plan)
    return plan


def validate(plan: Plan) -> None:
    """Check the whole plan: each step's parameters, step order, ids."""
    seen: set[str] = set()
    for i, s in enumerate(plan.steps):
        label = f"#{i + 1} {s.op}" + (f" ({s.id})" if s.id != _default_id(s.op, i) else "")
        try:
            cls = lookup(s.op)
            if s.id in seen:
                raise SpecError(f"duplicate step id {s.id!r}", field="id")
            seen.add(s.id)
            if i == 0 and not cls.source:
                raise SpecError("the first step must be an input (device_input, time_series_input, ...)",
                                hint=f"add '- device_input: {{}}' before '{s.op}'")
            if i > 0 and cls.source:
                raise SpecError("an input step can only come first")
            prev = plan.steps[i - 1].op if i else None
            if cls.accepts == "windows" and (prev is None or lookup(prev).__name__ != "TimeWindow"):
                raise SpecError(f"{s.op} needs a time_window step right before it",
                                hint="add '- time_window: {size: 10s}'")
            cls(copy.deepcopy(_plain(s.params)),
                StepContext(pipeline=plan.name, instance="<validate>", step=s.id, product=plan.product))
        except SpecError as exc:
            raise exc.located(file=plan.file, line=s.line, step=label) from None


def load_pipeline(path: str | Path, params: dict[str, Any] | None = None) -> Plan:
    """Load and validate a pipeline file (YAML or JSON), with an instance's ``params`` values."""
    data = load_yaml(path)
    return parse_pipeline(data, file=str(path), params=params)


class Pipeline:
    """Fluent builder: ``Pipeline.named("x").product("pump").device_input().filter("t > 1").build()``.

    Every registered operator is a method; a single positional argument is the
    operator's shorthand parameter, keywords are its parameters. Each call is
    checked at once, so a mistake points at the call that made it.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._product: str | None = None
        self._steps: list[dict[str, Any]] = []
        self._uplink: dict[str, Any] | None = None
        self._params: dict[str, Any] | None = None

    @classmethod
    def named(cls, name: str) -> Pipeline:
        """A new builder for a pipeline called ``name`` (the paper's Code 1 ``Pipeline.name(...)``)."""
        return cls(name)

    def product(self, product: str) -> Pipeline:
        self._product = product
        return self

    def params(self, **defaults: Any) -> Pipeline:
        """Declare parameters with their defaults, used in steps as ``"${name}"``."""
        self._params = {**(self._params or {}), **defaults}
        return self

    def uplink(self, **spec: Any) -> Pipeline:
        """Desensitisation before upload: ``.uplink(drop=[...], hash=[...], blur=[[x, y, w, h]])`` (checked at once
        unless it uses ``${params}``: then when the plan is built)."""
        self._uplink = (spec if "${" in json.dumps(spec, default=str) else check_uplink_spec(spec)) or None
        return self

    def step(self, op: str, *args: Any, id: str | None = None, **kwargs: Any) -> Pipeline:  # noqa: A002
        cls = lookup(op)
        if args and kwargs:
            raise SpecError(f"give {op} either one positional argument or keywords, not both",
                            step=f"#{len(self._steps) + 1} {op}")
        if len(args) > 1:
            raise SpecError(f"{op} takes at most one positional argument", step=f"#{len(self._steps) + 1} {op}")
        if args:
            params: Any = args[0]
        elif cls.name == "aggregate" or kwargs:
            params = dict(kwargs)
        else:
            params = {}
        entry: dict[str, Any] = {op: params}
        if id is not None:
            entry["id"] = id
        self._steps.append(entry)
        try:  # check this step now, in place, so the error points at this call
            parse_pipeline({"name": self._name, "steps": self._steps, **({"product": self._product} if self._product
                                                                         else {}),
                            **({"params": self._params} if self._params is not None else {})})
        except SpecError as exc:
            if exc.step and exc.step.startswith(f"#{len(self._steps)} "):
                self._steps.pop()
                raise
        return self

    def __getattr__(self, op: str) -> Callable[..., Pipeline]:
        if op.startswith("_"):
            raise AttributeError(op)
        lookup(op)  # unknown operators fail here, with a hint

        def add(*args: Any, **kwargs: Any) -> Pipeline:
            return self.step(op, *args, **kwargs)
        return add

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self._name}
        if self._product is not None:
            out["product"] = self._product
        if self._params is not None:
            out["params"] = copy.deepcopy(self._params)
        out["steps"] = copy.deepcopy(self._steps)
        if self._uplink:
            out["uplink"] = copy.deepcopy(self._uplink)
        return out

    def build(self, **params: Any) -> Plan:
        """The validated plan; keywords are an instance's parameter values."""
        return parse_pipeline(self.spec(), params=params or None)
