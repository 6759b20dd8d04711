"""The queue of facts for the ledger (``ledger_events``): each step queues what it decided, the
ledger step appends them in order. Also cancels the unsent reminders of a closed disconnection.
"""

from __future__ import annotations

import datetime as dt

from pipelines.db import Con, sql_str
from pipelines.lifecycle.sql import run_sql

LEDGER_TYPES = (
    "tenure_closed",
    "reminder_sent",
    "reminder_effective",
    "acknowledged",
    "restored",
    "released",
    "released_with_exception",
    "reissued",
    "reissue_violation",
    "holder_notice_sent",
)


_TYPE_RANK = (
    "CASE n.type " + " ".join(f"WHEN {sql_str(t)} THEN {i}" for i, t in enumerate(LEDGER_TYPES)) + " END"
)


def queue_ledger(con: Con, day: dt.date, source: str, *, dedupe: bool = False) -> int:
    """Append ledger-worthy events from ``source`` (a table or SELECT) to ``ledger_events``.

    ``source`` has columns idempotency_key, on_date, type, msisdn, tenure_id, tenure_start,
    tenure_end, fields. Keys already queued today are skipped, so a rerun adds nothing; seq
    continues the table's numbering in a deterministic order. ``dedupe`` keeps one row per key
    when ``source`` itself may repeat a key (one tenure closing twice in a day).
    """
    once = (
        "QUALIFY row_number() OVER (PARTITION BY q.idempotency_key ORDER BY q.on_date) = 1" if dedupe else ""
    )
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _lq AS
        SELECT * FROM ({source}) q(idempotency_key, on_date, type, msisdn, tenure_id,
                                   tenure_start, tenure_end, fields)
        {once}
        """,
        {"d": day} if "$d" in source else None,
    )
    # Today's keys are looked up for the source's keys only: the send step queues a thousand
    # events at a time against a day that already holds a million.
    row = run_sql(
        con,
        f"""
        INSERT INTO ledger_events
        SELECT coalesce((SELECT max(seq) FROM ledger_events), 0)
                 + row_number() OVER (ORDER BY n.on_date, n.msisdn, {_TYPE_RANK}, n.idempotency_key),
               n.idempotency_key, $d, n.on_date, n.type, n.msisdn, n.tenure_id, n.tenure_start,
               n.tenure_end, n.fields, false
        FROM _lq n
        WHERE n.idempotency_key NOT IN (
            SELECT idempotency_key FROM ledger_events
            WHERE logical_date = $d AND idempotency_key IN (SELECT idempotency_key FROM _lq))
        ORDER BY 1
        """,
        {"d": day},
    ).fetchone()
    run_sql(con, "DROP TABLE _lq")
    return int(row[0]) if row else 0


def cancel_unsent_reminders(con: Con, tenure_ids_sql: str) -> None:
    """Cancel scheduled (unsent) reminders, and their pending outbox rows, of the given tenures."""
    run_sql(
        con,
        f"""
        UPDATE outbox SET status = 'cancelled'
        WHERE status = 'pending' AND reminder_id IN (
            SELECT reminder_id FROM reminders
            WHERE status = 'scheduled' AND tenure_id IN ({tenure_ids_sql}))
        """,
    )
    run_sql(
        con,
        f"""
        UPDATE reminders SET status = 'cancelled'
        WHERE status = 'scheduled' AND tenure_id IN ({tenure_ids_sql})
        """,
    )
