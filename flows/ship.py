"""The loop's last steps: ``gate`` (the candidate against the champion on the fixed holdouts), ``package`` (a signed
BentoML bundle into the hub's warehouse) and ``rollout`` (canary first, through the hub's rollout controller)."""

from __future__ import annotations

from typing import Any

from .config import LoopConfig, LoopError, hub_call
from .harvest import field_folder

__all__ = ["gate", "gate_decision", "package", "rollout", "serving_alias"]


def gate(cfg: LoopConfig, model: str) -> dict[str, Any]:
    """Candidate (``challenger``) vs ``champion`` on the fixed holdouts: promoted only when it is not worse
    on clean (by more than ``clean_margin``) and better on drifted (by more than ``drifted_margin``)."""
    from models import tracking

    cand = tracking.alias_version(model, "challenger", cfg.root)
    champ = tracking.alias_version(model, "champion", cfg.root)
    if cand is None:
        return {"promoted": False, "why": "no candidate"}
    m = cfg.metric
    if cand == champ:
        if [v["version"] for v in tracking.list_versions(model, cfg.root)] == [cand]:
            # the model's first version (the cold start): champion since its evaluation, never shipped yet
            ci = tracking.version_info(model, cand, cfg.root)["metrics"]
            return {"promoted": True, "candidate": cand, "champion": None, "metric": m,
                    "candidate_clean": ci.get(f"clean.{m}"), "candidate_drifted": ci.get(f"drifted.{m}"),
                    "why": f"the first version of {model}: nothing to beat"}
        return {"promoted": False, "why": f"version {cand} is already the champion", "champion": champ}
    ci = tracking.version_info(model, cand, cfg.root)["metrics"]
    pi = tracking.version_info(model, champ, cfg.root)["metrics"] if champ else {}
    remeasured = False
    if champ and field_folder(cfg, model) is not None:
        # field data: the holdouts grew with the labels the candidate was trained with; the champion is measured
        # again on the same holdouts (its own figures are from smaller, older ones)
        import tempfile
        from pathlib import Path

        from models.stages import holdout_metrics

        with tempfile.TemporaryDirectory(prefix="edgeloop-champion-") as tmp:
            pi = holdout_metrics(cfg.root, model, tracking.download(model, champ, Path(tmp), cfg.root))
        remeasured = True
    figures = {"candidate": cand, "champion": champ, "metric": m, "candidate_clean": ci.get(f"clean.{m}"),
               "candidate_drifted": ci.get(f"drifted.{m}"), "champion_clean": pi.get(f"clean.{m}"),
               "champion_drifted": pi.get(f"drifted.{m}")}
    ok, why = gate_decision(figures, cfg.clean_margin, cfg.drifted_margin)
    if remeasured:
        figures["champion_remeasured"] = True
    if not ok:
        return {"promoted": False, **figures, "why": why}
    if not cfg.group:  # nothing will serve it: the registry's best is the champion now
        tracking.promote(model, cand, workdir=cfg.root)
    # with a group, the champion alias moves once the group serves the version (rollout)
    return {"promoted": True, **figures, "why": why, "champion_moved": not cfg.group}


def gate_decision(f: dict[str, Any], clean_margin: float, drifted_margin: float) -> tuple[bool, str]:
    """Promote when the candidate is not worse on clean (by more than ``clean_margin``) and better on
    drifted (by more than ``drifted_margin``); the first candidate of a model without champion passes."""
    m = f["metric"]
    c_clean, c_drift, p_clean, p_drift = (f["candidate_clean"], f["candidate_drifted"], f["champion_clean"],
                                          f["champion_drifted"])
    if c_clean is None or c_drift is None:
        return False, f"candidate {f['candidate']} has no clean/drifted {m}"
    if f["champion"] is None or p_clean is None or p_drift is None:
        return True, "no champion to beat"
    if c_clean < p_clean - clean_margin:
        return False, f"worse on clean: {m} {c_clean:.3f} < {p_clean:.3f} - {clean_margin}"
    if c_drift <= p_drift + drifted_margin:
        return False, f"not better on drifted: {m} {c_drift:.3f} <= {p_drift:.3f} + {drifted_margin}"
    return True, f"drifted {m} {p_drift:.3f} -> {c_drift:.3f}, clean {p_clean:.3f} -> {c_clean:.3f}"


def package(cfg: LoopConfig, model: str, version: str) -> dict[str, Any]:
    """BentoML build + export + sign, uploaded to the hub's warehouse (idempotent: a version already there
    is reported, not rebuilt)."""
    from edge_runtime.hubclient import HubError
    from models import bento

    hub = cfg.hub()
    try:
        meta = hub_call(cfg, lambda: hub.get(f"/api/v1/models/{model}/versions/{version}"))
        return {"packaged": False, "why": "already in the warehouse", "sha256": meta.get("sha256")}
    except HubError as exc:
        if exc.status != 404:
            raise
    keys = cfg.keys()
    if not (keys / "signing.key").exists():
        from edge_runtime.signing import init_keys

        init_keys(keys)
    shipped = hub_call(cfg, lambda: bento.package(model, version, workdir=cfg.root, keys_dir=keys,
                                                   out_dir=cfg.root / "var" / "bundles", client=hub))
    return {"packaged": True, **{k: v for k, v in shipped.items() if isinstance(v, (str, int, float))}}


def rollout(cfg: LoopConfig, model: str, version: str, *, timeout: float = 1800) -> dict[str, Any]:
    """Canary, then the whole group, through the hub's rollout controller (the CLI's code path); waits for
    the end. Offline nodes are reported as waiting, never as done."""
    if not cfg.group:
        return {"rolled_out": False, "why": "no group configured"}
    from hub.client import start_rollout, wait_rollout

    hub = cfg.hub()
    started = hub_call(cfg, lambda: start_rollout(hub, model, version, cfg.group, canary=cfg.canary,
                                                   watch_s=cfg.watch_s))
    final = hub_call(cfg, lambda: wait_rollout(hub, started["id"], timeout))
    out = {"rolled_out": final.get("state") in ("done", "done_with_offline"), "rollout": started["id"],
           "state": final.get("state"), "waiting": final.get("waiting") or [], "why": final.get("reason")}
    from models import tracking

    if not out["rolled_out"]:
        champ = tracking.alias_version(model, "champion", cfg.root)
        raise LoopError(f"{model}:{version}: rollout {started['id']} to group {cfg.group} ended "
                        f"{final.get('state')}: {final.get('reason') or 'no reason given'}; the group serves "
                        f"{final.get('previous') or 'what it had'} and the champion stays "
                        f"{champ or 'unset'} (`edgeloop rollout status {started['id']}`)")
    tracking.promote(model, version, workdir=cfg.root)  # the group serves it: now it is the champion
    # and the registry says which version each group serves: an alias moves with it (one version per alias)
    tracking.promote(model, version, alias=serving_alias(cfg.group), workdir=cfg.root)
    return out | {"champion": version}


def serving_alias(group: str) -> str:
    """The MLflow alias naming the version ``group`` serves (aliases take letters, digits, _ and -)."""
    import re

    return "serving-" + re.sub(r"[^\w-]", "-", group)
