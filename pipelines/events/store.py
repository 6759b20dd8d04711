"""The events store: ``<data>/server/events.sqlite`` (0600), beside the token and
acknowledgement stores and, like them, never the nightly DuckDB file (one writer: the night).

Tables: ``subscriptions`` (CAMARA subscriptions, each with a ``cursor`` into the event log);
``events`` (the log: one row per event, whatever the number of subscribers, by ``position``);
``deliveries`` (one row per event and subscription it is due to: due → delivered, or dead
after the last retry); ``attempts`` (the delivery log: every HTTP attempt, its status code and
latency); ``ingested`` (feed days turned into events).

Fan-out is a cursor per subscription, not a row per subscriber at production: producing an
event costs one row; each subscription then takes what follows its cursor in one
``INSERT … SELECT`` (no Python per row). SQLite in WAL mode: the server (subscriptions), the
worker (deliveries) and ``recycle events`` may write at once, each transaction short.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.layout import create_private_file, private_dir

EVENTS_DB = "events.sqlite"

_DDL = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    sink TEXT NOT NULL,
    types TEXT NOT NULL,                -- JSON list of event types
    config TEXT NOT NULL,               -- JSON: the request's config, as given
    starts_at REAL NOT NULL,            -- epoch seconds
    expires_at REAL,
    max_events INTEGER,
    sent INTEGER NOT NULL DEFAULT 0,    -- events handed to delivery (counts toward max_events)
    status TEXT NOT NULL,               -- ACTIVE | EXPIRED | DELETED
    cursor INTEGER NOT NULL,            -- the last events.position taken
    ended_at REAL,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    time TEXT NOT NULL,
    data TEXT NOT NULL,                 -- JSON
    subscription_id TEXT                -- set for subscription-ends: that subscription only
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,               -- due | delivered | dead | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    last_code INTEGER,
    last_error TEXT,
    UNIQUE (subscription_id, position)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, due_at);
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL,
    platform TEXT NOT NULL,
    event_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    status_code INTEGER,                -- NULL: no answer (refused, timeout)
    error TEXT,
    latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_platform ON attempts (platform, at);
CREATE TABLE IF NOT EXISTS ingested (day TEXT PRIMARY KEY, events INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Due:
    """One delivery claimed for an attempt: what the worker needs to build, sign and send it."""

    delivery_id: int
    subscription_id: str
    platform: str
    sink: str
    attempts: int  # before this one
    event_id: str
    type: str
    time: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    platform: str
    event_id: str
    attempt: int  # 1 for the first
    at: float
    status_code: int | None
    error: str | None
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class DeadLetter:
    delivery_id: int
    platform: str
    subscription_id: str
    event_id: str
    type: str
    attempts: int
    failed_at: float
    last_code: int | None
    last_error: str | None


class EventStore:
    """One SQLite connection guarded by a lock (the server's threads share it)."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        create_private_file(path)  # SQLite gives its -wal/-shm files this mode
        self.path = path
        self._lock = threading.RLock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA busy_timeout = 10000")
        self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        self._con.executescript(_DDL)

    @classmethod
    def open(cls, data_dir: Path) -> EventStore:
        return cls(data_dir / "server" / EVENTS_DB)

    def close(self) -> None:
        self._con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: the write lock at once, so a claim is never taken twice."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ the event log

    def append_events(self, rows: Iterable[tuple[str, str, str, dict[str, Any]]]) -> int:
        """Append (id, type, time, data) events not already logged (idempotent by id)."""
        values = [(i, t, tm, json.dumps(d, separators=(",", ":"))) for i, t, tm, d in rows]
        with self.transaction() as con:
            before = con.total_changes
            con.executemany("INSERT OR IGNORE INTO events (id, type, time, data) VALUES (?, ?, ?, ?)", values)
            return con.total_changes - before

    def last_position(self) -> int:
        return int(self.query("SELECT coalesce(max(position), 0) FROM events")[0][0])

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows else str(rows[0][0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ delivery

    def claim(self, now: float, limit: int, lease_s: float) -> list[Due]:
        """Due deliveries (oldest first), leased for ``lease_s`` so no other worker takes them.
        A ``subscription-ends`` waits until its subscription has nothing else due: it is the
        last event the sink gets (CAMARA)."""
        with self.transaction() as con:
            rows = con.execute(
                """
                SELECT d.delivery_id, d.subscription_id, s.platform, s.sink, d.attempts,
                       e.id, e.type, e.time, e.data
                FROM deliveries d
                JOIN subscriptions s ON s.id = d.subscription_id
                JOIN events e ON e.position = d.position
                WHERE d.status = 'due' AND d.due_at <= ?
                  AND NOT (e.subscription_id IS NOT NULL AND EXISTS (
                      SELECT 1 FROM deliveries o WHERE o.subscription_id = d.subscription_id
                      AND o.status = 'due' AND o.delivery_id != d.delivery_id))
                ORDER BY d.due_at, d.delivery_id LIMIT ?
                """,
                (now, limit),
            ).fetchall()
            con.executemany(
                "UPDATE deliveries SET due_at = ? WHERE delivery_id = ?",
                [(now + lease_s, r[0]) for r in rows],
            )
        return [Due(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8])) for r in rows]

    def record(self, outcomes: Sequence[Outcome], schedule: Sequence[float]) -> None:
        """Log every attempt and move each delivery on: delivered, due again after the
        schedule's next delay, or dead after the last."""
        with self.transaction() as con:
            con.executemany(
                "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        o.delivery_id,
                        o.platform,
                        o.event_id,
                        o.attempt,
                        o.at,
                        o.status_code,
                        o.error,
                        o.latency_ms,
                    )
                    for o in outcomes
                ],
            )
            updates = [_next_state(o, schedule) for o in outcomes]
            con.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, due_at = ?, last_code = ?, "
                "last_error = ? WHERE delivery_id = ? AND status = 'due'",
                updates,
            )

    # ------------------------------------------------------------------ operators

    def dead_letters(self, platform: str | None = None) -> list[DeadLetter]:
        """Deliveries that failed their last retry, oldest first."""
        where = "" if platform is None else "AND s.platform = ?"
        rows = self.query(
            f"""
            SELECT d.delivery_id, s.platform, d.subscription_id, e.id, e.type, d.attempts, d.due_at,
                   d.last_code, d.last_error
            FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
            JOIN events e ON e.position = d.position
            WHERE d.status = 'dead' {where} ORDER BY d.due_at, d.delivery_id
            """,
            () if platform is None else (platform,),
        )
        return [DeadLetter(*r) for r in rows]

    def replay(self, delivery_ids: Sequence[int] | None, now: float) -> int:
        """Dead letters due again now (all when ``delivery_ids`` is None), with a fresh schedule
        of retries; deliveries of deleted subscriptions stay dead. Returns how many."""
        where = "" if delivery_ids is None else f"AND delivery_id IN ({','.join('?' * len(delivery_ids))})"
        with self.transaction() as con:
            cur = con.execute(
                f"""
                UPDATE deliveries SET status = 'due', attempts = 0, due_at = ?
                WHERE status = 'dead' {where} AND subscription_id IN
                    (SELECT id FROM subscriptions WHERE status != 'DELETED')
                """,
                (now, *(delivery_ids or ())),
            )
            return int(cur.rowcount)

    def delivery_log(self, platform: str, limit: int = 100) -> list[tuple[Any, ...]]:
        """The platform's latest attempts: (at, event id, attempt, status code, error, latency ms)."""
        return self.query(
            "SELECT at, event_id, attempt, status_code, error, latency_ms FROM attempts "
            "WHERE platform = ? ORDER BY at DESC, rowid DESC LIMIT ?",
            (platform, limit),
        )

    def counts(self) -> dict[str, int]:
        """Deliveries by status (for ``recycle events status`` and metrics)."""
        return {
            str(k): int(v) for k, v in self.query("SELECT status, count(*) FROM deliveries GROUP BY status")
        }

    def next_due(self) -> float | None:
        rows = self.query("SELECT min(due_at) FROM deliveries WHERE status = 'due'")
        return None if rows[0][0] is None else float(rows[0][0])


def _next_state(o: Outcome, schedule: Sequence[float]) -> tuple[Any, ...]:
    if o.ok:
        return ("delivered", o.attempt, o.at, o.status_code, None, o.delivery_id)
    if o.attempt > len(schedule):
        return ("dead", o.attempt, o.at, o.status_code, o.error, o.delivery_id)
    return ("due", o.attempt, o.at + schedule[o.attempt - 1], o.status_code, o.error, o.delivery_id)
