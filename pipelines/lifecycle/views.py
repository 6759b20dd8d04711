"""Operators' views of the lifecycle: one number's tenures, history and reminders; a day's figures.

Both are JSON-ready TypedDicts (dates as ISO strings): callers index them like the dicts they
are and ``json.dumps`` them as they are.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, TypedDict, TypeVar, cast

from pipelines.db import Con
from pipelines.lifecycle.sql import STATES, count_rows, run_sql

# --------------------------------------------------------------------------- number_history types
# One TypedDict per table read, its columns less ``msisdn``; dates are ISO strings.


class NumberStateRow(TypedDict):
    state: str
    tenure_id: str
    since: str
    disconnected_on: str | None
    cause: str | None
    suspended_on: str | None
    frozen_on: str | None
    freeze_ends: str | None
    hold_started: str | None
    released_on: str | None
    region: str
    changed_logical: str


class TenureRow(TypedDict):
    tenure_id: str
    tenure_start: str
    tenure_end: str | None
    end_reason: str | None
    subscriber_ref: str
    region: str
    contact_email: str | None
    contact_phone: str | None
    language: str | None
    opened_by: str
    opened_logical: str


class HistoryRow(TypedDict):
    tenure_id: str
    from_state: str | None
    to_state: str
    on_date: str
    logical_date: str
    cause: str
    file_sha256: str | None
    line_no: int | None


class ReceiptRow(TypedDict):
    channel: str
    status: str
    at: str
    provider_ref: str | None
    logical_date: str
    file_sha256: str
    line_no: int


class ReminderRow(TypedDict):
    reminder_id: str
    tenure_id: str
    disconnected_on: str
    slot: str
    reminder_no: int
    final: bool
    channel: str
    address: str
    language: str
    due_on: str
    status: str
    attempts: int
    provider_ref: str | None
    sent_on: str | None
    effective_on: str | None
    scheduled_logical: str
    origin_id: str | None
    fallback_handled: bool
    fallback_due: str | None
    release_on: str
    cause: str
    outbox_status: str | None
    outbox_attempts: int | None
    outbox_last_error: str | None
    receipts: list[ReceiptRow]


class ReleaseRow(TypedDict):
    tenure_id: str
    disconnected_on: str
    released_on: str
    effective_reminders: int
    exception: bool
    logical_date: str
    region: str


class ReissueRow(TypedDict):
    prior_tenure_id: str | None
    new_tenure_id: str
    reissue_date: str
    disconnected_on: str | None
    released_on: str | None
    violation: bool
    logical_date: str
    region: str
    file_sha256: str
    line_no: int


class QuarantinedRow(TypedDict):
    logical_date: str
    file_name: str
    line_no: int
    reason: str
    detail: str | None


class LedgerEventRow(TypedDict):
    seq: int
    idempotency_key: str
    logical_date: str
    on_date: str
    type: str
    tenure_id: str | None
    fields: dict[str, Any]
    appended: bool


class NumberHistory(TypedDict):
    msisdn: str
    state: NumberStateRow | None  # None: the number is not on record
    tenures: list[TenureRow]
    history: list[HistoryRow]
    reminders: list[ReminderRow]
    releases: list[ReleaseRow]
    reissues: list[ReissueRow]
    quarantined: list[QuarantinedRow]
    ledger_events: list[LedgerEventRow]


# --------------------------------------------------------------------------- lifecycle_status types


class StatusCounts(TypedDict):
    total: int
    by_status: dict[str, int]


class NumberCounts(TypedDict):
    total: int
    by_state: dict[str, int]


class ReminderCounts(TypedDict):
    total: int
    by_status: dict[str, int]
    by_channel: dict[str, StatusCounts]


class ReleaseCounts(TypedDict):
    total: int
    released: int
    with_exception: int


class ReleaseFigures(TypedDict):
    day: ReleaseCounts
    all_time: ReleaseCounts


class ReissueCounts(TypedDict):
    total: int
    clean: int
    violations: int


class ReissueFigures(TypedDict):
    day: ReissueCounts
    all_time: ReissueCounts


class HeldCounts(TypedDict):
    now: int
    entered_today: int


class LedgerQueueCounts(TypedDict):
    total: int
    pending: int


class LifecycleStatus(TypedDict):
    date: str
    numbers: NumberCounts
    reminders: ReminderCounts
    outbox: StatusCounts
    releases: ReleaseFigures
    held: HeldCounts
    reissues: ReissueFigures
    quarantine_today: dict[str, dict[str, int]]  # stage -> reason -> rows
    ledger_events: LedgerQueueCounts


# --------------------------------------------------------------------------- number_history

_Row = TypeVar("_Row")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _rows(con: Con, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cur = run_sql(con, sql, params or {})
    names = [d[0] for d in cur.description or []]
    return [{n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _typed_rows(con: Con, row_type: type[_Row], sql: str, params: dict[str, Any]) -> list[_Row]:
    """:func:`_rows` as ``row_type`` (a TypedDict whose keys are the columns of ``sql``)."""
    return cast("list[_Row]", _rows(con, sql, params))


def number_history(con: Con, msisdn_e164: str) -> NumberHistory:
    """Everything on record about one number, JSON-serialisable (``recycle show NUMBER --json``).

    For operators, who may see the number; do not log the result.
    """
    p = {"m": msisdn_e164}
    state = _typed_rows(
        con, NumberStateRow, "SELECT * EXCLUDE (msisdn) FROM number_state WHERE msisdn = $m", p
    )
    return {
        "msisdn": msisdn_e164,
        "state": state[0] if state else None,
        "tenures": _typed_rows(
            con,
            TenureRow,
            # Contacts opened for the operator's views, which mask them; NULL once erased.
            "SELECT * EXCLUDE (msisdn) REPLACE (contact_open(contact_email) AS contact_email, "
            "contact_open(contact_phone) AS contact_phone) FROM tenures WHERE msisdn = $m ORDER BY tenure_start",
            p,
        ),
        "history": _typed_rows(
            con,
            HistoryRow,
            """
            SELECT * EXCLUDE (msisdn) FROM state_history WHERE msisdn = $m
            ORDER BY on_date, logical_date, file_sha256 NULLS FIRST, line_no
            """,
            p,
        ),
        "reminders": _reminders_with_receipts(con, p),
        "releases": _typed_rows(
            con,
            ReleaseRow,
            "SELECT * EXCLUDE (msisdn) FROM releases WHERE msisdn = $m ORDER BY released_on",
            p,
        ),
        "reissues": _typed_rows(
            con,
            ReissueRow,
            "SELECT * EXCLUDE (msisdn) FROM reissues WHERE msisdn = $m ORDER BY reissue_date",
            p,
        ),
        "quarantined": _quarantined(con, p),
        "ledger_events": _ledger_events(con, p),
    }


def _reminders_with_receipts(con: Con, p: dict[str, Any]) -> list[ReminderRow]:
    """The number's reminders with their outbox row's status and, each, its receipts."""
    reminders = _rows(
        con,
        """
        SELECT r.* EXCLUDE (msisdn) REPLACE (coalesce(contact_open(r.address), '(erased)') AS address),
               o.status AS outbox_status, o.attempts AS outbox_attempts,
               o.last_error AS outbox_last_error
        FROM reminders r LEFT JOIN outbox o ON o.reminder_id = r.reminder_id
        WHERE r.msisdn = $m ORDER BY r.disconnected_on, r.due_on, r.reminder_id
        """,
        p,
    )
    receipts = _rows(
        con,
        """
        SELECT rr.reminder_id, rr.channel, rr.status, rr."at", rr.provider_ref, rr.logical_date,
               rr.file_sha256, rr.line_no
        FROM receipt_rows rr SEMI JOIN reminders r ON r.reminder_id = rr.reminder_id AND r.msisdn = $m
        ORDER BY rr."at", rr.file_sha256, rr.line_no
        """,
        p,
    )
    by_reminder: dict[str, list[dict[str, Any]]] = {}
    for rc in receipts:
        by_reminder.setdefault(rc.pop("reminder_id"), []).append(rc)
    for rem in reminders:
        rem["receipts"] = by_reminder.get(rem["reminder_id"], [])
    return cast("list[ReminderRow]", reminders)


def _quarantined(con: Con, p: dict[str, Any]) -> list[QuarantinedRow]:
    """The number's lifecycle rows that were quarantined (snapshot, lifecycle or reissue rows)."""
    return _typed_rows(
        con,
        QuarantinedRow,
        """
        SELECT q.logical_date, q.file_name, q.line_no, q.reason, q.detail
        FROM quarantine q
        WHERE q.stage = 'lifecycle' AND EXISTS (
            SELECT 1 FROM lifecycle_events l WHERE l.file_sha256 = q.file_sha256
                AND l.line_no = q.line_no AND l.msisdn = $m
            UNION ALL
            SELECT 1 FROM reissue_events r WHERE r.file_sha256 = q.file_sha256
                AND r.line_no = q.line_no AND r.msisdn = $m
            UNION ALL
            SELECT 1 FROM subscriber_rows s WHERE s.file_sha256 = q.file_sha256
                AND s.line_no = q.line_no AND s.msisdn = $m)
        ORDER BY q.logical_date, q.file_name, q.line_no
        """,
        p,
    )


