"""``pump_anomaly``: the reference scikit-learn model that flags anomalous pump telemetry windows.

The model reads per-device tumbling-window features (``<channel>_<fn>`` for temperature, vibration and
current with mean, std, min and max: see :mod:`models.pump_anomaly.features`), the same values EdgeLoop's
``time_window`` + ``aggregate`` operators compute at the edge, and predicts whether a fault is active in
the window.

The data is SYNTHETIC (:mod:`models.synth.telemetry`): seeded, simulated pump telemetry with exact ground
truth. Metrics measured on it show that the training and evaluation code works and how the model reacts to
simulated sensor ageing; they are not field performance.

* :mod:`models.pump_anomaly.features` -- ``FEATURES`` and ``matrix()``;
* :mod:`models.pump_anomaly.train` -- datasets, training, evaluation and the
  ``python -m models.pump_anomaly.train --out DIR`` entry point.
"""

from models.pump_anomaly.features import FEATURES, matrix

__all__ = ["FEATURES", "matrix"]
