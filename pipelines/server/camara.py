"""What every endpoint shares with CAMARA: the API base path, errors answered as an ErrorInfo
body ``{status, code, message}`` and the ``x-correlator`` header echoed on every response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import RecycleError
from pipelines.server.metrics import masked_path

log = logging.getLogger(__name__)

API = "/number-recycling/v0.2"
_CORRELATOR = re.compile(rb"[a-zA-Z0-9\-_:;./<>{}]{0,256}")


class ApiError(Exception):
    """An error answered as a CAMARA ErrorInfo body ``{status, code, message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"status": self.status, "code": self.code, "message": self.message},
            status_code=self.status,
            headers=self.headers,
        )


# --------------------------------------------------------------------------- request bodies

# How long a whole request body may take to arrive: a client that trickles bytes holds a
# connection and a buffer, so it is cut off (408). 60 s moves the largest body (40 MB bulk)
# at 5.3 Mbit/s; create_app(body_timeout_s=...) changes it.
BODY_TIMEOUT_S = 60.0


async def read_body(request: Request, limit: int, too_large: ApiError, timeout_s: float) -> bytes:
    """The request body, read chunk by chunk and refused with ``too_large`` as soon as it passes
    ``limit`` bytes (or its Content-Length says it will): a 1 GB chunked upload costs at most
    ``limit`` plus one chunk of memory, not the gigabyte. 408 when it takes over ``timeout_s``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408, "REQUEST_TIMEOUT", f"the request body did not arrive within {timeout_s:g} s"
        ) from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """``body`` as JSON, or a 400 that says why. Nesting deeper than the parser's recursion
    limit (about 1,000 levels; every request shape here is 3 deep) is a RecursionError inside
    ``json.loads``: a client mistake, never a 500."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "INVALID_ARGUMENT", "the request body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, "INVALID_ARGUMENT", "the request body is JSON nested too deeply") from None


# --------------------------------------------------------------------------- exception handlers


# Routes audit their own refusals (with the platform and what was asked); what reaches these
# handlers did not get that far (no route, a wrong method, a failure), so it is audited here:
# every 4xx and 5xx has an audit line. The path is masked like the access log's.


def audit_refusal(app: Any, scope: Scope, status: int, code: str) -> None:
    state = scope.get("state") or {}
    app.state.server.audit.record(
        state.get("platform"),
        "refused" if status < 500 else "error",
        path=masked_path(scope["path"]),
        method=scope["method"],
        status=status,
        code=code,
    )


async def api_error(request: Request, exc: ApiError) -> Response:
    return exc.response()


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_ARGUMENT")
    audit_refusal(request.app, request.scope, exc.status_code, code)
    return ApiError(exc.status_code, code, str(exc.detail)).response()


async def recycle_error(request: Request, exc: RecycleError) -> Response:
    log.error("server error: %s", exc.diagnostics())
    audit_refusal(request.app, request.scope, 503, "UNAVAILABLE")
    return ApiError(503, "UNAVAILABLE", "the service cannot answer right now").response()


async def internal_error(request: Request, exc: Exception) -> Response:
    """Any other exception: a CAMARA 500, never a traceback. Starlette's ServerErrorMiddleware
    calls this, then re-raises, so the traceback is in the server's log (uvicorn logs it)."""
    audit_refusal(request.app, request.scope, 500, "INTERNAL")
    return ApiError(500, "INTERNAL", "Unknown server error: the carrier has logged it").response()


# --------------------------------------------------------------------------- middleware


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class CorrelatorMiddleware:
    """Echo a valid ``x-correlator`` on every response; refuse an invalid one (CAMARA)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = next((v for k, v in scope["headers"] if k == b"x-correlator"), None)
        if value is None:
            await self.app(scope, receive, send)
            return
        if not _CORRELATOR.fullmatch(value):
            err = ApiError(
                400, "INVALID_ARGUMENT", "x-correlator does not match ^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$"
            )
            audit_refusal(scope["app"], scope, err.status, err.code)
            await err.response()(scope, receive, send)
            return

        async def send_with_correlator(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-correlator", value)]
            await send(message)

        await self.app(scope, receive, send_with_correlator)
