"""The agile loop's configuration (every field has an environment variable) and the error its steps raise."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .state import LoopState

__all__ = ["LoopConfig", "LoopError", "LoopSettings", "hub_call"]


class LoopError(RuntimeError):
    """A step cannot go on; the message says what is missing and how to fix it. ``retry``: whether running the
    step again may help (a service restarting); a configuration error or a refused rollout fails at once."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


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
    label_cap_minute: int = 0                  # send at most this many tasks per model to labelling in any
                                               # minute (0: no cap); counted from the loop state, across runs
    label_cap_hour: int = 0                    # ... in any hour (0: no cap)
    label_cap_day: int = 0                     # ... in any 24 hours (0: no cap): what the labellers can do
    drift_cooldown_s: float = 3600.0           # the drift watcher starts at most one run per model this often
    drift_poll_s: float = 60.0                 # and looks at the hub's drift alarms this often (flows.drift)
    labels_settle_s: float = 600.0             # labels are ready to train on when all sent are done, or none
                                               # came for this long (flows.drift.labels_ready)

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
                        "or `edgeloop up`; the next run resumes from the last watermark", retry=True) from None


def _unset(name: str, what: str, *, default: Any = None) -> Any:
    """A LoopSettings field: ``what`` it is, the variable it falls back to and LoopConfig's default (or
    ``default``, shown where LoopConfig's is None: resolved later)."""
    shown = default if default is not None else LoopConfig.__dataclass_fields__[name].default
    return Field(None, description=f"{what} (empty: EDGELOOP_{name.upper()}, else {shown})")


class LoopSettings(BaseModel):
    """The agile loop's settings as a Prefect deployment parameter: the Prefect UI draws a form from it, with
    these descriptions. Every field left empty takes its EDGELOOP_* variable from the worker's environment,
    else the built-in default (:class:`LoopConfig`); unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    workspace: str | None = _unset("workspace", "the workspace: params.yaml, dvc.yaml, data/, var/")
    models: list[str] | None = Field(None, description="the models to work on (empty: EDGELOOP_MODELS, else every "
                                                        "model of the workspace's params.yaml)")
    group: str | None = Field(None, description="the node group a promoted version rolls out to (empty: "
                                                 "EDGELOOP_GROUP; with neither, the loop retrains and gates but "
                                                 "NEVER rolls out, and the gate's winner becomes the champion "
                                                 "without serving anywhere)")
    canary: int | None = _unset("canary", "nodes of the group that get a new version first")
    watch_s: float | None = _unset("watch_s", "seconds the canaries must pass their checks")
    approval: bool | None = _unset("approval", "wait for a person's approval in the Prefect UI before a rollout")
    max_label_share: float | None = _unset("max_label_share", "at most this share of the uploads goes to labelling")
    random_share: float | None = _unset("random_share", "of the labelling budget, the share drawn at random "
                                                        "(the rest: the edge's hard examples)")
    min_labels: int | None = _unset("min_labels", "retrain only with at least this many new labels")
    metric: str | None = _unset("metric", "the gate's metric")
    clean_margin: float | None = _unset("clean_margin", "the candidate may lose at most this much on the clean "
                                                        "holdout")
    drifted_margin: float | None = _unset("drifted_margin", "and must gain more than this on the drifted one")
    parallel_retrain: bool | None = _unset("parallel_retrain", "retrain the models due at the same time (Dask)")
    label_cap_minute: int | None = _unset("label_cap_minute", "at most this many tasks per model to labelling in "
                                                              "any minute (0: no cap)")
    label_cap_hour: int | None = _unset("label_cap_hour", "... in any hour (0: no cap)")
    label_cap_day: int | None = _unset("label_cap_day", "... in any 24 hours (0: no cap): what the labellers can do")
    drift_cooldown_s: float | None = _unset("drift_cooldown_s", "the drift watcher starts at most one run per model "
                                                                "this often")
    drift_poll_s: float | None = _unset("drift_poll_s", "the drift watcher reads the hub's drift alarms this often")
    labels_settle_s: float | None = _unset("labels_settle_s", "the loop runs on new labels once all sent are done, "
                                                              "or none came for this long")
    keys_dir: str | None = _unset("keys_dir", "the signing key directory (`edgeloop keys init`)",
                                  default="~/.config/edgeloop/keys")
    hub_url: str | None = _unset("hub_url", "the hub")
    label_studio_url: str | None = _unset("label_studio_url", "Label Studio")
    hub_token: str | None = Field(None, description="better left empty: EDGELOOP_HUB_TOKEN in the worker's "
                                                    "environment (a value here is kept in Prefect's database)")
    label_studio_token: str | None = Field(None, description="better left empty: EDGELOOP_LABEL_STUDIO_TOKEN in "
                                                             "the worker's environment")

    def config(self) -> LoopConfig:
        """The loop's configuration: these settings over EDGELOOP_* variables over the defaults."""
        return LoopConfig.from_env(**self.model_dump(exclude_none=True))


def settings(config: LoopSettings | dict[str, Any] | None) -> LoopSettings:
    """``config`` as :class:`LoopSettings` (a dict from Python callers); a wrong field is a LoopError naming it."""
    if isinstance(config, LoopSettings):
        return config
    from pydantic import ValidationError

    try:
        return LoopSettings(**(config or {}))
    except ValidationError as exc:
        wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise LoopError(f"loop settings: {wrong}") from None
