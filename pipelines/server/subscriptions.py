"""CAMARA subscriptions over HTTP (docs/events.md): ``POST/GET /subscriptions``,
``GET/DELETE /subscriptions/{subscriptionId}``, scope ``subscriptions``. A platform sees and
deletes only its own; another platform's id answers 404 like an unknown one. The model lives
in :mod:`pipelines.events.subscriptions`; these routes parse, authorise, audit and answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pipelines.events.subscriptions import SubscriptionError, Subscriptions
from pipelines.server.auth import authorize
from pipelines.server.camara import API, ApiError, parse_json, read_body
from pipelines.server.state import server_state

MAX_SUBSCRIPTION_BODY = 16 * 1024  # a SubscriptionRequest is a few hundred bytes

router = APIRouter()


def _not_found(sid: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"no subscription {sid[:64]!r} of this platform")


async def create_subscription(request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "subscriptions", "subscribe")
    corr = request.headers.get("x-correlator")
    try:
        too_large = ApiError(
            400, "INVALID_ARGUMENT", f"the body is larger than {MAX_SUBSCRIPTION_BODY} bytes"
        )
        body = parse_json(await read_body(request, MAX_SUBSCRIPTION_BODY, too_large, state.body_timeout_s))
        subs = Subscriptions(state.events)
        sub = await run_in_threadpool(subs.create, platform.name, body, state.events_config, state.clock())
    except SubscriptionError as exc:
        err = ApiError(exc.status, exc.code, str(exc))
        state.audit.record(platform.name, "subscribe", status=err.status, code=err.code, correlator=corr)
        raise err from None
    except ApiError as exc:
        state.audit.record(platform.name, "subscribe", status=exc.status, code=exc.code, correlator=corr)
        raise
    state.audit.record(platform.name, "subscribe", status=201, subscription=sub.id, correlator=corr)
    return JSONResponse(sub.to_json(), status_code=201)


async def list_subscriptions(request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "subscriptions", "subscriptions")
    subs = await run_in_threadpool(Subscriptions(state.events).list, platform.name)
    state.audit.record(platform.name, "subscriptions", status=200, count=len(subs))
    return JSONResponse([s.to_json() for s in subs])


async def get_subscription(request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "subscriptions", "subscription")
    sid: str = request.path_params["subscriptionId"]
    sub = await run_in_threadpool(Subscriptions(state.events).get, platform.name, sid)
    if sub is None:
        state.audit.record(platform.name, "subscription", status=404, code="NOT_FOUND", subscription=sid[:64])
        raise _not_found(sid)
    state.audit.record(platform.name, "subscription", status=200, subscription=sid)
    return JSONResponse(sub.to_json())


async def delete_subscription(request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "subscriptions", "unsubscribe")
    sid: str = request.path_params["subscriptionId"]
    fields: dict[str, Any] = {"subscription": sid[:64]}
    deleted = await run_in_threadpool(Subscriptions(state.events).delete, platform.name, sid, state.clock())
    if not deleted:
        state.audit.record(platform.name, "unsubscribe", status=404, code="NOT_FOUND", **fields)
        raise _not_found(sid)
    state.audit.record(platform.name, "unsubscribe", status=204, **fields)
    return Response(status_code=204)


# Plain Starlette routes, like check (see pipelines.server.check): the OpenAPI operations are
# written out in pipelines.server.openapi with CAMARA's schemas.
router.add_route(f"{API}/subscriptions", create_subscription, methods=["POST"], name="createSubscription")
router.add_route(f"{API}/subscriptions", list_subscriptions, methods=["GET"], name="retrieveSubscriptionList")
router.add_route(
    f"{API}/subscriptions/{{subscriptionId}}", get_subscription, methods=["GET"], name="retrieveSubscription"
)
router.add_route(
    f"{API}/subscriptions/{{subscriptionId}}",
    delete_subscription,
    methods=["DELETE"],
    name="deleteSubscription",
)
