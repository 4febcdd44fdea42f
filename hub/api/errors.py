"""How the hub answers refusals raised below the routers: a spec the node's loader refuses, an upload item that
cannot be stored (422 with the message naming what and where) and a rollout that cannot be done (its status)."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..rollouts.controller import RolloutError
from ..specs import SpecRejected
from ..uploads import UploadError

__all__ = ["add_error_handlers"]


async def _spec(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _rollout(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RolloutError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SpecRejected, _spec)
    app.add_exception_handler(UploadError, _spec)
    app.add_exception_handler(RolloutError, _rollout)
