"""CAMARA subscriptions (Commonalities' subscription model, docs/events.md): validation of a
``SubscriptionRequest``, the ``Subscription`` answer, and their life in the events store:
created after the newest event (a subscription hears what happens after it), fanned out by
cursor, ended at its expiry, after ``subscriptionMaxEvents`` events, or on delete, each time
with a last ``subscription-ends`` event.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from number_recycling_client.events import EVENT_TYPES, SUBSCRIPTION_ENDS, event_time

from pipelines.errors import DataContractError
from pipelines.events.config import EventsConfig
from pipelines.events.store import EventStore

MAX_SINK = 2048
MAX_SUBSCRIPTIONS_PER_PLATFORM = 100


class SubscriptionError(DataContractError):
    """A request CAMARA refuses: ``code`` is the ErrorInfo code, ``status`` the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Subscription:
    id: str
    platform: str
    sink: str
    types: tuple[str, ...]
    config: dict[str, Any]
    starts_at: float
    expires_at: float | None
    max_events: int | None
    status: str

    def to_json(self) -> dict[str, Any]:
        """CAMARA's ``Subscription`` (``sinkCredential`` is never returned)."""
        answer: dict[str, Any] = {
            "id": self.id,
            "protocol": "HTTP",
            "sink": self.sink,
            "types": list(self.types),
            "config": self.config,
            "startsAt": _rfc3339(self.starts_at),
            "status": self.status,
        }
        if self.expires_at is not None:
            answer["expiresAt"] = _rfc3339(self.expires_at)
        return answer


def _rfc3339(epoch: float) -> str:
    return event_time(dt.datetime.fromtimestamp(epoch, dt.UTC))


def _bad(message: str, code: str = "INVALID_ARGUMENT") -> SubscriptionError:
    return SubscriptionError(400, code, message)


def check_sink(sink: Any, config: EventsConfig) -> str:
    """``https://`` anywhere; ``http://`` only to a loopback host in the development profile."""
    if not isinstance(sink, str) or not sink or len(sink) > MAX_SINK:
        raise _bad("sink must be an absolute https:// URL", "INVALID_SINK")
    parts = urlsplit(sink)
    if parts.scheme == "https" and parts.hostname:
        return sink
    if parts.scheme == "http" and parts.hostname and config.allow_http_loopback:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return sink
    raise _bad(
        "sink must be an absolute https:// URL (http:// only to loopback in development)", "INVALID_SINK"
    )


def _check_types(types: Any) -> tuple[str, ...]:
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise _bad(f"types must be a non-empty list of: {', '.join(EVENT_TYPES)}")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise _bad(f"unknown event type {unknown[0][:80]!r}; known: {', '.join(EVENT_TYPES)}")
    return tuple(dict.fromkeys(types))


def _check_config(cfg: Any, now: dt.datetime) -> tuple[float | None, int | None, dict[str, Any]]:
    if cfg is None:
        return None, None, {}
    if not isinstance(cfg, dict):
        raise _bad("config must be an object")
    expires = None
    if "subscriptionExpireTime" in cfg:
        text = cfg["subscriptionExpireTime"]
        try:
            when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise _bad("config.subscriptionExpireTime must be an RFC 3339 date-time") from None
        if when.tzinfo is None:
            raise _bad("config.subscriptionExpireTime needs a time zone offset (RFC 3339)")
        if when <= now:
            raise _bad("config.subscriptionExpireTime is in the past")
        expires = when.timestamp()
    max_events = cfg.get("subscriptionMaxEvents")
    if max_events is not None and (type(max_events) is not int or max_events < 1):
        raise _bad("config.subscriptionMaxEvents must be an integer >= 1")
    if not isinstance(cfg.get("initialEvent", False), bool):
        raise _bad("config.initialEvent must be a boolean")
    return expires, max_events, dict(cfg)


def validate_request(body: Any, config: EventsConfig, now: dt.datetime) -> tuple[Any, ...]:
    """(sink, types, expires_at, max_events, config) of a valid SubscriptionRequest, or a
    :class:`SubscriptionError`. ``sinkCredential`` is accepted and ignored: events are signed."""
    if not isinstance(body, dict):
        raise _bad("the body must be a SubscriptionRequest object")
    if body.get("protocol") != "HTTP":
        raise _bad("only protocol HTTP is supported", "INVALID_PROTOCOL")
    sink = check_sink(body.get("sink"), config)
    types = _check_types(body.get("types"))
    expires, max_events, cfg = _check_config(body.get("config"), now)
    return sink, types, expires, max_events, cfg


_COLUMNS = "id, platform, sink, types, config, starts_at, expires_at, max_events, status"


def _row(r: tuple[Any, ...]) -> Subscription:
    return Subscription(r[0], r[1], r[2], tuple(json.loads(r[3])), json.loads(r[4]), r[5], r[6], r[7], r[8])


