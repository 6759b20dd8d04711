"""Events from the published feed: each night's ``notices.parquet`` (pending / withdrawn, by
the pending list's ``seq``) and ``recycled.parquet`` (released / reissued, by the feed's
``seq``) become rows of the event log, in that order.

Read from the published, signed day files rather than the state file: the server never opens
the state file, the events then say exactly what the feed says (same seq, same risk grade),
and producing is idempotent (an event's id is its stream and seq; a day is read once, and a
re-read appends nothing). Days published before the store existed are not turned into events:
no subscription could have been waiting for them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
from number_recycling_client.events import TYPE_PREFIX, event_id, event_time
from number_recycling_client.wire import day_start

from pipelines.config import Settings
from pipelines.events.store import EventStore
from pipelines.feeds.grade import risk_grade
from pipelines.feeds.publish import DAILY_PARQUET, NOTICES_PARQUET, FeedPaths

log = logging.getLogger(__name__)

_START = "ingest_after"  # meta: the newest feed day published when the store was created


def _iso(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def notice_events(day: dt.date, rows: list[dict[str, Any]]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    time = event_time(day_start(day))
    for r in rows:
        data: dict[str, Any] = {"phoneNumber": r["msisdn"], "disconnectedOn": _iso(r["disconnected_on"])}
        if r["event"] == "pending":
            data |= {"earliestReleaseOn": _iso(r["earliest_release_on"]), "cause": r["cause"]}
        else:
            data["withdrawnOn"] = day.isoformat()
        yield event_id(r["event"], r["seq"]), TYPE_PREFIX + r["event"], time, data


def recycled_events(
    day: dt.date, rows: list[dict[str, Any]]
) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    time = event_time(day_start(day))
    for r in rows:
        grade = risk_grade(
            r.get("reminders_reached") or 0,
            bool(r.get("release_exception")),
            bool(r.get("violation")),
            r.get("prior_end"),
        )
        on = "releasedOn" if r["event"] == "released" else "reissuedOn"
        date = r["released_on"] if r["event"] == "released" else r["reissued_on"]
        data = {
            "phoneNumber": r["msisdn"],
            on: _iso(date),
            "priorEnd": r.get("prior_end"),
            "risk": grade.to_json(),
        }
        yield event_id(r["event"], r["seq"]), TYPE_PREFIX + r["event"], time, data


def day_events(paths: FeedPaths, day: dt.date) -> list[tuple[str, str, str, dict[str, Any]]]:
    """A published day's events: its notices by seq, then its recycled rows by seq."""
    folder = paths.day_dir(day)
    events: list[tuple[str, str, str, dict[str, Any]]] = []
    if (folder / NOTICES_PARQUET).exists():
        rows = pq.read_table(folder / NOTICES_PARQUET).sort_by("seq").to_pylist()
        events.extend(notice_events(day, rows))
    rows = pq.read_table(folder / DAILY_PARQUET).sort_by("seq").to_pylist()
    events.extend(recycled_events(day, rows))
    return events


def open_store(settings: Settings) -> EventStore:
    """The events store; a new one starts after the newest day published now (history is not
    news: no subscription could have been waiting for it)."""
    store = EventStore.open(settings.data_dir)
    if store.meta(_START) is None:
        published = FeedPaths.of(settings).published_days()
        store.set_meta(_START, published[-1].isoformat() if published else "")
    return store


def ingest_published(settings: Settings, store: EventStore) -> int:
    """Append the events of every published day not yet read (after the store's start)."""
    published = FeedPaths.of(settings).published_days()
    start = store.meta(_START) or ""
    done = {r[0] for r in store.query("SELECT day FROM ingested")}
    appended = 0
    for day in published:
        if day.isoformat() <= start or day.isoformat() in done:
            continue
        events = day_events(FeedPaths.of(settings), day)
        appended += store.append_events(events)
        with store.transaction() as con:
            con.execute("INSERT OR REPLACE INTO ingested VALUES (?, ?)", (day.isoformat(), len(events)))
        log.info("events: feed day %s gave %d event(s)", day, len(events))
    return appended
