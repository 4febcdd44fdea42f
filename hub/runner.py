"""``edgeloop hub serve``: the API (uvicorn) and, when a broker is configured, the MQTT ingest, in one process."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from .core import Hub, HubSettings

__all__ = ["serve", "run_ingest"]

log = logging.getLogger("edgeloop.hub")


def serve(settings: HubSettings, *, host: str = "127.0.0.1", port: int = 8080, ingest: bool = True,
          log_level: str = "warning") -> None:
    import faulthandler

    import uvicorn

    from .app import create_app

    faulthandler.register(signal.SIGUSR2, all_threads=True)  # `kill -USR2 <pid>`: every thread's stack to stderr

    hub = Hub(settings)
    app = create_app(settings, hub)
    worker = None
    if ingest and settings.broker:
        from .ingest import Ingest

        worker = Ingest(hub.engine, group=settings.ingest_group, **_broker_kw(settings.broker)).start()
        app.state.ingest = worker
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_keep_alive=75, limit_concurrency=2000,
                            timeout_graceful_shutdown=5)  # open dashboard event streams must not hold a stop
    server = uvicorn.Server(config)
    log.info("hub API on http://%s:%d (database %s)", host, port, _safe_url(settings.db_url))
    import gc

    gc.collect()
    gc.freeze()  # start-up objects (the app, SQLAlchemy, pydantic) leave the collector's view: shorter pauses
    try:
        server.run()
    finally:
        if worker is not None:
            worker.stop()
        hub.close()


def run_ingest(settings: HubSettings) -> None:
    """A standalone ingest process (several share the broker's load through the shared subscription)."""
    from .db import make_engine, migrate
    from .ingest import Ingest

    if not settings.broker:
        raise ValueError("an ingest process needs a broker")
    engine = make_engine(settings.db_url)
    migrate(engine)
    worker = Ingest(engine, group=settings.ingest_group, **_broker_kw(settings.broker)).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(5):
        log.info("ingest: %s", worker.stats())
    worker.stop()


def _broker_kw(b: dict[str, Any]) -> dict[str, Any]:
    return {k: b[k] for k in ("host", "port", "username", "password") if b.get(k) is not None}


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
