"""The BentoML service of ``activity`` (see :mod:`models.services.base`)."""

from models.services.base import make_service

Activity = make_service("activity", "Activity", __name__)
