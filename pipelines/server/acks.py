"""Acknowledgements: platforms report, per number, what they did after the feed told them
(unbound, no_account, step_up_enabled). Stored in ``<data>/server/acknowledgements.sqlite``
(:mod:`pipelines.compliance.notifications`) only when every item of the request is valid.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pipelines.compliance.notifications import (
    MAX_ACK_ITEMS,
    STATUSES,
    AckReceipt,
    read_acknowledgements,
    validate_acknowledgements,
)
from pipelines.errors import DataContractError
from pipelines.feeds.publish import FeedPaths
from pipelines.server.auth import authorize
from pipelines.server.camara import API, ApiError, read_body
from pipelines.server.state import ServerState, server_state

MAX_ACK_BODY = 32 * 1024 * 1024  # 100,000 JSON acknowledgements with every field are about 13 MB

router = APIRouter()


def _valid_acknowledgements(
    state: ServerState, body: bytes, content_type: str, received: dt.datetime
) -> pa.Table:
    try:
        upload = read_acknowledgements(body, content_type)
        if upload.rows.num_rows > MAX_ACK_ITEMS:
            raise ApiError(
                400,
                "OUT_OF_RANGE",
                f"{upload.rows.num_rows} acknowledgements; at most {MAX_ACK_ITEMS} per request",
            )
        return validate_acknowledgements(
            upload, published=FeedPaths.of(state.settings).published_days(), now=received
        )
    except DataContractError as exc:
        raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
    except RecursionError:  # json.loads in read_acknowledgements, on deeply nested JSON
        raise ApiError(400, "INVALID_ARGUMENT", "the request body is JSON nested too deeply") from None


def _audit_fields(receipt: AckReceipt, valid: pa.Table) -> dict[str, Any]:
    statuses = valid.column("status").to_pylist()
    fields: dict[str, Any] = {
        "items": receipt.accepted,
        "stored": receipt.stored,
        "batch": receipt.batch_id,
        "request_sha256": receipt.request_sha256,
        "counts": {s: statuses.count(s) for s in STATUSES},
    }
    if receipt.accepted == 1:
        fields["number"] = valid.column("msisdn")[0].as_py()  # masked by the audit writer
    return fields


def _store(
    state: ServerState, platform: str, body: bytes, content_type: str, received: dt.datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate and store one upload (in the thread pool): the receipt and the audit fields."""
    valid = _valid_acknowledgements(state, body, content_type, received)
    receipt = state.acks.add(platform, valid, received, "api")
    return receipt.to_dict(), _audit_fields(receipt, valid)


async def acknowledgements(request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "ack", "acknowledge")
    corr = request.headers.get("x-correlator")
    received = state.clock()
    try:
        too_large = ApiError(400, "OUT_OF_RANGE", f"the body is larger than {MAX_ACK_BODY} bytes")
        body = await read_body(request, MAX_ACK_BODY, too_large, state.body_timeout_s)
        content_type = request.headers.get("content-type", "application/json")
        answer, fields = await run_in_threadpool(_store, state, platform.name, body, content_type, received)
    except ApiError as exc:
        state.audit.record(platform.name, "acknowledge", status=exc.status, code=exc.code, correlator=corr)
        raise
    state.audit.record(platform.name, "acknowledge", status=200, correlator=corr, **fields)
    return JSONResponse(answer)


# A plain Starlette route, like check (see pipelines.server.check).
router.add_route(f"{API}/acknowledgements", acknowledgements, methods=["POST"], name="acknowledgeNumbers")
