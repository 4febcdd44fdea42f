"""The window features of ``pump_anomaly``, named as EdgeLoop's ``aggregate`` operator names its outputs.

An edge pipeline computes them with::

    - device_input: {}
    - time_window: {size: 600s}
    - aggregate: {temperature: [mean, std, min, max], vibration: [mean, std, min, max],
                  current: [mean, std, min, max]}

:data:`AGGREGATE_SPEC` is that ``aggregate`` mapping. ``std`` is the population standard deviation in both
EdgeLoop and :func:`models.synth.windows`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

CHANNELS: tuple[str, ...] = ("temperature", "vibration", "current")
FUNCTIONS: tuple[str, ...] = ("mean", "std", "min", "max")

FEATURES: list[str] = [f"{ch}_{fn}" for ch in CHANNELS for fn in FUNCTIONS]
"""Model input columns, in order: ``<field>_<fn>`` exactly as ``aggregate`` names them."""

AGGREGATE_SPEC: dict[str, list[str]] = {ch: list(FUNCTIONS) for ch in CHANNELS}
"""The ``aggregate`` step parameters that produce :data:`FEATURES`."""


def matrix(windows_dict: Mapping[str, object]) -> np.ndarray:
    """The ``(n_windows, len(FEATURES))`` float32 model input from columns keyed by feature name.

    ``windows_dict`` is what :func:`models.synth.windows` returns, or any mapping of feature name to a
    column (e.g. gathered from aggregate output records). A missing feature raises ``KeyError``.
    """
    missing = [f for f in FEATURES if f not in windows_dict]
    if missing:
        raise KeyError(f"missing window features: {missing}")
    cols = [np.asarray(windows_dict[f], dtype=np.float64) for f in FEATURES]
    if len({c.shape for c in cols}) != 1 or cols[0].ndim != 1:
        raise ValueError("window features must be 1-d columns of equal length")
    return np.stack(cols, axis=1).astype(np.float32)
