"""Operators' views of the lifecycle: one number's tenures, history and reminders; a day's figures."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pipelines.lifecycle.sql import STATES, Con, count_rows, run_sql

# --------------------------------------------------------------------------- operator views


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


def number_history(con: Con, msisdn_e164: str) -> dict[str, Any]:
    """Everything on record about one number, JSON-serialisable (``recycle show NUMBER --json``).

    For operators, who may see the number; do not log the result.
    """
    p = {"m": msisdn_e164}
    state = _rows(con, "SELECT * EXCLUDE (msisdn) FROM number_state WHERE msisdn = $m", p)
    reminders = _rows(
        con,
        """
        SELECT r.* EXCLUDE (msisdn), o.status AS outbox_status, o.attempts AS outbox_attempts,
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
    quarantined = _rows(
        con,
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
    return {
        "msisdn": msisdn_e164,
        "state": state[0] if state else None,
        "tenures": _rows(
            con, "SELECT * EXCLUDE (msisdn) FROM tenures WHERE msisdn = $m ORDER BY tenure_start", p
        ),
        "history": _rows(
            con,
            """
            SELECT * EXCLUDE (msisdn) FROM state_history WHERE msisdn = $m
            ORDER BY on_date, logical_date, file_sha256 NULLS FIRST, line_no
            """,
            p,
        ),
        "reminders": reminders,
        "releases": _rows(
            con, "SELECT * EXCLUDE (msisdn) FROM releases WHERE msisdn = $m ORDER BY released_on", p
        ),
        "reissues": _rows(
            con, "SELECT * EXCLUDE (msisdn) FROM reissues WHERE msisdn = $m ORDER BY reissue_date", p
        ),
        "quarantined": quarantined,
        "ledger_events": [
            {**row, "fields": json.loads(row["fields"])}
            for row in _rows(
                con,
                """
                SELECT seq, idempotency_key, logical_date, on_date, type, tenure_id, fields, appended
                FROM ledger_events WHERE msisdn = $m ORDER BY seq
                """,
                p,
            )
        ],
    }


def lifecycle_status(con: Con, day: dt.date) -> dict[str, Any]:
    """Counts for operators: numbers per state, reminders per channel and status, and the
    releases, exceptions, holds and violations of ``day`` and in total. Totals are sums of
    their parts (``total == sum(by_...)``) so the figures always add up."""
    p = {"d": day}
    by_state = {s: 0 for s in STATES}
    by_state.update(
        {
            str(s): int(n)
            for s, n in run_sql(con, "SELECT state, count(*) FROM number_state GROUP BY state").fetchall()
        }
    )
    reminders: dict[str, dict[str, int]] = {}
    for ch, st, n in run_sql(
        con, "SELECT channel, status, count(*) FROM reminders GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        reminders.setdefault(str(ch), {})[str(st)] = int(n)
    by_status: dict[str, int] = {}
    for statuses in reminders.values():
        for st, n in statuses.items():
            by_status[st] = by_status.get(st, 0) + n
    outbox = {
        str(s): int(n)
        for s, n in run_sql(con, "SELECT status, count(*) FROM outbox GROUP BY ALL ORDER BY ALL").fetchall()
    }
    rel = run_sql(
        con,
        """
        SELECT count(*) FILTER (NOT exception AND logical_date = $d),
               count(*) FILTER (exception AND logical_date = $d),
               count(*) FILTER (NOT exception), count(*) FILTER (exception)
        FROM releases
        """,
        p,
    ).fetchone() or (0, 0, 0, 0)
    reis = run_sql(
        con,
        """
        SELECT count(*) FILTER (NOT violation AND logical_date = $d),
               count(*) FILTER (violation AND logical_date = $d),
               count(*) FILTER (NOT violation), count(*) FILTER (violation)
        FROM reissues
        """,
        p,
    ).fetchone() or (0, 0, 0, 0)
    held_today = count_rows(con, "state_history", "logical_date = $d AND to_state = 'held'", p)
    quarantine: dict[str, dict[str, int]] = {}
    for stage, reason, n in run_sql(
        con,
        """
        SELECT stage, reason, count(*) FROM quarantine
        WHERE logical_date = $d AND stage IN ('lifecycle', 'receipts') GROUP BY ALL ORDER BY ALL
        """,
        p,
    ).fetchall():
        quarantine.setdefault(str(stage), {})[str(reason)] = int(n)
    ledger = run_sql(
        con, "SELECT count(*), count(*) FILTER (NOT appended) FROM ledger_events"
    ).fetchone() or (0, 0)
    return {
        "date": day.isoformat(),
        "numbers": {"total": sum(by_state.values()), "by_state": by_state},
        "reminders": {
            "total": sum(by_status.values()),
            "by_status": dict(sorted(by_status.items())),
            "by_channel": {
                ch: {"total": sum(st.values()), "by_status": st} for ch, st in sorted(reminders.items())
            },
        },
        "outbox": {"total": sum(outbox.values()), "by_status": outbox},
        "releases": {
            "day": {
                "total": int(rel[0]) + int(rel[1]),
                "released": int(rel[0]),
                "with_exception": int(rel[1]),
            },
            "all_time": {
                "total": int(rel[2]) + int(rel[3]),
                "released": int(rel[2]),
                "with_exception": int(rel[3]),
            },
        },
        "held": {"now": by_state["held"], "entered_today": held_today},
        "reissues": {
            "day": {"total": int(reis[0]) + int(reis[1]), "clean": int(reis[0]), "violations": int(reis[1])},
            "all_time": {
                "total": int(reis[2]) + int(reis[3]),
                "clean": int(reis[2]),
                "violations": int(reis[3]),
            },
        },
        "quarantine_today": quarantine,
        "ledger_events": {"total": int(ledger[0]), "pending": int(ledger[1])},
    }
