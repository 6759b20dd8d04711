"""One-click unbinding (issue 15, item 2; docs/events.md, "unbind-requested").

The new holder of a recycled number, with the token the carrier's channels gave them
(:mod:`pipelines.events.unbind_token`), asks every platform subscribed to
``unbind-requested`` to unbind the prior holder's accounts. :func:`request_unbind` checks the
token's tenure is still the number's and recycled, records one request per tenure (asking again
returns the same request: a holder pressing twice does not spam platforms), records which
subscriptions it goes to, and appends one event to the log; the delivery machinery
(:mod:`pipelines.events.deliver`) fans it out like any other (at-least-once, retries, dead
letters).

Answers are the platforms' acknowledgements (``POST /acknowledgements``), tied to the request
*by number and time*: an acknowledgement of the number received since the prior tenure ended
answers it (the rule of ``compliance.notifications.platform_outcomes``: the same recycling).
No new field on the wire, so every acknowledgement a platform already sends stays valid, and
a platform that unbound from the feed before the holder asked has already answered.

Deadline: a platform that has not answered by the request's ``deadline`` gets one reminder, an
``unbind-requested`` event with the same ``requestId`` and ``"reminder": true`` (a distinct
event id, so a receiver that de-duplicates by id still sees it; the same type, so no platform
has to subscribe to anything new), addressed to its subscriptions only. Who sends it: every
delivery pass (:func:`remind_late` from ``deliver_once``: ``recycle serve``'s loop, ``recycle
events deliver``, the nightly ``push``), so reminders need no extra scheduler. One reminder,
not a series: the holder's view and the compliance follow-up list the late ones.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from number_recycling_client.events import UNBIND_REQUESTED, event_time

from pipelines.compliance.notifications import (
    answered_platforms,
    holder_tenure,
    platform_outcomes,
)
from pipelines.config import Settings
from pipelines.errors import TerminalError
from pipelines.events.config import EventsConfig
from pipelines.events.store import EventStore
from pipelines.events.unbind_token import HolderToken, UnbindTokenError


@dataclass(frozen=True)
class UnbindRequest:
    id: str
    msisdn: str
    since: dt.date  # the new tenure's start
    prior_end: dt.date
    requested_at: dt.datetime
    deadline: dt.datetime
    reminded_at: dt.datetime | None

    def event_data(self, *, reminder: bool = False) -> dict[str, Any]:
        """The ``unbind-requested`` event's data (docs/events.md)."""
        return {
            "phoneNumber": self.msisdn,
            "requestId": self.id,
            "requestedAt": event_time(self.requested_at),
            "since": self.since.isoformat(),
            "deadline": event_time(self.deadline),
            "disconnectedOn": self.prior_end.isoformat(),  # the dormancy hint, as the feed's
            "reminder": reminder,
        }


def _epoch(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


_COLUMNS = "id, msisdn, since, prior_end, requested_at, deadline, reminded_at"


def _row(r: tuple[Any, ...]) -> UnbindRequest:
    return UnbindRequest(
        r[0],
        r[1],
        dt.date.fromisoformat(r[2]),
        dt.date.fromisoformat(r[3]),
        dt.datetime.fromtimestamp(r[4], dt.UTC),
        dt.datetime.fromtimestamp(r[5], dt.UTC),
        _epoch(r[6]),
    )


def get_request(store: EventStore, request_id: str) -> UnbindRequest | None:
    rows = store.query(f"SELECT {_COLUMNS} FROM unbind_requests WHERE id = ?", (request_id,))
    return _row(rows[0]) if rows else None


def latest_request(store: EventStore, msisdn: str) -> UnbindRequest | None:
    """The number's newest request (``recycle new-owner``)."""
    rows = store.query(
        f"SELECT {_COLUMNS} FROM unbind_requests WHERE msisdn = ? ORDER BY since DESC LIMIT 1", (msisdn,)
    )
    return _row(rows[0]) if rows else None


def _tenure_of(settings: Settings, token: HolderToken, now: dt.datetime) -> dt.date:
    """The prior tenure's end, when the token's tenure is the number's today and recycled;
    403 otherwise (a valid token, but no longer for this number's holder)."""
    try:
        since, prior_end, recycled = holder_tenure(settings, token.msisdn, settings.carrier_day(now))
    except TerminalError:
        since, prior_end, recycled = None, None, False
    if since != token.since or not recycled or prior_end is None:
        raise UnbindTokenError(
            403,
            "PERMISSION_DENIED",
            "this unbind token is for a tenure that is not the number's current one, "
            "or the number was not recycled to its holder; nothing to unbind",
        )
    return prior_end


def request_unbind(
    settings: Settings, store: EventStore, token: HolderToken, config: EventsConfig, now: dt.datetime
) -> tuple[UnbindRequest, bool]:
    """Record the holder's request and its event; (the request, whether it is new)."""
    prior_end = _tenure_of(settings, token, now)
    deadline = now + dt.timedelta(seconds=config.unbind_deadline_s)
    fresh = UnbindRequest(str(uuid.uuid4()), token.msisdn, token.since, prior_end, now, deadline, None)
    with store.transaction() as con:
        rows = con.execute(
            f"SELECT {_COLUMNS} FROM unbind_requests WHERE msisdn = ? AND since = ?",
            (token.msisdn, token.since.isoformat()),
        ).fetchall()
        if rows:
            return _row(rows[0]), False
        con.execute(
            "INSERT INTO unbind_requests VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (
                fresh.id,
                fresh.msisdn,
                fresh.since.isoformat(),
                prior_end.isoformat(),
                now.timestamp(),
                deadline.timestamp(),
            ),
        )
        # Who it goes to: the active subscriptions to the type now, as fan-out will hand it.
        con.execute(
            "INSERT INTO unbind_targets SELECT ?, id, platform FROM subscriptions "
            "WHERE status = 'ACTIVE' AND EXISTS (SELECT 1 FROM json_each(types) WHERE value = ?)",
            (fresh.id, UNBIND_REQUESTED),
        )
        con.execute(
            "INSERT INTO events (id, type, time, data) VALUES (?, ?, ?, ?)",
            (
                f"unbind-requested-{fresh.id}",
                UNBIND_REQUESTED,
                event_time(now),
                json.dumps(fresh.event_data(), separators=(",", ":")),
            ),
        )
    return fresh, True


