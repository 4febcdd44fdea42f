"""The operator contract and the registry of operators.

An operator is a small class with one job. It is built from its step's
parameters (validated in ``__init__``: a bad spec raises :class:`SpecError`
naming the field) and then fed micro-batches: ``process(batch)`` returns the
batch that goes on; rows it rejects go to ``ctx.dead_letter`` with a reason and
never raise. ``flush()`` is called at end of input, ``tick(now)`` on wall-clock
time in a live node. An operator that keeps state between batches returns it from
``snapshot()`` as JSON and takes it back in ``restore(state)``: a node that stops
cleanly saves it and goes on from it when it starts again (``close()`` then
releases files instead of ``flush()``). User operators register through the
``edgeloop.operators`` entry point group; :func:`edge_runtime.testing.check_operator`
checks the promises above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, ClassVar, Protocol

import numpy as np

from ..records import Batch

__all__ = ["Operator", "SpecError", "StepContext", "register", "REGISTRY", "lookup", "parse_duration"]


class SpecError(ValueError):
    """A pipeline or device spec that cannot be accepted.

    The message names where (file, line, step) and what (field) is wrong.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 step: str | None = None, field: str | None = None, hint: str | None = None) -> None:
        self.file, self.line, self.step, self.field, self.hint = file, line, step, field, hint
        self.problem = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(self.file + (f":{self.line}" if self.line else ""))
        elif self.line:
            where.append(f"line {self.line}")
        if self.step:
            where.append(f"step {self.step}" if self.step.startswith("#") else self.step)
        if self.field:
            where.append(f"field '{self.field}'")
        msg = (", ".join(where) + ": " if where else "") + self.problem
        if self.hint:
            msg += f" (hint: {self.hint})"
        return msg

    def located(self, *, file: str | None = None, line: int | None = None,
                step: str | None = None, field_prefix: str | None = None) -> SpecError:
        fld = self.field
        if field_prefix:
            fld = f"{field_prefix}.{fld}" if fld else field_prefix
        return SpecError(self.problem, file=self.file or file, line=self.line or line,
                         step=self.step or step, field=fld, hint=self.hint)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # pragma: no cover - keeps pickling (multiprocessing) working
        return (_rebuild_spec_error, (self.problem, self.file, self.line, self.step, self.field, self.hint))


def _rebuild_spec_error(problem: str, file: str | None, line: int | None, step: str | None, field: str | None,
                        hint: str | None) -> SpecError:  # pragma: no cover
    return SpecError(problem, file=file, line=line, step=step, field=field, hint=hint)


class Sinks(Protocol):
    def alert(self, alert: dict[str, Any]) -> None: ...
    def notification(self, note: dict[str, Any]) -> None: ...
    def device_output(self, action: dict[str, Any]) -> None: ...


@dataclass
class StepContext:
    """What an operator may use: its identity, dead letters, sinks, models, the store."""

    pipeline: str
    instance: str
    step: str
    product: str | None = None
    devices: frozenset[str] | None = None
    sinks: Any = None
    models: Any = None
    store: Any = None
    dead: Callable[[str, Batch, list[str]], None] | None = None
    desensitiser: Any = None  # the pipeline's Desensitiser: what leaves for the hub is blurred/dropped/hashed by it
    counters: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0, "dead": 0})

    def dead_letter(self, rows: Batch, reasons: list[str] | str) -> None:
        """Send rows to the dead-letter store with one reason per row (or one for all)."""
        if not len(rows):
            return
        if isinstance(reasons, str):
            reasons = [reasons] * len(rows)
        self.counters["dead"] += len(rows)
        if self.dead is not None:
            self.dead(self.step, rows, reasons)


