"""The platform server: static feeds and ledger tiles, CAMARA check, bulk check with receipts,
and platforms' acknowledgements.

``create_app(settings)`` builds the FastAPI app; ``recycle serve`` runs it under uvicorn. The
server never opens the nightly DuckDB file: it answers from the query snapshot
(``pipelines.feeds.query_snapshot``), reads tokens from ``<data>/server/platforms.sqlite``, and appends
every download and query to ``<data>/server/audit/<UTC day>.jsonl`` with numbers masked, and
keeps acknowledgements in ``<data>/server/acknowledgements.sqlite`` (``pipelines.compliance.notifications``).

One module per concern, each route a module-level function reading what the app holds from
``request.app.state.server`` (:mod:`pipelines.server.state`): ``auth`` (token, scope, rate
limit), ``check`` (CAMARA check, status), ``bulk`` (bulk check, query receipts), ``acks``
(acknowledgements), ``files`` (feeds and ledger files), ``camara`` (ErrorInfo, x-correlator),
``openapi`` (the committed document), ``metrics`` (Prometheus ``/metrics`` and the one log line
per request).

Regenerate the committed OpenAPI document after changing an endpoint::

    .venv/bin/python -m pipelines.server.app --openapi > schemas/openapi.json
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import errno
import functools
import gc
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.compliance.notifications import AckStore
from pipelines.config import Settings
from pipelines.errors import RecycleError, TerminalError
from pipelines.events.config import EventsConfig
from pipelines.events.outbox import open_store
from pipelines.feeds.query_snapshot import SnapshotHolder
from pipelines.layout import Layout
from pipelines.server import acks, bulk, check, files, index, metrics, subscriptions
from pipelines.server.camara import (
    BODY_TIMEOUT_S,
    ApiError,
    CorrelatorMiddleware,
    api_error,
    http_error,
    internal_error,
    recycle_error,
)
from pipelines.server.metrics import RequestMetricsMiddleware, ServerMetrics
from pipelines.server.openapi import DESCRIPTION, openapi_bytes, openapi_document
from pipelines.server.platforms import AuditLog, RateLimiter, TokenStore, utc_now
from pipelines.server.state import ETags, ReceiptKeys, ServerState, server_state

log = logging.getLogger(__name__)


def loaded_summary(state: ServerState) -> str:
    """What the server answers from, for its start-up log line."""
    status = state.snapshots.status()
    where = f"data dir {state.settings.data_dir}"
    if status["loaded"] is None:
        why = status["error"] or "none is published yet"
        return (
            f"{where}: no query snapshot ({why}); /check answers 503 until a nightly run "
            "publishes one (recycle run --date YYYY-MM-DD)"
        )
    return (
        f"{where}: query snapshot {status['loaded']} as_of {status['as_of']}, "
        f"{status['tenures']} tenures of {status['numbers']} numbers, feed seq {status['feed_seq']}"
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = server_state(app)
    await run_in_threadpool(state.snapshots.load_now)
    log.info("%s", loaded_summary(state))
    # Everything allocated so far lives as long as the server: keep it out of the cyclic
    # GC's full collections, which otherwise show up as multi-millisecond latency spikes.
    gc.freeze()
    delivery = None
    if app.state.deliver_events:
        from pipelines.events.deliver import delivery_loop

        delivery = asyncio.create_task(delivery_loop(state.settings, state.events, state.events_config))
        log.info("events: delivering in the background every %g s", state.events_config.poll_s)
    yield
    if delivery is not None:
        delivery.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivery
    state.close()


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    snapshot_check_s: float = 1.0,
    body_timeout_s: float = BODY_TIMEOUT_S,
    events_config: EventsConfig | None = None,
    deliver_events: bool = False,
) -> FastAPI:
    """The server app. ``clock`` gives wall-clock UTC (today's date for range checks, audit and
    receipt times); ``monotonic`` drives the rate limiter. ``deliver_events`` runs the event
    delivery loop in the background while the app runs (``recycle serve`` does)."""
    layout = Layout(settings.data_dir)
    snapshots = SnapshotHolder(layout.snapshot_dir, snapshot_check_s)
    state = ServerState(
        settings=settings,
        layout=layout,
        clock=clock,
        tokens=TokenStore.open(settings.data_dir, clock),
        audit=AuditLog.open(settings.data_dir, clock),
        acks=AckStore.open(settings.data_dir),
        limiter=RateLimiter(monotonic),
        snapshots=snapshots,
        receipt_keys=ReceiptKeys(settings),
        etags=ETags(),
        metrics=ServerMetrics(snapshots, settings, clock),
        events=open_store(settings),
        events_config=events_config or EventsConfig.from_env(),
        body_timeout_s=body_timeout_s,
    )
    app = FastAPI(
        title="Number recycling: feeds, CAMARA check and bulk check",
        version="0.2.0",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(CorrelatorMiddleware)
    # Added last, so outermost: it also counts and logs what the correlator check refuses.
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    app.state.server = state
    app.state.deliver_events = deliver_events
    # The stores by name too, as before the split (the e2e tests flush the audit log here).
    app.state.tokens = state.tokens
    app.state.audit = state.audit
    app.state.acks = state.acks
    app.state.snapshot = state.snapshots
    app.exception_handler(ApiError)(api_error)
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(RecycleError)(recycle_error)
    app.exception_handler(Exception)(internal_error)
    routers = (
        check.router,
        bulk.router,
        acks.router,
        subscriptions.router,
        files.router,
        check.status_router,
        metrics.router,
        index.router,
    )
    for router in routers:
        app.include_router(router)
    app.openapi = functools.partial(openapi_document, app)  # type: ignore[method-assign]
    return app


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` as uvicorn binds it, or a TerminalError that names the
    option to change: bound here, so a port in use is one line, not uvicorn's traceback."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        # Short enough for one line of an 80-column terminal after "error: ".
        if exc.errno == errno.EADDRINUSE:
            message = f"port {port} is in use; choose another: recycle serve --port {port + 1}"
        elif exc.errno == errno.EACCES:
            message = f"port {port} needs privileges; choose one above 1023: recycle serve --port 8081"
        else:
            message = f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port"
        raise TerminalError(message) from None
    return sock


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with this package's INFO lines (start-up, one line per request,
    snapshot reloads) on the same handler."""
    import uvicorn.config

    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["pipelines"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


# Slow clients. An idle keep-alive connection is closed after KEEP_ALIVE_S (uvicorn's timer
# runs from the end of a response to the next request's first byte); a request body has
# camara.BODY_TIMEOUT_S to arrive (408). uvicorn 0.54 has no deadline for the request line and
# headers of a new connection: that phase needs a reverse proxy's client_header_timeout.
KEEP_ALIVE_S = 5.0
GRACEFUL_SHUTDOWN_S = 10.0  # Ctrl+C or SIGTERM: requests in flight get this long


def uvicorn_config(app: FastAPI, host: str, port: int, *, keep_alive_s: float = KEEP_ALIVE_S) -> Any:
    """The uvicorn configuration ``serve`` runs with (also what the tests serve with)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=log_config(),
        log_level="info",
        access_log=False,
        timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]  # uvicorn types it int, uses a float
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
    )


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    sock = listen_socket(host, port)
    config = uvicorn_config(create_app(settings, deliver_events=True), host, port)
    shown = f"[{host}]" if ":" in host else host
    log.info("serving on http://%s:%d (Ctrl+C to stop); metrics at /metrics (scope metrics)", shown, port)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":  # pragma: no cover - the OpenAPI export
    if sys.argv[1:] == ["--openapi"]:
        import tempfile

        from pipelines.config import load_settings

        with tempfile.TemporaryDirectory() as tmp:  # the document does not depend on any data
            sys.stdout.write(openapi_bytes(create_app(load_settings(env={}, data_dir=Path(tmp)))).decode())
    else:
        sys.stderr.write("usage: python -m pipelines.server.app --openapi > schemas/openapi.json\n")
        sys.exit(2)


__all__ = [
    "create_app",
    "lifespan",
    "serve",
]