def _ledger_events(con: Con, p: dict[str, Any]) -> list[LedgerEventRow]:
    """The number's queued ledger facts, ``fields`` parsed."""
    rows = _rows(
        con,
        """
        SELECT seq, idempotency_key, logical_date, on_date, type, tenure_id, fields, appended
        FROM ledger_events WHERE msisdn = $m ORDER BY seq
        """,
        p,
    )
    return cast("list[LedgerEventRow]", [{**row, "fields": json.loads(row["fields"])} for row in rows])


# --------------------------------------------------------------------------- lifecycle_status


def lifecycle_status(con: Con, day: dt.date) -> LifecycleStatus:
    """Counts for operators: numbers per state, reminders per channel and status, and the
    releases, exceptions, holds and violations of ``day`` and in total. Totals are sums of
    their parts (``total == sum(by_...)``) so the figures always add up."""
    p = {"d": day}
    numbers = _numbers(con)
    rel = _day_and_all_time(con, "releases", "exception", day)
    reis = _day_and_all_time(con, "reissues", "violation", day)
    ledger = run_sql(
        con, "SELECT count(*), count(*) FILTER (NOT appended) FROM ledger_events"
    ).fetchone() or (0, 0)
    return {
        "date": day.isoformat(),
        "numbers": numbers,
        "reminders": _reminders(con),
        "outbox": _outbox(con),
        "releases": {
            "day": {"total": rel[0] + rel[1], "released": rel[0], "with_exception": rel[1]},
            "all_time": {"total": rel[2] + rel[3], "released": rel[2], "with_exception": rel[3]},
        },
        "held": {
            "now": numbers["by_state"]["held"],
            "entered_today": count_rows(con, "state_history", "logical_date = $d AND to_state = 'held'", p),
        },
        "reissues": {
            "day": {"total": reis[0] + reis[1], "clean": reis[0], "violations": reis[1]},
            "all_time": {"total": reis[2] + reis[3], "clean": reis[2], "violations": reis[3]},
        },
        "quarantine_today": _quarantine_today(con, day),
        "ledger_events": {"total": int(ledger[0]), "pending": int(ledger[1])},
    }


