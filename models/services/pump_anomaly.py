"""The BentoML service of ``pump_anomaly`` (see :mod:`models.services.base`)."""

from models.services.base import make_service

PumpAnomaly = make_service("pump_anomaly", "PumpAnomaly", __name__)
