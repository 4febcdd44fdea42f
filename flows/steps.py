"""The agile loop's steps as plain functions (the Prefect flows in :mod:`flows.loop` wrap them), one module each:

collect -> label (:mod:`flows.collect`) -> harvest (:mod:`flows.harvest`) -> retrain (:mod:`flows.retrain`, with
DVC in :mod:`flows.dvc`) -> gate -> package -> rollout (:mod:`flows.ship`). Each takes a :class:`LoopConfig` and
the :class:`~flows.state.LoopState`, does its part, records it in the state and returns a summary dict for the
loop report. Every step can be run again: what the state says is done is not redone.
"""

from __future__ import annotations

from .collect import MEDIA_FIELD, collect, descriptor, label, model_output, sample_key
from .config import LoopConfig, LoopError, hub_call
from .harvest import harvest
from .retrain import before_parallel_retrain, register_candidate, retrain, retrain_due, train_stages
from .ship import gate, gate_decision, package, rollout

__all__ = ["MEDIA_FIELD", "LoopConfig", "LoopError", "before_parallel_retrain", "collect",
           "descriptor", "gate", "gate_decision", "harvest", "hub_call", "label", "model_output", "package",
           "register_candidate", "retrain", "retrain_due", "rollout", "sample_key", "train_stages"]
