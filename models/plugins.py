"""Models as plug-ins: the contract every model the loop trains follows, and the registry that finds them.

A model is a module (or any object) registered under the ``edgeloop.models`` entry-point group, in the
``pyproject.toml`` of the package that holds it::

    [project.entry-points."edgeloop.models"]
    leak = "leak_model"          # the module below

and providing:

``NAME``       the model's name (lower case, digits, ``_``): its registry name, its DVC stages, its hub name;
``LABELS``     the two class names in output order, the negative class first (the loop's metrics and its gate
               are binary: precision, recall, F1 of the second class);
``INPUT``      ``"table"`` (rows of named features), ``"image"`` (uint8 H x W x C) or ``"clip"`` (T x H x W x C);
``DEFAULTS``   its parameters with their defaults: the ``<NAME>:`` section of params.yaml overrides them;
``prepare(raw, out, params)``
               raw data (``data/raw``: what ``generate`` or the field left there) into the splits the loop
               trains and gates on: ``out/train.npz`` and the holdouts ``out/holdout_clean.npz`` (data like
               what the model was built for) and ``out/holdout_drifted.npz`` (what it sees now: a later
               period, other devices); each an ``.npz`` of ``X`` and ``y`` unless ``xy`` reads it otherwise;
``fit(prepared, out, params, seed, progress)``
               train on ``prepared/train.npz`` and write the artifact to ``out`` in a format the one loader,
               :mod:`edge_runtime.modelkit`, reads (descriptor, weights, health sample); returns a summary
               (``n``, ``positives``, ``fit_seconds``, ...). ``progress(epoch, loss)`` when given;

and optionally:

``FEATURES``   table models: the feature names in column order (else the descriptor ``fit`` writes says them);
``xy(path)``   a split file as ``(X, y)`` (default: its ``X`` and ``y`` arrays);
``generate(raw, params, seed, progress)``
               writes SYNTHETIC raw data for a demo or a test (the whole params.yaml, the run's seed); models
               trained on field data have none: their raw data comes from ``edgeloop data pull``;
``augment(X, y, rng)``
               more training rows from the labelled ones (the loop's harvested labels go through it);
``DATA``       what it is trained on, in words (default ``"field data"``; the reference models say synthetic).

The reference models (``models.pump_anomaly.train``, ``models.street.intrusion``, ``models.street.activity``) are plug-ins
registered the same way in EdgeLoop's own pyproject.toml: nothing in the loop knows their names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

GROUP = "edgeloop.models"
INPUTS = ("table", "image", "clip")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

__all__ = ["GROUP", "INPUTS", "ModelPlugin", "PluginError", "broken", "check", "get", "names", "plugins"]


class PluginError(ValueError):
    """A model plug-in that cannot be used: which one, from where, and what is wrong with it."""


@dataclass(frozen=True)
class ModelPlugin:
    """One registered model, checked against the contract (see the module's documentation)."""

    name: str
    labels: list[str]
    input: str
    defaults: dict[str, Any]
    prepare: Callable[..., None]
    fit: Callable[..., dict[str, Any]]
    source: str  # "module:object" of its entry point
    data: str = "field data"
    features: list[str] | None = None
    xy: Callable[[Path], tuple[np.ndarray, np.ndarray]] | None = None
    generate: Callable[..., None] | None = None
    augment: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    module: Any = field(default=None, repr=False, compare=False)

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """A prepared split as ``(X, y)``."""
        if self.xy is not None:
            return self.xy(path)
        from models.common import load_split

        d = load_split(path)
        return d["X"], d["y"]

    def params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Its defaults updated from its params.yaml section (unknown keys: KeyError naming them)."""
        from models.common import resolve

        return resolve(self.defaults, (params or {}).get(self.name) or {}, self.name)


def check(obj: Any, source: str) -> ModelPlugin:
    """``obj`` (a plug-in module or object) as a :class:`ModelPlugin`, or PluginError naming every problem."""
    problems: list[str] = []

    def need(attr: str, ok: Callable[[Any], bool], what: str) -> Any:
        if not hasattr(obj, attr):
            problems.append(f"no {attr} ({what})")
            return None
        value = getattr(obj, attr)
        if not ok(value):
            problems.append(f"{attr} = {value!r:.80}: expected {what}")
            return None
        return value

    name = need("NAME", lambda v: isinstance(v, str) and bool(NAME.match(v)),
                "a name of lower-case letters, digits and _, starting with a letter")
    labels = need("LABELS", lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                  and all(isinstance(s, str) and s for s in v) and len(set(v)) == len(v),
                  "two distinct class names, the negative first")
    kind = need("INPUT", lambda v: v in INPUTS, f"one of {', '.join(INPUTS)}")
    defaults = need("DEFAULTS", lambda v: isinstance(v, Mapping), "a mapping of parameters")
    prepare = need("prepare", callable, "prepare(raw, out, params)")
    fit = need("fit", callable, "fit(prepared, out, params, seed, progress)")
    optional: dict[str, Any] = {}
    for attr in ("xy", "generate", "augment"):
        v = getattr(obj, attr, None)
        if v is not None and not callable(v):
            problems.append(f"{attr} = {v!r:.80}: expected a function")
        optional[attr] = v
    data = getattr(obj, "DATA", "field data")
    if not isinstance(data, str):
        problems.append(f"DATA = {data!r:.80}: expected a description of the training data")
    features = getattr(obj, "FEATURES", None)
    if features is not None and not (isinstance(features, (list, tuple)) and all(isinstance(f, str) for f in features)):
        problems.append(f"FEATURES = {features!r:.80}: expected a list of feature names")
    if problems:
        raise PluginError(f"model plug-in {source}: " + "; ".join(problems))
    return ModelPlugin(name=name, labels=list(labels), input=kind, defaults=dict(defaults), prepare=prepare, fit=fit,
                       source=source, data=data, features=list(features) if features is not None else None, module=obj,
                       **optional)


_cache: dict[str, ModelPlugin] | None = None
_broken: dict[str, str] = {}


def plugins(*, reload: bool = False) -> dict[str, ModelPlugin]:
    """Every model registered under ``edgeloop.models``, by name (sorted). A plug-in that does not import or
    breaks the contract is left out; :func:`get` says why when it is asked for."""
    global _cache
    if _cache is None or reload:
        found: dict[str, ModelPlugin] = {}
        _broken.clear()
        for ep in entry_points(group=GROUP):
            try:
                p = check(ep.load(), ep.value)
            except PluginError as exc:
                _broken[ep.name] = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - any import error of a third-party package
                _broken[ep.name] = f"model plug-in {ep.value}: does not import: {type(exc).__name__}: {exc}"
                continue
            if p.name != ep.name:
                _broken[ep.name] = f"model plug-in {ep.value}: registered as {ep.name!r} but its NAME is {p.name!r}"
                continue
            if p.name in found and found[p.name].source != p.source:
                _broken[p.name] = (f"model {p.name!r} registered twice: {found[p.name].source} and {p.source}; "
                                   "uninstall one")
                found.pop(p.name)
                continue
            found[p.name] = p
        _cache = dict(sorted(found.items()))
    return _cache


def broken() -> dict[str, str]:
    """Entry points that did not load as model plug-ins: name -> why."""
    plugins()
    return dict(_broken)


def names() -> list[str]:
    return list(plugins())


def get(name: str) -> ModelPlugin:
    """The plug-in called ``name``; KeyError naming the registered ones (or why ``name`` is unusable)."""
    found = plugins()
    if name in found:
        return found[name]
    if name not in _broken:
        plugins(reload=True)  # installed since this process looked
        if name in _cache:  # type: ignore[operator]
            return _cache[name]  # type: ignore[index]
    if name in _broken:
        raise KeyError(_broken[name])
    known = ", ".join(plugins()) or "none"
    raise KeyError(f"unknown model {name!r}: no plug-in under the {GROUP!r} entry points has that name "
                   f"(registered: {known}); `edgeloop model init {name}` scaffolds one")
