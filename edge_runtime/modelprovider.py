"""What the node and its pipelines need from a model store: :class:`ModelProvider`.

``apply_model`` asks ``get(name)`` (or ``get("name:version")`` for a pinned version) for a callable once per
batch; the node reports ``status()`` in heartbeats, re-activates what ran before a restart (``restore``),
loads the versions its instances pin (``pin``/``unpin``), and the agent installs the versions the hub wants
(``reconcile``, ``retry``). :class:`edge_runtime.modelstore.ModelStore` is the full provider; tests and
benches that only need callables pass a plain dict, which :func:`as_provider` wraps in :class:`StaticModels`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["ModelProvider", "StaticModels", "as_provider"]


@runtime_checkable
class ModelProvider(Protocol):
    #: set by ``reconcile``/``pin`` when a failure may pass (the hub away): the agent asks again next beat
    retry: bool

    def get(self, name: str) -> Callable[..., Any] | None:
        """The callable serving model ``name`` (or ``name:version``), None when there is none."""

    def status(self) -> dict[str, Any]:
        """For heartbeats: the models served, their versions and errors."""

    def restore(self) -> dict[str, str]:
        """At start: serve again what was served before a restart; ``{name: error}`` for what cannot be."""

    def pin(self, name: str, version: str, *, download: bool = True) -> Any:
        """Serve ``name:version`` beside the active version; raises ``modelstore.InstallError``."""

    def unpin(self, keep: set[tuple[str, str]]) -> None:
        """Forget pinned versions not in ``keep``."""

    def reconcile(self, desired: Mapping[str, Any]) -> dict[str, str]:
        """Install and activate ``{name: version}``; ``{name: error}`` for those that fail."""


class StaticModels:
    """A fixed set of callables by name (tests, benches, embedded use): nothing to install, pin or restore."""

    def __init__(self, models: Mapping[str, Callable[..., Any]]) -> None:
        self.models = dict(models)
        self.retry = False

    def get(self, name: str) -> Callable[..., Any] | None:
        return self.models.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def status(self) -> dict[str, Any]:
        return {}

    def restore(self) -> dict[str, str]:
        return {}

    def pin(self, name: str, version: str, *, download: bool = True) -> Any:
        return self.models.get(f"{name}:{version}")

    def unpin(self, keep: set[tuple[str, str]]) -> None:
        pass

    def reconcile(self, desired: Mapping[str, Any]) -> dict[str, str]:
        return {}


def as_provider(models: ModelProvider | Mapping[str, Callable[..., Any]]) -> ModelProvider:
    """A provider as it is; a mapping of callables wrapped in :class:`StaticModels`."""
    if isinstance(models, Mapping):
        return StaticModels(models)
    return models