def targets(store: EventStore, request_id: str) -> dict[str, list[str]]:
    """Platform -> its subscriptions the request went to."""
    out: dict[str, list[str]] = {}
    for sid, platform in store.query(
        "SELECT subscription_id, platform FROM unbind_targets WHERE request_id = ? ORDER BY 1", (request_id,)
    ):
        out.setdefault(platform, []).append(sid)
    return out


def progress(
    settings: Settings, store: EventStore, request: UnbindRequest, now: dt.datetime
) -> dict[str, Any]:
    """The holder's view of one request: platform_outcomes (named by name, the others counted:
    one privacy rule) over every platform told, the request's included, and the late ones."""
    day = settings.carrier_day(now)
    sent = targets(store, request.id)
    outcomes = platform_outcomes(settings, {request.msisdn: request.prior_end}, day, {request.msisdn: sent})[
        request.msisdn
    ]
    answered = answered_platforms(settings, request.msisdn, request.prior_end, day)
    late = sorted(p for p in sent if p not in answered) if now >= request.deadline else []
    named = {p["platform"] for p in outcomes["named"]}
    return {
        "id": request.id,
        "requestedAt": event_time(request.requested_at),
        "since": request.since.isoformat(),
        "deadline": event_time(request.deadline),
        "reminded": request.reminded_at is not None,
        "platformsRequested": len(sent),
        "outcomes": outcomes,
        "late": {"named": [p for p in late if p in named], "others": sum(1 for p in late if p not in named)},
    }


def remind_late(settings: Settings, store: EventStore, now: dt.datetime) -> int:
    """One reminder to every platform that has not answered a request past its deadline (see
    the module doc). Returns the reminder deliveries created."""
    created = 0
    due = store.query(
        f"SELECT {_COLUMNS} FROM unbind_requests WHERE reminded_at IS NULL AND deadline <= ?",
        (now.timestamp(),),
    )
    for request in map(_row, due):
        answered = answered_platforms(settings, request.msisdn, request.prior_end, settings.carrier_day(now))
        silent = {p: s for p, s in targets(store, request.id).items() if p not in answered}
        created += _send_reminders(store, request, silent, now)
    return created


def _send_reminders(
    store: EventStore, request: UnbindRequest, silent: dict[str, list[str]], now: dt.datetime
) -> int:
    data = json.dumps(request.event_data(reminder=True), separators=(",", ":"))
    created = 0
    with store.transaction() as con:
        for sids in silent.values():
            for sid in sids:
                # addressed to this subscription only (like subscription-ends): fan-out skips it
                cur = con.execute(
                    "INSERT OR IGNORE INTO events (id, type, time, data, subscription_id) VALUES (?, ?, ?, ?, ?)",
                    (
                        f"unbind-requested-{request.id}-reminder-{sid}",
                        UNBIND_REQUESTED,
                        event_time(now),
                        data,
                        sid,
                    ),
                )
                if cur.rowcount:
                    con.execute(
                        "INSERT INTO deliveries (subscription_id, position, status, due_at) "
                        "SELECT ?, position, 'due', ? FROM events WHERE id = ? AND EXISTS "
                        "(SELECT 1 FROM subscriptions WHERE id = ? AND status = 'ACTIVE')",
                        (sid, now.timestamp(), f"unbind-requested-{request.id}-reminder-{sid}", sid),
                    )
                    created += 1
        con.execute("UPDATE unbind_requests SET reminded_at = ? WHERE id = ?", (now.timestamp(), request.id))
    return created