class Subscriptions:
    """The subscriptions of the events store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def create(self, platform: str, body: Any, config: EventsConfig, now: dt.datetime) -> Subscription:
        sink, types, expires, max_events, cfg = validate_request(body, config, now)
        sub = Subscription(
            str(uuid.uuid4()), platform, sink, types, cfg, now.timestamp(), expires, max_events, "ACTIVE"
        )
        with self.store.transaction() as con:
            (count,) = con.execute(
                "SELECT count(*) FROM subscriptions WHERE platform = ? AND status = 'ACTIVE'", (platform,)
            ).fetchone()
            if count >= MAX_SUBSCRIPTIONS_PER_PLATFORM:
                raise SubscriptionError(
                    422,
                    "SUBSCRIPTION_LIMIT",
                    f"at most {MAX_SUBSCRIPTIONS_PER_PLATFORM} active subscriptions",
                )
            con.execute(
                "INSERT INTO subscriptions (id, platform, sink, types, config, starts_at, expires_at, "
                "max_events, status, cursor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ACTIVE', "
                "(SELECT coalesce(max(position), 0) FROM events))",
                (
                    sub.id,
                    platform,
                    sink,
                    json.dumps(types),
                    json.dumps(cfg),
                    sub.starts_at,
                    expires,
                    max_events,
                ),
            )
        return sub

    def list(self, platform: str | None = None) -> list[Subscription]:
        """A platform's subscriptions (all when ``platform`` is None), deleted ones left out."""
        where = "status != 'DELETED'" + ("" if platform is None else " AND platform = ?")
        params = () if platform is None else (platform,)
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE {where} ORDER BY starts_at, id", params
        )
        return [_row(r) for r in rows]

    def get(self, platform: str, sid: str) -> Subscription | None:
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE id = ? AND platform = ? AND status != 'DELETED'",
            (sid, platform),
        )
        return _row(rows[0]) if rows else None

    def delete(self, platform: str, sid: str, now: dt.datetime) -> bool:
        """Delete (status DELETED): deliveries not yet made are cancelled, and the sink gets a
        last ``subscription-ends`` (SUBSCRIPTION_DELETED). False if there is no such one."""
        with self.store.transaction() as con:
            row = con.execute(
                "SELECT status FROM subscriptions WHERE id = ? AND platform = ? AND status != 'DELETED'",
                (sid, platform),
            ).fetchone()
            if row is None:
                return False
            con.execute(
                "UPDATE deliveries SET status = 'cancelled' WHERE subscription_id = ? AND status = 'due'",
                (sid,),
            )
            if row[0] == "ACTIVE":
                _end(con, sid, "SUBSCRIPTION_DELETED", now.timestamp())
            con.execute("UPDATE subscriptions SET status = 'DELETED' WHERE id = ?", (sid,))
        return True

    def fan_out(self, now: dt.datetime) -> int:
        """Hand every active subscription the events after its cursor (its types only, at most
        its remaining ``subscriptionMaxEvents``); end the expired and the exhausted. Returns the
        deliveries created."""
        created = 0
        epoch = now.timestamp()
        with self.store.transaction() as con:
            for sid, types, expires, max_events, sent, cursor in con.execute(
                "SELECT id, types, expires_at, max_events, sent, cursor FROM subscriptions "
                "WHERE status = 'ACTIVE'"
            ).fetchall():
                if expires is not None and expires <= epoch:
                    _end(con, sid, "SUBSCRIPTION_EXPIRED", epoch)
                    continue
                created += _take(con, sid, json.loads(types), max_events, sent, cursor, epoch)
        return created


def _take(
    con: Any, sid: str, types: list[str], max_events: int | None, sent: int, cursor: int, epoch: float
) -> int:
    """One subscription's share of the log after ``cursor``, in one INSERT … SELECT."""
    room = -1 if max_events is None else max_events - sent  # LIMIT -1: no limit
    marks = ",".join("?" * len(types))
    picked = f"""SELECT position FROM events WHERE position > ? AND subscription_id IS NULL
                 AND type IN ({marks}) ORDER BY position LIMIT ?"""
    params = (cursor, *types, room)
    before = con.total_changes
    con.execute(
        f"INSERT OR IGNORE INTO deliveries (subscription_id, position, status, due_at) "
        f"SELECT ?, position, 'due', ? FROM ({picked})",
        (sid, epoch, *params),
    )
    taken = int(con.total_changes - before)
    last = con.execute(f"SELECT max(position) FROM ({picked})", params).fetchone()[0]
    if max_events is None or sent + taken < max_events:
        last = con.execute("SELECT coalesce(max(position), ?) FROM events", (cursor,)).fetchone()[0]
    con.execute(
        "UPDATE subscriptions SET cursor = ?, sent = sent + ? WHERE id = ?", (last or cursor, taken, sid)
    )
    if max_events is not None and sent + taken >= max_events:
        _end(con, sid, "MAX_EVENTS_REACHED", epoch)
    return taken


def _end(con: Any, sid: str, reason: str, epoch: float) -> None:
    """The subscription ends: status EXPIRED (DELETED is set by the caller) and one last event,
    ``subscription-ends``, for it alone (CAMARA Commonalities)."""
    con.execute(
        "UPDATE subscriptions SET status = 'EXPIRED', ended_at = ?, end_reason = ? WHERE id = ?",
        (epoch, reason, sid),
    )
    data = {"subscriptionId": sid, "terminationReason": reason}
    time = event_time(dt.datetime.fromtimestamp(epoch, dt.UTC))
    cur = con.execute(
        "INSERT OR IGNORE INTO events (id, type, time, data, subscription_id) VALUES (?, ?, ?, ?, ?)",
        (f"subscription-ends-{sid}", SUBSCRIPTION_ENDS, time, json.dumps(data), sid),
    )
    if cur.rowcount:
        con.execute(
            "INSERT INTO deliveries (subscription_id, position, status, due_at) VALUES (?, ?, 'due', ?)",
            (sid, cur.lastrowid, epoch),
        )
