"""The agile loop's configuration (every field has an environment variable) and the error its steps raise."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .state import LoopState

__all__ = ["LoopConfig", "LoopError", "hub_call"]


class LoopError(RuntimeError):
    """A step cannot go on; the message says what is missing and how to fix it."""


@dataclass
class LoopConfig:
    """Where the loop's parts are. Every field has an environment variable (EDGELOOP_<FIELD>)."""

    workspace: str = "."                       # params.yaml, dvc.yaml, data/, artifacts/, var/
    hub_url: str = "http://127.0.0.1:8080"
    hub_token: str | None = None               # the hub's admin token
    label_studio_url: str = "http://127.0.0.1:8081"
    label_studio_token: str | None = None
    models: list[str] = field(default_factory=list)  # none: every model of the workspace (params.yaml `models`)
    max_label_share: float = 0.10              # at most this share of the uploads goes to labelling
    random_share: float = 0.5                  # of that budget, drawn uniformly (the rest: the edge's hard examples)
    min_labels: int = 20                       # retrain only with at least this many new labels
    metric: str = "accuracy"
    clean_margin: float = 0.01                 # the candidate may lose at most this much on the clean holdout
    drifted_margin: float = 0.0                # and must gain more than this on the drifted one
    group: str | None = None                   # roll out to this node group (none: do not roll out)
    canary: int = 1
    watch_s: float = 60.0
    approval: bool = False                     # wait for a person's approval (Prefect UI) before rolling out
    keys_dir: str | None = None                # signing keys for model bundles (none: EDGELOOP_KEYS_DIR, else
                                               # ~/.config/edgeloop/keys: where `edgeloop keys init` puts them)
    parallel_retrain: bool = False             # train the models that have new labels at the same time, one
                                               # Dask worker process each (flows.loop.retrain_on_dask)

    @classmethod
    def from_env(cls, **overrides: Any) -> LoopConfig:
        cfg = cls()
        for name, value in asdict(cfg).items():
            env = os.environ.get(f"EDGELOOP_{name.upper()}")
            if env is None:
                continue
            if isinstance(value, bool):
                setattr(cfg, name, env.lower() in ("1", "true", "yes"))
            elif isinstance(value, list):
                setattr(cfg, name, [v.strip() for v in env.split(",") if v.strip()])
            elif isinstance(value, (int, float)) and value is not None:
                setattr(cfg, name, type(value)(env))
            else:
                setattr(cfg, name, env)
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg

    @property
    def root(self) -> Path:
        return Path(self.workspace).resolve()

    def model_names(self) -> list[str]:
        """The models this loop works on: ``models``, or every model the workspace's pipeline trains."""
        if self.models:
            return list(self.models)
        from models.common import load_params
        from models.stages import workspace_models

        try:
            return workspace_models(load_params(self.root / "params.yaml"))
        except (OSError, KeyError, ValueError) as exc:
            raise LoopError(f"{self.root / 'params.yaml'}: which models? {exc}") from None

    def keys(self) -> Path:
        """The signing key directory: ``keys_dir`` (relative to the workspace), else the machine's one."""
        from edge_runtime.signing import default_keys_dir

        if not self.keys_dir:
            return default_keys_dir()
        return self.root / Path(self.keys_dir).expanduser()

    def state(self) -> LoopState:
        return LoopState(self.root / "var" / "loop" / "state.db")

    def hub(self) -> Any:
        from edge_runtime.hubclient import HubClient

        if not self.hub_token:
            raise LoopError("no hub token: set EDGELOOP_HUB_TOKEN (the hub's admin token, in its data folder's "
                            "admin.token)")
        return HubClient(self.hub_url, self.hub_token)

    def labelling(self) -> Any:
        from .labelstudio import Labelling

        if not self.label_studio_token:
            raise LoopError("no Label Studio token: set EDGELOOP_LABEL_STUDIO_TOKEN (`edgeloop up` prints it)")
        return Labelling(self.label_studio_url, self.label_studio_token)


def hub_call(cfg: LoopConfig, fn: Any) -> Any:
    from edge_runtime.hubclient import HubUnreachable

    try:
        return fn()
    except HubUnreachable as exc:
        raise LoopError(f"the hub at {cfg.hub_url} is unreachable ({exc}): start it with `edgeloop hub serve` "
                        "or `edgeloop up`; the next run resumes from the last watermark") from None