class Operator:
    """Base class: subclasses set ``name`` and ``params`` and override ``process``."""

    name: ClassVar[str] = ""
    #: parameter name -> short description (the spec schema shown in errors and docs)
    params: ClassVar[dict[str, str]] = {}
    #: parameters that must be given
    required: ClassVar[tuple[str, ...]] = ()
    #: a scalar given instead of a mapping is taken as this parameter ("filter: 'x > 1'")
    shorthand: ClassVar[str | None] = None
    #: "records" or "windows": what ``process`` accepts
    accepts: ClassVar[str] = "records"
    #: True for operators that start a pipeline (inputs)
    source: ClassVar[bool] = False

    def __init__(self, spec: Any, ctx: StepContext) -> None:
        self.ctx = ctx
        self.spec = self.normalise(spec)
        self.configure(**self.spec)

    @classmethod
    def normalise(cls, spec: Any) -> dict[str, Any]:
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            if cls.shorthand is None:
                raise SpecError(f"expected a mapping of parameters, got {type(spec).__name__}",
                                hint=f"parameters: {', '.join(cls.params) or 'none'}")
            spec = {cls.shorthand: spec}
        unknown = [k for k in spec if k not in cls.params]
        if unknown:
            raise SpecError(f"unknown parameter '{unknown[0]}'", field=unknown[0],
                            hint=f"{cls.name} takes: {', '.join(cls.params) or 'no parameters'}")
        for req in cls.required:
            if req not in spec:
                raise SpecError(f"missing required parameter '{req}'", field=req,
                                hint=cls.params.get(req))
        return dict(spec)

    def configure(self, *args: Any, **params: Any) -> None:
        """Validate and keep the parameters (raise SpecError naming the field)."""

    def process(self, batch: Any) -> Any:
        """A :class:`Batch` (``accepts = "windows"``: :class:`~.windows.Windows`) -> what goes on."""
        return batch

    def flush(self) -> Any:
        """End of input: emit what is held (windows, buffers)."""
        return None

    def tick(self, now: float) -> Any:
        """Wall-clock time passed (live nodes only)."""
        return None

    def snapshot(self) -> Any:
        """The operator's state as a JSON value (see :mod:`.state`), or None when it keeps none.

        An operator that keeps state between batches (per-device windows, counters, the last values seen)
        returns all of it here, devices named by id; a fresh operator given it in :meth:`restore` then goes on
        exactly as this one would have. The engine saves it when a node stops cleanly and restores it when the
        same instance of the same plan starts again.
        """
        return None

    def restore(self, state: Any) -> None:
        """Take back what :meth:`snapshot` returned (on a freshly built operator, before any input)."""

    def close(self) -> None:
        """Release what the operator holds outside the process (open files) without emitting anything: the
        instance stops with its state saved, instead of :meth:`flush` at end of input."""


REGISTRY: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: make an operator available to pipeline specs by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no operator name")
    if not cls.__doc__:
        raise TypeError(f"operator {cls.name} needs a docstring")
    REGISTRY[cls.name] = cls
    return cls


_ENTRY_POINTS_LOADED = False


def load_entry_points(*, force: bool = False) -> list[str]:
    """Register user operators from the ``edgeloop.operators`` entry point group."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED and not force:
        return []
    _ENTRY_POINTS_LOADED = True
    added = []
    for ep in entry_points(group="edgeloop.operators"):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Operator)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not an Operator subclass")
        if not cls.name:
            cls.name = ep.name
        register(cls)
        added.append(cls.name)
    return added


def lookup(name: str) -> type[Operator]:
    if name not in REGISTRY:
        load_entry_points()
    try:
        return REGISTRY[name]
    except KeyError:
        close = [k for k in REGISTRY if k.startswith(name[:3])]
        raise SpecError(f"unknown operator '{name}'",
                        hint=("did you mean " + " or ".join(close) + "?") if close
                        else "known: " + ", ".join(sorted(REGISTRY))) from None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, field: str, *, zero: bool = False) -> float:
    """'10s', '500ms', '5m' (or '5min'), '1h', '2d' or a number of seconds -> seconds (> 0; >= 0 with ``zero``).

    The one duration grammar of EdgeLoop: specs, node.yaml and command-line options all read durations here."""
    if isinstance(value, bool):
        raise SpecError(f"expected a duration like 10s, got {value!r}", field=field)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise SpecError(f"expected a duration like 500ms, 10s, 5m, 1h, got {value!r}", field=field)
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not (seconds >= 0 if zero else seconds > 0) or not np.isfinite(seconds):
        raise SpecError(f"duration must be {'zero or more' if zero else 'positive'}, got {value!r}", field=field)
    return seconds


def grow(array: np.ndarray[Any, Any], size: int, fill: Any) -> np.ndarray[Any, Any]:
    """Per-device state arrays grow as device codes appear."""
    if len(array) >= size:
        return array
    out = np.full(max(size, 2 * len(array), 64), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out
