"""The hub's ASGI app: :func:`create_app` composes the API's routers (:mod:`hub.api`, one per resource) and the
dashboard's (:mod:`hub.dashboard`) into one FastAPI app, with the request body limits, request metrics and
error handlers. An app holds its :class:`~hub.core.Hub`, rollout controller and request statistics in
``app.state``, where the routers' dependencies (:mod:`hub.api.deps`) find them.

The routes are built once per process and shared by every app made here: they are handed to FastAPI as they
are (``routes=``) rather than through ``include_router``, which builds each route again for every app (tens
of milliseconds an app, and the tests make hundreds). So what an include would add to each route is on the
routers themselves (:func:`hub.api.deps.hub_router`: the URL's NUL check first, as an app-wide dependency
did).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import dashboard
from .api import drift, metrics, nodes, pipelines, products, rollouts, tokens, uploads, warehouse
from .api.errors import add_error_handlers
from .api.limits import BodyLimit
from .core import Hub, HubSettings
from .metrics import RequestMetrics, RequestStats
from .rollouts.controller import RolloutController

__all__ = ["DESCRIPTION", "create_app"]

DESCRIPTION = """The hub's HTTP API (FastAPI): nodes, tokens, products, pipelines, assignments, uploads, media.

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>``. The admin
token may do everything; a node token may only register, heartbeat, read its own
desired state and write its own uploads and media. Errors are 4xx with a
``detail`` message that says what is wrong and where; nothing is stored half-way.
"""

ROUTERS = (warehouse.router, dashboard.router, metrics.router, tokens.router, nodes.router, uploads.router,
           products.router, pipelines.router, rollouts.router, drift.router)
ROUTES = [route for router in ROUTERS for route in router.routes]


def create_app(settings: HubSettings | None = None, hub: Hub | None = None) -> FastAPI:
    """The hub's app over ``hub`` (made from ``settings``, or the environment's, when not given). Under a server
    its lifespan runs the rollout controller."""
    settings = settings or HubSettings.from_env()
    hub = hub or Hub(settings)
    controller = RolloutController(hub)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        controller.start()  # under a server (uvicorn); a TestClient outside `with` runs no lifespan
        try:
            yield
        finally:
            controller.stop()

    app = FastAPI(title="EdgeLoop hub", version="1", description=DESCRIPTION, routes=ROUTES, lifespan=lifespan)
    app.state.hub = hub
    app.state.rollouts = controller
    app.state.request_stats = stats = RequestStats()
    app.add_middleware(BodyLimit, max_body=settings.max_body, max_media=settings.max_media,
                       max_bundle=settings.max_bundle)
    app.add_middleware(RequestMetrics, stats=stats)
    add_error_handlers(app)
    dashboard.add_error_handlers(app)
    return app
