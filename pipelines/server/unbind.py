"""One-click unbinding over HTTP (docs/events.md, "One-click unbinding"):
``POST /unbind-requests`` and ``GET /unbind-requests/{requestId}``.

No platform token: the holder's unbind token (``Authorization: Bearer``) is the credential
(:mod:`pipelines.events.unbind_token`). 401 for a token that is missing, forged, expired or for
another purpose; 403 for a valid token whose number or tenure is not the request's (CAMARA's
``INVALID_TOKEN_CONTEXT`` when the body names another number); a request of another tenure
answers 404 like an unknown id. Rate-limited per client address before the token is even
decrypted (a guesser pays before we do), and per number after. The number is audited masked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pipelines.events.unbind import get_request, progress, request_unbind
from pipelines.events.unbind_token import HolderToken, UnbindTokenError, verify_token
from pipelines.server.auth import bearer_token
from pipelines.server.camara import API, ApiError, parse_json, read_body
from pipelines.server.state import ServerState, server_state

MAX_UNBIND_BODY = 1024  # {"phoneNumber": "+86..."} or nothing
# Per number (POST only: what sends events): a holder presses a button, a few a minute is
# plenty. Per client address, generous: a carrier's app backend sends every holder's request
# from one address, and guessing a token (a 256-bit HMAC) is hopeless anyway; this only keeps
# a flood from costing us the decryption.
NUMBER_RATE, NUMBER_BURST = 0.2, 5
CLIENT_RATE, CLIENT_BURST = 50.0, 200

router = APIRouter()


def _limit(state: ServerState, key: str, rate: float, burst: int) -> None:
    wait = state.limiter.take(key, rate, burst)
    if wait is not None:
        raise ApiError(
            429,
            "TOO_MANY_REQUESTS",
            f"too many unbind requests; retry after {wait} s",
            {"Retry-After": str(wait)},
        )


def _holder(request: Request, action: str, *, per_number: bool = False) -> HolderToken:
    """The verified holder behind the request (401), within the rates (429)."""
    state = server_state(request.app)
    corr = request.headers.get("x-correlator")
    try:
        client = request.client.host if request.client else "-"
        _limit(state, f"unbind-client:{client}", CLIENT_RATE, CLIENT_BURST)
        holder = verify_token(state.settings.data_dir, bearer_token(request), state.clock())
        if per_number:
            _limit(state, f"unbind-number:{holder.msisdn}", NUMBER_RATE, NUMBER_BURST)
    except UnbindTokenError as exc:
        state.audit.record(None, action, status=exc.status, code=exc.code, correlator=corr)
        raise ApiError(exc.status, exc.code, str(exc)) from None
    except ApiError as exc:
        state.audit.record(None, action, status=exc.status, code=exc.code, correlator=corr)
        raise
    return holder


async def _named_number(request: Request, state: ServerState, holder: HolderToken) -> None:
    """An optional body ``{"phoneNumber": …}`` must name the token's number (403)."""
    too_large = ApiError(400, "INVALID_ARGUMENT", f"the body is larger than {MAX_UNBIND_BODY} bytes")
    body = await read_body(request, MAX_UNBIND_BODY, too_large, state.body_timeout_s)
    if not body.strip():
        return
    parsed = parse_json(body)
    if not isinstance(parsed, dict) or set(parsed) - {"phoneNumber"}:
        raise ApiError(400, "INVALID_ARGUMENT", "the body may hold only phoneNumber")
    if "phoneNumber" in parsed and parsed["phoneNumber"] != holder.msisdn:
        raise ApiError(403, "INVALID_TOKEN_CONTEXT", "phoneNumber is not consistent with the unbind token")


def _created(state: ServerState, holder: HolderToken) -> tuple[dict[str, Any], bool]:
    unbind, new = request_unbind(state.settings, state.events, holder, state.events_config, state.clock())
    return progress(state.settings, state.events, unbind, state.clock()), new


async def create_unbind_request(request: Request) -> Response:
    state = server_state(request.app)
    holder = _holder(request, "unbind_request", per_number=True)
    corr = request.headers.get("x-correlator")
    try:
        await _named_number(request, state, holder)
        answer, new = await run_in_threadpool(_created, state, holder)
    except UnbindTokenError as exc:
        state.audit.record(None, "unbind_request", number=holder.msisdn, status=exc.status, correlator=corr)
        raise ApiError(exc.status, exc.code, str(exc)) from None
    except ApiError as exc:
        state.audit.record(None, "unbind_request", number=holder.msisdn, status=exc.status, correlator=corr)
        raise
    status = 201 if new else 200  # 200: this tenure's request already exists, nothing re-sent
    state.audit.record(
        None, "unbind_request", number=holder.msisdn, status=status, request=answer["id"], correlator=corr
    )
    headers = {"Location": f"{API}/unbind-requests/{answer['id']}"}
    return JSONResponse(answer, status_code=status, headers=headers)


async def get_unbind_request(request: Request) -> Response:
    state = server_state(request.app)
    holder = _holder(request, "unbind_progress")
    rid: str = request.path_params["requestId"]
    found = await run_in_threadpool(get_request, state.events, rid)
    if found is None or (found.msisdn, found.since) != (holder.msisdn, holder.since):
        state.audit.record(None, "unbind_progress", number=holder.msisdn, status=404, code="NOT_FOUND")
        raise ApiError(404, "NOT_FOUND", f"no unbind request {rid[:64]!r} for this token's holder")
    answer = await run_in_threadpool(progress, state.settings, state.events, found, state.clock())
    state.audit.record(None, "unbind_progress", number=holder.msisdn, status=200, request=rid)
    return JSONResponse(answer)


# Plain Starlette routes like check; the OpenAPI operations are in pipelines.server.openapi.
router.add_route(
    f"{API}/unbind-requests", create_unbind_request, methods=["POST"], name="createUnbindRequest"
)
router.add_route(
    f"{API}/unbind-requests/{{requestId}}", get_unbind_request, methods=["GET"], name="retrieveUnbindRequest"
)
