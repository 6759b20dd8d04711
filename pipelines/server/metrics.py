"""What operators watch: Prometheus metrics at ``/metrics`` and one log line per request.

Every app has its own ``CollectorRegistry`` (never the process-wide default), so two apps in one
process — the tests start several — count separately. Requests are labelled by the route's
template (``/feeds/{rel:path}``), never the raw path: a raw path would make one series per file
and could carry a number. ``/metrics`` needs a token with the ``metrics`` scope, which
``recycle platform add`` does not grant by default: the series name the platforms and their
volumes, which is the carrier's business, not a platform's (docs/feeds.md, "Metrics").
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match

from pipelines.config import Settings
from pipelines.feeds.query_snapshot import SnapshotHolder
from pipelines.numbers import mask
from pipelines.server.platforms import Clock

access_log = logging.getLogger("pipelines.server.access")

METRICS_SCOPE = "metrics"
UNMATCHED = "<unmatched>"  # the endpoint label of a path no route serves (a 404)
# Latency buckets (seconds): a check is answered in about a millisecond, a feed file in tens.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Any other method a client invents is counted as OTHER: labels must stay a small set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A run of digits long enough to be a phone number, with an optional + or %2B before it.
_NUMBER_IN_PATH = re.compile(r"(?:\+|%2[Bb])?\d{7,}")

router = APIRouter()


class SnapshotCollector(Collector):
    """The loaded query snapshot, read at scrape time (no reload is started by a scrape)."""

    def __init__(self, snapshots: SnapshotHolder, settings: Settings, clock: Clock) -> None:
        self._snapshots = snapshots
        self._settings = settings
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        status = self._snapshots.status()
        loaded = GaugeMetricFamily(
            "recycle_query_snapshot_loaded", "1 when a query snapshot is loaded, 0 before the first one"
        )
        loaded.add_metric([], 0 if status["loaded"] is None else 1)
        yield loaded
        if status["loaded"] is None:
            return
        as_of = dt.date.fromisoformat(status["as_of"])
        day_end = self._settings.day_start(as_of + dt.timedelta(days=1))
        info = GaugeMetricFamily(
            "recycle_query_snapshot_info",
            "The loaded query snapshot (always 1)",
            labels=["as_of", "snapshot"],
        )
        info.add_metric([status["as_of"], status["loaded"]], 1)
        yield info
        yield GaugeMetricFamily(
            "recycle_query_snapshot_as_of_timestamp_seconds",
            "Start of the snapshot's carrier day (as_of), Unix time",
            value=self._settings.day_start(as_of).timestamp(),
        )
        yield GaugeMetricFamily(
            "recycle_query_snapshot_age_seconds",
            "Seconds since the end of the snapshot's carrier day: about 0 after the nightly run, "
            "over 86400 when a night was missed",
            value=(self._clock() - day_end).total_seconds(),
        )
        yield GaugeMetricFamily(
            "recycle_query_snapshot_tenures", "Tenures in the loaded snapshot", value=status["tenures"]
        )


class ServerMetrics:
    """The app's registry and its series; ``observe`` is called once per request."""

    def __init__(self, snapshots: SnapshotHolder, settings: Settings, clock: Clock) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recycle_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recycle_http_request_duration_seconds",
            "Time to answer a request, by method and route template",
            ["method", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.token_use = Counter(
            "recycle_platform_requests",
            "Token checks by platform, scope asked for and outcome "
            "(allowed, no_token, unknown_token, missing_scope, rate_limited)",
            ["platform", "scope", "outcome"],
            registry=self.registry,
        )
        self.registry.register(SnapshotCollector(snapshots, settings, clock))

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, endpoint, str(status)).inc()
        self.latency.labels(method, endpoint).observe(seconds)

    def token_checked(self, platform: str | None, scope: str, outcome: str) -> None:
        self.token_use.labels(platform or "none", scope, outcome).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    # Imported here: state (and auth, through it) holds a ServerMetrics, so a module-level
    # import would be circular.
    from pipelines.server.auth import authorize
    from pipelines.server.state import server_state

    authorize(request, METRICS_SCOPE, "metrics")
    return Response(server_state(request.app).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


# --------------------------------------------------------------------------- per request


def route_template(scope: MutableMapping[str, Any]) -> str:
    """The template of the route that served ``scope`` (FastAPI records it; a plain Starlette
    route, like the CAMARA check, is matched again here), else ``UNMATCHED``."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    partial = UNMATCHED
    for candidate in getattr(scope.get("app"), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(candidate.path)
        if match is Match.PARTIAL and partial == UNMATCHED:  # the path matched, the method did not
            partial = str(candidate.path)
    return partial


def masked_path(path: str) -> str:
    """``path`` with every number-like run of digits masked (``pipelines.numbers.mask``)."""
    return _NUMBER_IN_PATH.sub(lambda m: mask(m.group(0).replace("%2B", "+").replace("%2b", "+")), path)


def access_line(method: str, endpoint: str, path: str, status: int, platform: str | None, ms: float) -> str:
    """One request as operators read it; an unmatched path is shown masked, for finding typos."""
    where = endpoint if endpoint != UNMATCHED else f"{UNMATCHED} {masked_path(path)}"
    return f"{method} {where} {status} platform={platform or '-'} {ms:.1f}ms"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestMetricsMiddleware:
    """Counts, times and logs every HTTP request once, after it was answered (or failed).

    The platform comes from ``scope["state"]["platform"]``, which ``auth.authorize`` sets."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: ServerMetrics
    ) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        state = scope.setdefault("state", {})

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            endpoint = route_template(scope)
            self.metrics.observe(scope["method"], endpoint, status, seconds)
            line = access_line(
                scope["method"], endpoint, scope["path"], status, state.get("platform"), seconds * 1e3
            )
            access_log.info("%s", line)


__all__ = [
    "METRICS_SCOPE",
    "RequestMetricsMiddleware",
    "ServerMetrics",
    "access_line",
    "masked_path",
    "route_template",
    "router",
]
