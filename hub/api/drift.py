"""Model drift (admin): the scores nodes report, per model, version and node over time, the alarm, and its
settings (:mod:`hub.drift`)."""

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, Field

from ..db import DriftSettings
from ..drift import drift_settings, drift_view
from .deps import Admin, Db, hub_router
from .names import NAME

__all__ = ["router"]

router = hub_router(tags=["drift"])

ModelName = Annotated[str, Path(pattern=NAME)]


class DriftSettingsPut(BaseModel):
    threshold: float = Field(ge=0.01, le=100, description="drift score (PSI) above which a model has drifted; "
                                                          "0.1-0.25 reads as moderate, above 0.25 as significant")
    sustain_s: float = Field(ge=0, le=7 * 86400, description="seconds the score must stay above the threshold "
                                                             "before the alarm is raised (one spike is not drift)")


@router.get("/api/v1/models/{name}/drift")
def get_drift(name: ModelName, s: Db, _: Admin,
              since: Annotated[float | None, Query(ge=0, le=1e11, description="unix seconds (default: 24 h ago)")] = None,
              node: Annotated[str | None, Query(pattern=NAME)] = None,
              limit: Annotated[int, Query(ge=1, le=100000)] = 5000) -> dict[str, Any]:
    """The model's drift: its threshold and sustain time, per node the newest score (the largest PSI over the
    model's inputs and its confidence, and which input that is) and whether the alarm is raised (over the
    threshold for ``sustain_s``), and the series per node and version."""
    return drift_view(s, name, since=since, node=node, limit=limit)


@router.put("/api/v1/models/{name}/drift/settings")
def put_drift_settings(name: ModelName, body: DriftSettingsPut, s: Db, _: Admin) -> dict[str, Any]:
    """Set the model's drift threshold and how long the score must stay over it."""
    import time

    row = s.get(DriftSettings, name) or DriftSettings(model=name)
    row.threshold, row.sustain_s, row.updated_at = body.threshold, body.sustain_s, time.time()
    s.add(row)
    s.commit()
    return {"model": name, **drift_settings(s, name)}