def _numbers(con: Con) -> NumberCounts:
    by_state = {s: 0 for s in STATES}
    by_state.update(
        {
            str(s): int(n)
            for s, n in run_sql(con, "SELECT state, count(*) FROM number_state GROUP BY state").fetchall()
        }
    )
    return {"total": sum(by_state.values()), "by_state": by_state}


def _reminders(con: Con) -> ReminderCounts:
    reminders: dict[str, dict[str, int]] = {}
    for ch, st, n in run_sql(
        con, "SELECT channel, status, count(*) FROM reminders GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        reminders.setdefault(str(ch), {})[str(st)] = int(n)
    by_status: dict[str, int] = {}
    for statuses in reminders.values():
        for st, n in statuses.items():
            by_status[st] = by_status.get(st, 0) + n
    return {
        "total": sum(by_status.values()),
        "by_status": dict(sorted(by_status.items())),
        "by_channel": {
            ch: {"total": sum(st.values()), "by_status": st} for ch, st in sorted(reminders.items())
        },
    }


def _outbox(con: Con) -> StatusCounts:
    outbox = {
        str(s): int(n)
        for s, n in run_sql(con, "SELECT status, count(*) FROM outbox GROUP BY ALL ORDER BY ALL").fetchall()
    }
    return {"total": sum(outbox.values()), "by_status": outbox}


def _day_and_all_time(con: Con, table: str, flag: str, day: dt.date) -> tuple[int, int, int, int]:
    """Rows of ``table`` (releases, reissues) without and with ``flag`` (exception, violation):
    logged on ``day``, then in total."""
    row = run_sql(
        con,
        f"""
        SELECT count(*) FILTER (NOT {flag} AND logical_date = $d),
               count(*) FILTER ({flag} AND logical_date = $d),
               count(*) FILTER (NOT {flag}), count(*) FILTER ({flag})
        FROM {table}
        """,
        {"d": day},
    ).fetchone() or (0, 0, 0, 0)
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def _quarantine_today(con: Con, day: dt.date) -> dict[str, dict[str, int]]:
    quarantine: dict[str, dict[str, int]] = {}
    for stage, reason, n in run_sql(
        con,
        """
        SELECT stage, reason, count(*) FROM quarantine
        WHERE logical_date = $d AND stage IN ('lifecycle', 'receipts') GROUP BY ALL ORDER BY ALL
        """,
        {"d": day},
    ).fetchall():
        quarantine.setdefault(str(stage), {})[str(reason)] = int(n)
    return quarantine
