"""The BentoML service of ``intrusion`` (see :mod:`models.services.base`)."""

from models.services.base import make_service

Intrusion = make_service("intrusion", "Intrusion", __name__)
