"""The CAMARA NumberRecycling check (one number, one date) and ``/status``, which says which
query snapshot the answers come from.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi import APIRouter, Request, Response

from pipelines.feeds.answer import Verdict
from pipelines.feeds.query_snapshot import SnapshotIndex
from pipelines.server.auth import authorize
from pipelines.server.camara import API, ApiError, parse_json, read_body
from pipelines.server.platforms import PHONE_PATTERN
from pipelines.server.state import ServerState, server_state

MAX_CHECK_BODY = 16 * 1024  # bytes
# Always fullmatch: PHONE_PATTERN ends in "$", which in Python also matches before a final
# newline, while JSON Schema (ECMA-262) reads it as the end of input.
PHONE = re.compile(PHONE_PATTERN)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

router = APIRouter()
status_router = APIRouter()  # included last, where the routes stood before the split


def parse_date(value: Any, field: str) -> dt.date:
    """The one date rule of every endpoint (check here, bulk-check per distinct date): an
    RFC 3339 full-date that is a real calendar date from 0001-01-01 on. Arrow's date cast,
    which bulk once used, took ``0000-01-01`` that Python refuses: one function, one answer."""
    if not isinstance(value, str) or not DATE.fullmatch(value):
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} must be a date YYYY-MM-DD (RFC 3339 full-date)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} {value!r} is not a calendar date") from None


def _check_request(body: bytes) -> dict[str, Any]:
    """The JSON object of a check request, which must name specifiedDate."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "the request body must be a JSON object")
    if "specifiedDate" not in doc:
        raise ApiError(400, "INVALID_ARGUMENT", "specifiedDate is required")
    return doc


def _check_phone(doc: dict[str, Any]) -> str:
    if "phoneNumber" not in doc:
        # a two-legged token identifies no subscriber, so the body must (CAMARA)
        raise ApiError(
            422,
            "MISSING_IDENTIFIER",
            "The phone number cannot be identified: "
            "send phoneNumber (a platform token does not identify a subscriber)",
        )
    phone = doc["phoneNumber"]
    if not isinstance(phone, str) or not PHONE.fullmatch(phone):
        raise ApiError(400, "INVALID_ARGUMENT", f"phoneNumber must be E.164 matching {PHONE_PATTERN}")
    return phone


def _recycled(state: ServerState, index: SnapshotIndex, phone: str, day: dt.date) -> bool:
    """The one rule's answer (:mod:`pipelines.feeds.answer`) in CAMARA's words."""
    if day > state.today(index):
        raise ApiError(400, "OUT_OF_RANGE", "specifiedDate is in the future")
    got = index.answer(int(phone[1:]), day)
    if got.verdict == Verdict.NOT_OURS:
        raise ApiError(404, "IDENTIFIER_NOT_FOUND", "Phone number not found.")
    if got.verdict == Verdict.NO_DATA:
        raise ApiError(
            400,
            "OUT_OF_RANGE",
            f"specifiedDate is before {got.first_date}, the first date this service can answer for "
            "this number (before it, another carrier held it or it was not yet on record)",
        )
    return got.verdict == Verdict.TRUE


# check, bulk-check and acknowledgements are plain Starlette routes: they parse their own bodies
# (to answer CAMARA error codes, not FastAPI's 422) and skip FastAPI's per-request dependency
# solving; their OpenAPI operations are written out in pipelines.server.openapi.
async def check(request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "check", "check")
    fields: dict[str, Any] = {"correlator": request.headers.get("x-correlator")}
    number: str | None = None  # masked by the audit writer
    try:
        too_large = ApiError(
            400, "INVALID_ARGUMENT", f"the request body is larger than {MAX_CHECK_BODY} bytes"
        )
        body = await read_body(request, MAX_CHECK_BODY, too_large, state.body_timeout_s)
        doc = _check_request(body)
        day = parse_date(doc["specifiedDate"], "specifiedDate")
        fields["date"] = day.isoformat()
        number = _check_phone(doc)
        index = state.snapshot()
        recycled = _recycled(state, index, number, day)
    except ApiError as exc:
        state.audit.record(platform.name, "check", number=number, status=exc.status, code=exc.code, **fields)
        raise
    state.audit.record(
        platform.name,
        "check",
        number=number,
        status=200,
        recycled=recycled,
        snapshot=index.meta.as_of.isoformat(),
        **fields,
    )
    return Response(
        b'{"phoneNumberRecycled":true}' if recycled else b'{"phoneNumberRecycled":false}',
        media_type="application/json",
    )


router.add_route(f"{API}/check", check, methods=["POST"], name="checkNumberRecycling")


# /status stays open but says only which snapshot answers. It is the readiness probe (the
# README's start-up wait, `make demo`, a load balancer) and those hold no token; the counts of
# tenures and numbers are the carrier's business figures (on /metrics, scope `metrics`) and a
# load error names local paths (in the server's log), so neither is shown here.
PUBLIC_STATUS = ("loaded", "as_of", "data_from", "feed_seq")


@status_router.get("/status", operation_id="getStatus")
def status(request: Request) -> dict[str, Any]:
    holder = server_state(request.app).snapshots
    holder.current()
    full = holder.status()
    return {"snapshot": {key: full[key] for key in PUBLIC_STATUS if key in full}}
