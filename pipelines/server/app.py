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
``openapi`` (the committed document).

Regenerate the committed OpenAPI document after changing an endpoint::

    .venv/bin/python -m pipelines.server.app --openapi > schemas/openapi.json
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.compliance.notifications import AckStore
from pipelines.config import Settings
from pipelines.errors import RecycleError
from pipelines.feeds.query_snapshot import SnapshotHolder
from pipelines.layout import Layout
from pipelines.server import acks, bulk, check, files
from pipelines.server.camara import ApiError, CorrelatorMiddleware, api_error, http_error, recycle_error
from pipelines.server.openapi import DESCRIPTION, openapi_bytes, openapi_document
from pipelines.server.platforms import AuditLog, RateLimiter, TokenStore, utc_now
from pipelines.server.state import ETags, ReceiptKeys, ServerState, server_state


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = server_state(app)
    await run_in_threadpool(state.snapshots.load_now)
    # Everything allocated so far lives as long as the server: keep it out of the cyclic
    # GC's full collections, which otherwise show up as multi-millisecond latency spikes.
    gc.freeze()
    yield
    state.close()


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    snapshot_check_s: float = 1.0,
) -> FastAPI:
    """The server app. ``clock`` gives wall-clock UTC (today's date for range checks, audit and
    receipt times); ``monotonic`` drives the rate limiter."""
    layout = Layout(settings.data_dir)
    state = ServerState(
        settings=settings,
        layout=layout,
        clock=clock,
        tokens=TokenStore.open(settings.data_dir, clock),
        audit=AuditLog.open(settings.data_dir, clock),
        acks=AckStore.open(settings.data_dir),
        limiter=RateLimiter(monotonic),
        snapshots=SnapshotHolder(layout.snapshot_dir, snapshot_check_s),
        receipt_keys=ReceiptKeys(settings),
        etags=ETags(),
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
    app.state.server = state
    # The stores by name too, as before the split (the e2e tests flush the audit log here).
    app.state.tokens = state.tokens
    app.state.audit = state.audit
    app.state.acks = state.acks
    app.state.snapshot = state.snapshots
    app.exception_handler(ApiError)(api_error)
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(RecycleError)(recycle_error)
    for router in (check.router, bulk.router, acks.router, files.router, check.status_router):
        app.include_router(router)
    app.openapi = functools.partial(openapi_document, app)  # type: ignore[method-assign]
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)


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
