"""Drift seen where the data is: a model version's reference profile, made at training time and shipped in its
signed bundle, against the same histograms over a sliding window of what the node scores. No labels needed.

A profile (``drift-profile.json`` in the model's artifact directory)::

    {"format": 1, "inputs": "features" | "image-stats", "n": rows it was made from,
     "order": [the inputs in the order the model takes them],
     "features": {"temp_mean": {"edges": [...9 cut points...], "ref": [...10 shares...]}, ...},
     "confidence": {"edges": [0.1, ..., 0.9], "ref": [...]},   # P(positive class), ten equal bins
     "positive_rate": 0.12}

Table models are profiled on their input features; image and clip models on cheap statistics of the crops they
are given (``brightness``: mean grey level, ``contrast``: its standard deviation, ``sharpness``: mean absolute
difference of neighbouring pixels), which move with night, rain, glare, a dirty lens or a moved camera. Feature
bins are the reference's deciles (equal reference mass per bin: every bin is informative whatever the scale);
the confidence bins are fixed tenths of P(positive).

The score is the Population Stability Index per feature and on the confidence, PSI = sum((a - e) * ln(a / e))
over bins (``e``: reference share, ``a``: the window's; both floored at 1e-4). PSI because it is the field's
common yardstick for unlabelled shift (symmetric, additive over bins, computed from bounded histograms, with
conventional readings: below 0.1 stable, 0.1-0.25 moderate, above 0.25 significant) and it needs neither the
data nor labels. A model's drift score is the largest PSI over its inputs and its confidence: one input that
moves can break a model. With ten bins and a window of ``n`` rows a window drawn from the reference itself
scores about 9/n (sampling noise), so no score is given under ``min_rows``.

The reference is the training data's (``reference: training``, the default), or, for models trained on a few
sources and served on others (a camera's scene, a machine's own baseline: a new camera of the same street model
differs from the training clips more than night does), the first window this node scored with the version
(``reference: first``: the training's bins, the node's own shares). The first catches training/serving skew too;
the second only change after the version started, on that node.

:class:`DriftMonitor` keeps the window as ``blocks`` count arrays of ``window / blocks`` rows each and the block
being filled (bounded memory: (blocks + 1) x (inputs + 1) x 10 integers; no rows kept): the newest ``window`` to
``window + window / blocks`` rows; the oldest block is dropped as a new one closes. Image models measure a
uniform sample of at most 8 crops per batch (the monitor then costs under 5% of the CNN's throughput).
numpy only; thread-safe (several pipelines may score with one model).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PROFILE", "DriftMonitor", "image_stats", "make_profile", "psi", "write_profile"]

PROFILE = "drift-profile.json"
REFERENCES = ("training", "first")
BINS = 10
FLOOR = 1e-4
IMAGE_STATS = ("brightness", "contrast", "sharpness")


def image_stats(x: np.ndarray) -> np.ndarray:
    """``(n, 3)`` brightness, contrast and sharpness of uint8 images ``(n, H, W, C)`` or clips ``(n, T, H, W, C)``
    (a clip: its last frame), on every fourth pixel of every fourth row (what they measure is smooth at that
    scale, and it costs a few microseconds a crop)."""
    x = np.asarray(x)
    if x.ndim == 5:
        x = x[:, -1]
    if x.ndim == 3:
        x = x[..., None]
    g = x[:, ::4, ::4, :].sum(axis=3, dtype=np.int32).astype(np.float32) / np.float32(x.shape[3])  # grey
    n = len(g)
    flat = g.reshape(n, -1)
    sharp = np.abs(np.diff(g, axis=2)).reshape(n, -1).mean(axis=1) + np.abs(np.diff(g, axis=1)).reshape(n, -1).mean(axis=1)
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1), sharp]).astype(np.float64)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.full(len(counts), 1.0 / len(counts))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population Stability Index of two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _edges(col: np.ndarray) -> list[float]:
    col = col[np.isfinite(col)]
    if not len(col):
        return []
    cuts = np.unique(np.quantile(col, np.linspace(0, 1, BINS + 1)[1:-1]))
    return [float(c) for c in cuts]


def _bin(col: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin indexes 0..len(edges): how many edges are <= the value (NaN and +inf: the last bin)."""
    return np.searchsorted(edges, col, side="right")


CONF_EDGES = [round(0.1 * i, 1) for i in range(1, BINS)]


