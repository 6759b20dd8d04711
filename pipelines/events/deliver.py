"""Delivery: at-least-once, signed per attempt, concurrent, with retries over days.

One pass (:func:`deliver_once`): read newly published feed days into the event log, fan out to
the active subscriptions, then claim what is due and POST it to the sinks over one pooled
``httpx.AsyncClient`` with at most ``concurrency`` requests in flight and a timeout per
attempt. Each attempt is logged (status code, latency); a 2xx is delivered, anything else is
retried after the schedule's next delay (``EventsConfig.retry_schedule``), and after the last
the delivery is a dead letter that an operator lists and replays (``recycle events``).

Each attempt is signed at its own time: ``webhook-timestamp`` is the attempt's and receivers
refuse one older than 5 minutes, so a signature made at fan-out would be stale on a retry days
later. But the body is the event's alone (``source`` is the API, not the subscription), so the
attempts of one event in the same second - a fan-out to every subscriber - share one Ed25519
signature (:class:`_SignedBodies`). Measured (benchmarks/bench_events.py, 2,000 events x 100
subscriptions): 16,054 deliveries/s per core signing each attempt, where a signature (~44 us)
was 70% of the bookkeeping; sharing it leaves one signature per event and second.

Who runs it: ``recycle serve`` in the background (every ``poll_s``: retries at any hour, over
days, while the server is up), ``recycle events deliver`` (once, or ``--loop``) for cron or a
worker, and the nightly step ``push`` right after the feed is published (one bounded pass, so
Airflow delivers the night's events even where no server runs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from number_recycling_client.events import Signer, cloud_event, event_body, sign_headers
from number_recycling_client.wire import ROLE_TIMESTAMP

from pipelines.config import Settings
from pipelines.events.config import EventsConfig
from pipelines.events.outbox import ingest_published
from pipelines.events.store import Due, EventStore, Outcome
from pipelines.events.subscriptions import Subscriptions
from pipelines.feeds.publish import load_root, role_signers

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
API = "/number-recycling/v0.2"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class PassReport:
    ingested: int = 0  # events appended to the log from newly published feed days
    fanned_out: int = 0  # deliveries created
    attempted: int = 0
    delivered: int = 0
    retried: int = 0  # failed, due again later
    dead: int = 0  # failed for the last time


def online_signers(settings: Settings) -> list[Signer]:
    """The online key(s) (the timestamp role's, which also signs manifests): read each pass,
    so a root rotation signs with both keys during the change-over (docs/events.md)."""
    root = load_root(settings)
    if root is None:
        return []
    return list(role_signers(settings, root.signed, ROLE_TIMESTAMP))


class _SignedBodies:
    """The last few thousand (event, second, keys) -> (body, headers): an event's body never
    changes (the event log is append-only), so its attempts in one second share a signature."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._done: OrderedDict[tuple[str, int, tuple[int, ...]], tuple[bytes, dict[str, str]]] = (
            OrderedDict()
        )

    def get(self, due: Due, source: str, keys: Sequence[Signer], second: int) -> tuple[bytes, dict[str, str]]:
        key = (due.event_id, second, tuple(id(k) for k in keys))
        found = self._done.get(key)
        if found is None:
            body = event_body(cloud_event(due.event_id, source, due.type, due.time, due.data))
            found = self._done[key] = (body, sign_headers(due.event_id, second, body, keys))
            if len(self._done) > self._size:
                self._done.popitem(last=False)
        return found


_SIGNED = _SignedBodies()


def request_for(
    due: Due, config: EventsConfig, keys: Sequence[Signer], now: float
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt (signed for this second; see :class:`_SignedBodies`)."""
    body, headers = _SIGNED.get(due, f"{config.public_url}{API}", keys, int(now))
    return body, dict(headers)


async def attempt(
    client: httpx.AsyncClient, due: Due, config: EventsConfig, keys: Sequence[Signer], clock: Clock
) -> Outcome:
    """One POST; never raises (a refused connection or a timeout is an outcome too)."""
    at = clock().timestamp()
    body, headers = request_for(due, config, keys, at)
    started = time.perf_counter()
    code: int | None = None
    error = None
    try:
        response = await client.post(due.sink, content=body, headers=headers)
        code = response.status_code
        if not 200 <= code < 300:
            error = f"HTTP {code}"
    except httpx.TimeoutException:
        error = f"timeout after {config.timeout_s:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    latency = (time.perf_counter() - started) * 1000
    return Outcome(due.delivery_id, due.platform, due.event_id, due.attempts + 1, at, code, error, latency)


def new_client(config: EventsConfig) -> httpx.AsyncClient:
    """The pooled client: keep-alive per sink, no redirects (a sink is the URL it registered)."""
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    return httpx.AsyncClient(timeout=config.timeout_s, limits=limits, follow_redirects=False, trust_env=False)


async def _send_batch(
    client: httpx.AsyncClient, batch: list[Due], config: EventsConfig, keys: Sequence[Signer], clock: Clock
) -> list[Outcome]:
    gate = asyncio.Semaphore(config.concurrency)

    async def one(due: Due) -> Outcome:
        async with gate:
            return await attempt(client, due, config, keys, clock)

    return list(await asyncio.gather(*(one(d) for d in batch)))


def _count(report: PassReport, outcomes: list[Outcome], config: EventsConfig) -> None:
    for o in outcomes:
        report.attempted += 1
        if o.ok:
            report.delivered += 1
        elif o.attempt >= config.max_attempts:
            report.dead += 1
            log.warning("events: %s to platform %s is a dead letter (%s)", o.event_id, o.platform, o.error)
        else:
            report.retried += 1


async def deliver_once(
    settings: Settings,
    store: EventStore,
    config: EventsConfig,
    *,
    clock: Clock = utc_now,
    client: httpx.AsyncClient | None = None,
    budget_s: float | None = None,
) -> PassReport:
    """One pass (see the module doc); stops claiming new batches after ``budget_s``."""
    report = PassReport()
    report.ingested = await asyncio.to_thread(ingest_published, settings, store)
    report.fanned_out = await asyncio.to_thread(Subscriptions(store).fan_out, clock())
    keys = await asyncio.to_thread(online_signers, settings)
    if not keys:
        return report  # no feed root yet: nothing was published, nothing to sign
    own = client is None
    client = client or new_client(config)
    started = time.monotonic()
    try:
        while budget_s is None or time.monotonic() - started < budget_s:
            batch = await asyncio.to_thread(store.claim, clock().timestamp(), config.batch, config.lease_s)
            if not batch:
                break
            outcomes = await _send_batch(client, batch, config, keys, clock)
            await asyncio.to_thread(store.record, outcomes, config.retry_schedule)
            _count(report, outcomes, config)
    finally:
        if own:
            await client.aclose()
    return report


async def delivery_loop(
    settings: Settings, store: EventStore, config: EventsConfig, clock: Clock = utc_now
) -> None:
    """Pass after pass every ``poll_s`` until cancelled (``recycle serve``'s background task).
    A pass that fails is logged and the next one tries again: the store keeps every delivery."""
    async with new_client(config) as client:
        while True:
            try:
                report = await deliver_once(settings, store, config, clock=clock, client=client)
                if report.attempted or report.ingested:
                    log.info("events: %s", report)
            except Exception:
                log.exception("events: a delivery pass failed; retrying in %g s", config.poll_s)
            await asyncio.sleep(config.poll_s)
