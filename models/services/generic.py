"""The BentoML service of every model, trained here or imported (see :mod:`models.services.base`), named after the
model its Bento carries (``EDGELOOP_BENTO_MODEL``, set while packaging and in the Bento's environment)."""

import os

from models.services.base import make_service

Model = make_service(os.environ.get("EDGELOOP_BENTO_MODEL", "model:latest").split(":", 1)[0], "Model", __name__)
