"""Who is asking: the bearer token names a platform, its scopes say what it may call and its
rate limit how often. Every refusal is written to the audit log before it is answered.

CAMARA's split: 401 ``UNAUTHENTICATED`` when the request proves no identity (no bearer token,
or one the store does not know or has revoked: "missing, invalid, or expired credentials"),
403 ``PERMISSION_DENIED`` only for a known platform whose token lacks the scope.
"""

from __future__ import annotations

from fastapi import Request

from pipelines.server.camara import ApiError
from pipelines.server.platforms import Platform
from pipelines.server.state import server_state


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorize(request: Request, scope: str, action: str) -> Platform:
    """The platform behind the request's token, if it holds ``scope`` and is within its rate;
    otherwise audit ``action`` as refused and raise the 401, 403 or 429."""
    state = server_state(request.app)
    audit = state.audit
    token = bearer_token(request)
    corr = request.headers.get("x-correlator")
    if token is None:
        state.metrics.token_checked(None, scope, "no_token")
        audit.record(None, action, status=401, path=request.url.path, correlator=corr)
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            "Request not authenticated due to missing, invalid, "
            "or expired credentials: send Authorization: Bearer <platform token>",
        )
    platform = state.tokens.authenticate(token)
    if platform is None:
        state.metrics.token_checked(None, scope, "unknown_token")
        audit.record(
            None,
            action,
            status=401,
            path=request.url.path,
            correlator=corr,
            reason="unknown or revoked token",
        )
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            "Request not authenticated due to missing, invalid, or expired credentials: "
            "the token is unknown or was revoked; ask the carrier for a new platform token",
        )
    request.state.platform = platform.name  # for the request's log line
    if scope not in platform.scopes:
        state.metrics.token_checked(platform.name, scope, "missing_scope")
        audit.record(
            platform.name,
            action,
            status=403,
            path=request.url.path,
            correlator=corr,
            reason=f"missing scope {scope}",
        )
        raise ApiError(403, "PERMISSION_DENIED", f"this platform's token does not have the {scope!r} scope")
    wait = state.limiter.take(platform.name, platform.rate, platform.burst)
    if wait is not None:
        state.metrics.token_checked(platform.name, scope, "rate_limited")
        audit.record(platform.name, action, status=429, path=request.url.path, correlator=corr)
        raise ApiError(
            429,
            "TOO_MANY_REQUESTS",
            f"rate limit of {platform.rate:g} requests/s exceeded; retry after {wait} s",
            {"Retry-After": str(wait)},
        )
    state.metrics.token_checked(platform.name, scope, "allowed")
    return platform