def make_profile(inputs: np.ndarray, names: list[str], p_positive: np.ndarray, *, kind: str) -> dict[str, Any]:
    """The reference profile of ``inputs`` (``(n, k)`` floats named ``names``) and P(positive) on them."""
    inputs = np.asarray(inputs, dtype=np.float64)
    features = {}
    for j, name in enumerate(names):
        edges = _edges(inputs[:, j])
        counts = np.bincount(_bin(inputs[:, j], np.asarray(edges)), minlength=len(edges) + 1)
        features[name] = {"edges": edges, "ref": [round(float(s), 6) for s in _shares(counts)]}
    conf = np.bincount(_bin(np.asarray(p_positive, dtype=np.float64), np.asarray(CONF_EDGES)), minlength=BINS)
    return {"format": 1, "inputs": kind, "n": int(len(inputs)), "order": list(names), "features": features,
            "confidence": {"edges": CONF_EDGES, "ref": [round(float(s), 6) for s in _shares(conf)]},
            "positive_rate": round(float(np.mean(np.asarray(p_positive) >= 0.5)) if len(inputs) else 0.0, 6)}


def write_profile(artifact: str | Path, X: np.ndarray, *, rows: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Profile the model at ``artifact`` on (a seeded sample of ``rows`` of) its training inputs ``X`` and write
    ``drift-profile.json`` beside it (it travels in the signed bundle). Returns the profile."""
    from .modelkit import Predictor

    artifact = Path(artifact)
    predictor = Predictor(artifact)
    X = np.asarray(X)
    if len(X) > rows:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), rows, replace=False))]
    p = predictor.proba(X)
    p1 = p[:, 1] if p.shape[1] == 2 else p.max(axis=1)
    if predictor.input == "table":
        prof = make_profile(X, predictor.features, p1, kind="features")
    else:
        prof = make_profile(image_stats(X), list(IMAGE_STATS), p1, kind="image-stats")
    (artifact / PROFILE).write_text(json.dumps(prof, sort_keys=True) + "\n")
    return prof


class DriftMonitor:
    """A model version's window of scored rows as histograms against its reference profile."""

    def __init__(self, profile: dict[str, Any], *, window: int = 2000, blocks: int = 8, min_rows: int = 200,
                 reference: str = "training") -> None:
        if reference not in REFERENCES:
            raise ValueError(f"drift reference {reference!r}: expected one of {', '.join(REFERENCES)}")
        self.reference = reference
        #: with reference "first": the shares are not the training's but those of the first window this node
        #: scored with the version (its own cameras or machines), the bins staying the training's
        self.baselined = reference == "training"
        if profile.get("format") != 1:
            raise ValueError(f"drift profile format {profile.get('format')!r}: this node reads format 1")
        self.profile = profile
        self.kind = profile.get("inputs", "features")
        self.names = list(profile["order"])  # the columns' order as the model takes them (JSON keys may be sorted)
        self._edges = [np.asarray(profile["features"][f]["edges"], dtype=np.float64) for f in self.names]
        self._ref = [np.asarray(profile["features"][f]["ref"], dtype=np.float64) for f in self.names]
        self._conf_edges = np.asarray(profile["confidence"]["edges"], dtype=np.float64)
        self._conf_ref = np.asarray(profile["confidence"]["ref"], dtype=np.float64)
        self._offsets = np.arange(len(self.names)) * BINS  # every input's bins counted by one bincount
        #: image models: at most this many crops of a batch are measured (a uniform sample: the histograms stay
        #: unbiased; a crop's statistics cost about a tenth of a small CNN's pass on it)
        self.sample = 8 if self.kind == "image-stats" else None
        self._rng = np.random.default_rng(0)
        self.block_rows = max(1, window // blocks)
        self.blocks = blocks
        self.min_rows = min_rows
        self._lock = threading.Lock()
        self._closed: list[tuple[np.ndarray, np.ndarray, int, int]] = []  # (input counts, conf counts, rows, pos)
        self._new_block()
        self.seen = 0

    def _new_block(self) -> None:
        self._f = np.zeros((len(self.names), BINS), dtype=np.int64)  # per input, bins past its edges stay 0
        self._c = np.zeros(BINS, dtype=np.int64)
        self._rows = 0
        self._pos = 0

    def update(self, inputs: np.ndarray, p_positive: np.ndarray) -> None:
        """Count a scored batch: its inputs (table rows, or images/clips for an image model) and P(positive)."""
        if not len(p_positive):
            return
        p = np.asarray(p_positive, dtype=np.float64)
        if self.sample is not None and len(p) > self.sample:
            pick = np.sort(self._rng.choice(len(p), self.sample, replace=False))
            inputs, p = np.asarray(inputs)[pick], p[pick]
        stats = image_stats(inputs) if self.kind == "image-stats" else np.asarray(inputs, dtype=np.float64)
        k = len(self.names)
        # the whole batch binned once (searchsorted per input, on contiguous columns), counted per block below
        cols = np.ascontiguousarray(stats.T)
        bins = np.empty(cols.shape, dtype=np.intp)
        for j, e in enumerate(self._edges):
            bins[j] = e.searchsorted(cols[j], side="right")
        bins += self._offsets[:, None]
        conf = self._conf_edges.searchsorted(p, side="right")
        with self._lock:
            start = 0
            while start < len(p):  # a batch larger than a block fills several
                take = min(len(p) - start, self.block_rows - self._rows)
                part = slice(start, start + take)
                self._f += np.bincount(bins[:, part].ravel(), minlength=k * BINS).reshape(k, BINS)
                self._c += np.bincount(conf[part], minlength=BINS)
                self._rows += take
                self._pos += int(np.count_nonzero(p[part] >= 0.5))
                start += take
                if self._rows >= self.block_rows:
                    self._closed.append((self._f, self._c, self._rows, self._pos))
                    if len(self._closed) > self.blocks:
                        self._closed.pop(0)
                    self._new_block()
            self.seen += len(p)
            if not self.baselined and self.seen >= self.block_rows * self.blocks:
                self._baseline()

    def _baseline(self) -> None:
        """Reference "first": the window so far becomes the reference (held lock); counting starts again."""
        parts = [*self._closed, (self._f, self._c, self._rows, self._pos)]
        f = np.sum([p[0] for p in parts], axis=0)
        self._ref = [_shares(np.asarray(f[j][:len(r)], dtype=np.float64)) for j, r in enumerate(self._ref)]
        self._conf_ref = _shares(np.sum([p[1] for p in parts], axis=0).astype(np.float64))
        rows = sum(p[2] for p in parts)
        self.profile = {**self.profile, "positive_rate": round(sum(p[3] for p in parts) / rows, 6) if rows else None}
        self._closed = []
        self._new_block()
        self.baselined = True

    def summary(self) -> dict[str, Any]:
        """What a heartbeat carries: rows in the window, PSI per input and on the confidence, the positive rate
        (window and reference), and ``score`` (the largest PSI; None under ``min_rows``) with the input it is."""
        with self._lock:
            parts = [*self._closed, (self._f, self._c, self._rows, self._pos)]
            rows = sum(p[2] for p in parts)
            pos = sum(p[3] for p in parts)
            f = np.sum([p[0] for p in parts], axis=0)
            c = np.sum([p[1] for p in parts], axis=0)
        out: dict[str, Any] = {"rows": int(rows), "seen": int(self.seen), "window": self.block_rows * self.blocks,
                               "positive_rate": round(pos / rows, 4) if rows else None,
                               "ref_positive_rate": self.profile.get("positive_rate"), "inputs": self.kind}
        out["reference"] = self.reference if self.baselined else "first (still learning it)"
        if rows < self.min_rows or not self.baselined:
            return out | {"score": None, "psi": {}, "psi_confidence": None, "worst": None}
        per = {n: round(psi(r, _shares(np.asarray(a[:len(r)]))), 4) for n, r, a in zip(self.names, self._ref, f)}
        conf = round(psi(self._conf_ref, _shares(np.asarray(c))), 4)
        worst = max(per, key=lambda k: per[k]) if per else None
        score, what = max(((per[worst], worst) if worst else (0.0, None)), (conf, "confidence"))
        return out | {"score": round(score, 4), "worst": what, "psi": per, "psi_confidence": conf}


def load_monitor(artifact: str | Path, **kw: Any) -> DriftMonitor | None:
    """The monitor for the model at ``artifact`` when its bundle has a profile (None without one, or with one
    this node cannot read: drift is then simply not measured for that version)."""
    f = Path(artifact) / PROFILE
    if not f.is_file():
        return None
    try:
        return DriftMonitor(json.loads(f.read_text()), **kw)
    except (OSError, ValueError, KeyError, TypeError):
        return None
