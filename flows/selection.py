"""Which uploads to label (the loop's ``collect`` step): a sample that covers what the model sees now, and the
edge's hard examples spread over it; what is left unlabelled is kept for self-training.

- :func:`strata`: groups of similar uploads. Table models: k-means clusters of the standardised features
  (about four labels per cluster); image and clip models: each device's uploads in time order (consecutive
  frames of a camera are near duplicates, so spreading over time is what makes a sample diverse).
- :func:`pick`: the random share of the budget drawn *stratified*: the uploads ordered by stratum, then by
  their fixed random key (tables) or by time (images), and every ``n / k``-th taken, so each cluster, device
  and period gets its share and no two picks are near duplicates; the rest of the budget: the edge's hard
  examples (low confidence), least confident first, one per stratum in turn.
- :func:`save_pool`: the uploads not sent to labelling (table models' features), for the trainer's
  self-training (confident predictions on them become pseudo-labels, :mod:`models.kit`).

Why stratified rather than least-confident first: on the SYNTHETIC pump scenario (6,048 drifted windows, 10%
labelled, three seeds of the world and four of the draw) half random and half the champion's least confident
recovered 0.957 of the oracle's drifted accuracy (0.92 on the hardest world), a uniform sample 0.971, k-means
stratified 0.966-0.977; under drift the champion is confidently wrong, so its low confidence points at the old
boundary, not at what changed. A deployment whose model has not drifted may want a larger hard share
(``random_share`` below 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import LoopConfig

__all__ = ["POOL_DIR", "choose", "features_of", "pick", "save_pool", "strata"]

POOL_DIR = "unlabelled"  # under data/labelled/<model>/: what was collected and not sent to labelling
LABELS_PER_CLUSTER = 4


def features_of(items: Sequence[dict[str, Any]], features: Sequence[str]) -> np.ndarray | None:
    """The ``(n, features)`` float64 matrix of the items' values; None when a value is missing or not finite."""
    try:
        X = np.array([[float(p["values"][f]) for f in features] for p in items], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    X = X.reshape(len(items), len(features))
    return X if np.isfinite(X).all() else None


def strata(items: Sequence[dict[str, Any]], budget: int, features: Sequence[str] | None = None) -> np.ndarray:
    """One group id per item: k-means clusters of the features (``features`` given and present in every item,
    ``budget / 4`` clusters, seeded) or else the item's device."""
    n = len(items)
    X = features_of(items, features) if features else None
    k = min(n, max(1, budget // LABELS_PER_CLUSTER))
    if X is not None and k >= 2:
        from sklearn.cluster import MiniBatchKMeans

        scale = X.std(axis=0)
        Z = (X - X.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
        km = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=3, batch_size=1024)
        return np.asarray(km.fit_predict(Z), dtype=np.int64)
    _, groups = np.unique(np.array([str(p.get("device")) for p in items]), return_inverse=True)
    return np.asarray(groups, dtype=np.int64)


def _systematic(n: int, k: int) -> np.ndarray:
    """``k`` evenly spaced positions in ``range(n)`` (the middle of each of ``k`` equal runs)."""
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    step = n / min(k, n)
    return np.unique((np.arange(min(k, n)) * step + step / 2).astype(np.int64))


def choose(cfg: LoopConfig, model: str, pool: Sequence[tuple[float, dict[str, Any]]],
           hard: Sequence[dict[str, Any]], budget: int, tag: Any, features: Sequence[str] | None
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """collect's choice: ``(hard, random)`` among ``pool`` (``(fixed random key, item)`` of every fresh upload)
    and ``hard`` (the edge's hard examples, as items) by :func:`pick` with ``cfg.random_share``; ``features``:
    a table model's (None: an image or clip model, drawn over time per device). A table model's uploads left
    unlabelled go to :func:`save_pool` (``pool-<tag>``: a re-run from the same watermark
    writes the same file)."""
    items = [p for _, p in pool]
    by_id = {p["id"]: p for p in hard}
    hard_ids = {p["id"] for p in items if p["id"] in by_id}
    got_hard, got_random = pick(items, [k for k, _ in pool], hard_ids, budget, cfg.random_share,
                                features=features, by_time=not features)
    got_hard = [by_id[p["id"]] for p in got_hard]  # with the edge's reason
    if features:
        chosen = {p["id"] for p in got_hard + got_random}
        save_pool(cfg.root, model, features, [p for p in items if p["id"] not in chosen], f"pool-{tag}")
    return got_hard, got_random


def pick(candidates: Sequence[dict[str, Any]], keys: Sequence[float], hard_ids: set[str], budget: int,
         random_share: float, *, features: Sequence[str] | None = None, by_time: bool = False
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(hard, random)``: the items to label among ``candidates`` (every fresh upload; ``keys[i]``: its fixed
    random number, :func:`flows.collect.sample_key`), ``budget`` of them at most. ``round(budget * random_share)``
    drawn stratified over :func:`strata` (within a stratum: by key, or by time when ``by_time``); the rest
    from ``hard_ids`` (the edge's hard examples), least confident first, one stratum after another. When
    there are too few hard examples the stratified draw fills the budget."""
    n = len(candidates)
    budget = min(budget, n)
    if budget <= 0:
        return [], []
    group = strata(candidates, budget, features)
    within = np.array([float(p.get("ts") or 0.0) for p in candidates]) if by_time else np.asarray(keys, dtype=float)
    order = np.lexsort((within, group))  # by stratum, then by key (or time)
    n_random = int(round(budget * random_share))
    # the hard share first: least confident first, taking strata in turn
    hard_pos = [i for i in range(n) if candidates[i]["id"] in hard_ids]
    hard_pos.sort(key=lambda i: (candidates[i].get("confidence") if candidates[i].get("confidence") is not None
                                 else 1.0, keys[i]))
    rank: dict[int, int] = {}
    turn: list[tuple[int, int, int]] = []
    for i in hard_pos:
        g = int(group[i])
        rank[g] = rank.get(g, -1) + 1
        turn.append((rank[g], len(turn), i))
    hard = [candidates[i] for _, _, i in sorted(turn)[: budget - n_random]]
    taken = {p["id"] for p in hard}
    rest = [i for i in order if candidates[i]["id"] not in taken]
    picks = [rest[j] for j in _systematic(len(rest), budget - len(hard))]
    return hard, [candidates[i] for i in picks]


def save_pool(root: Path, model: str, features: Sequence[str], items: Sequence[dict[str, Any]], name: str) -> int:
    """The table features of ``items`` (uploads nobody will label) as ``data/labelled/<model>/unlabelled/<name>.npz``
    (``X``, ``ids``): the trainer's pool for pseudo-labels. Items without every feature are left out. Returns
    the rows written (0: nothing written)."""
    keep = [p for p in items if all(isinstance(p["values"].get(f), (int, float)) for f in features)]
    X = features_of(keep, features) if keep else None
    if X is None or not len(X):
        return 0
    folder = root / "data" / "labelled" / model / POOL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{name}.npz", X=X.astype(np.float32), ids=np.array([p["id"] for p in keep]))
    return len(X)
