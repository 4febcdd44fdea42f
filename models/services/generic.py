"""The BentoML service of every model, trained here or imported (see :mod:`models.services.base`), named after the
model its Bento carries: ``EDGELOOP_BENTO_MODEL``, set while packaging and in the Bento's environment when BentoML
serves it, else read from the ``envs`` of the Bento this file lies in (``bentoml.load`` in a process of one's own
does not apply them)."""

import os
from pathlib import Path

from models.services.base import make_service


def _model_tag() -> str:
    tag = os.environ.get("EDGELOOP_BENTO_MODEL")
    if tag:
        return tag
    info = Path(__file__).resolve().parents[3] / "bento.yaml"  # <bento>/src/models/services/generic.py
    if info.is_file():
        import yaml

        for env in (yaml.safe_load(info.read_text()) or {}).get("envs") or []:
            if isinstance(env, dict) and env.get("name") == "EDGELOOP_BENTO_MODEL" and env.get("value"):
                return str(env["value"])
    return "model:latest"


Model = make_service(_model_tag().split(":", 1)[0], "Model", __name__)
