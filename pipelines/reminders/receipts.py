"""Step ``receipts``: delivery receipts and acknowledgements of the day's drops make reminders
effective (or failed), judged against the reminders they name; the rest is quarantined.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipelines.config import Settings
from pipelines.db import Con, nightly_step
from pipelines.lifecycle.queue import queue_ledger
from pipelines.lifecycle.sql import count_of, drop_tables, run_sql, working_copy


@dataclass(frozen=True)
class ReceiptsReport:
    day: dt.date
    receipts: int  # receipt rows of the day
    applied: int
    unknown: int  # quarantined as unknown_reminder
    newly_effective: int
    newly_acknowledged: int
    newly_failed: int  # failed or expired: a fallback follows at the schedule step


# The temp tables of one apply_receipts call: each created by the phase named, all dropped
# together when the call ends (a day without receipts ends after the first phase).
_TEMP_TABLES = (
    "_rc",  # the day's receipt rows, each judged against the reminder it names: _read_receipts
    "_upd",  # per reminder with receipts: its old and new status and dates: _judge_reminders
    "_rt",  # the tenures of reminders that became effective: _queue_ledger_events
)


# --------------------------------------------------------------------------- receipts


@nightly_step
def apply_receipts(con: Con, settings: Settings, day: dt.date) -> ReceiptsReport:
    """Apply the receipts of inbox day ``day`` to their reminders.

    delivered/acknowledged make a reminder effective (``effective_on`` = the receipt's UTC
    date; the earliest wins and it never becomes ineffective again); failed/expired mark it
    for a fallback. A receipt naming no reminder, or the wrong channel, is quarantined as
    ``unknown_reminder``. Newly effective reminders queue ``reminder_effective`` (and
    ``acknowledged``) ledger events carrying the receipt row's SHA-256.
    """
    del settings  # receipts follow no regional policy; kept for the uniform step signature
    if not _read_receipts(con, day):
        drop_tables(con, _TEMP_TABLES)
        return ReceiptsReport(day, 0, 0, 0, 0, 0, 0)
    _quarantine_unknown(con, day)
    _judge_reminders(con)
    _update_reminders(con, day)
    _queue_ledger_events(con, day)
    report = _report(con, day)
    drop_tables(con, _TEMP_TABLES)
    return report


def _read_receipts(con: Con, day: dt.date) -> int:
    """``_rc``: the receipt rows of ``day`` with their file, digest and whether the reminder they
    name went out on their channel (``known``). Returns how many there are."""
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _rc AS
        WITH rr AS (SELECT * FROM receipt_rows WHERE logical_date = $d),
        rem AS (SELECT reminder_id, channel FROM reminders SEMI JOIN rr USING (reminder_id))
        SELECT rr.*, coalesce(f.file_name, rr.file_sha256) AS file_name,
               coalesce(f.kind, 'receipts') AS kind, rem.channel AS reminder_channel,
               coalesce(rem.channel = rr.channel, false) AS known,
               sha256(concat_ws('|', rr.reminder_id, rr.channel, rr.status,
                                strftime(rr."at", '%Y-%m-%dT%H:%M:%S.%fZ'),
                                coalesce(rr.provider_ref, ''))) AS digest
        FROM rr LEFT JOIN rem USING (reminder_id)
        LEFT JOIN (SELECT sha256, min(file_name) AS file_name, min(kind) AS kind FROM files
                   GROUP BY sha256) f ON f.sha256 = rr.file_sha256
        """,
        {"d": day},
    )
    return count_of(con, "SELECT count(*) FROM _rc")


def _quarantine_unknown(con: Con, day: dt.date) -> None:
    """Quarantine the receipts naming no reminder, or one that went out on another channel."""
    run_sql(
        con,
        """
        INSERT INTO quarantine
        SELECT file_name, file_sha256, kind, $d, line_no, 'receipts', 'unknown_reminder',
               concat('receipt ', status, ' for reminder ', reminder_id, ' on channel ', channel,
                      CASE WHEN reminder_channel IS NULL THEN ': no such reminder was scheduled'
                           ELSE concat(': that reminder went out by ', reminder_channel) END,
                      '; check the gateway''s receipt export, correct it and replay'),
               NULL
        FROM _rc WHERE NOT known ORDER BY file_sha256, line_no
        ON CONFLICT DO NOTHING
        """,
        {"d": day},
    )


def _judge_reminders(con: Con) -> None:
    """``_upd``: for every reminder the known receipts name, its status and effective date before
    and after them, and the digests the ledger events carry."""
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _upd AS
        WITH agg AS (
            SELECT reminder_id,
                min("at") FILTER (WHERE status = 'delivered') AS delivered_at,
                min("at") FILTER (WHERE status = 'acknowledged') AS ack_at,
                last(status ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE status IN ('failed', 'expired')) AS fail_status,
                first(digest ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE status IN ('delivered', 'acknowledged')) AS effective_digest,
                first(digest ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE status = 'acknowledged') AS ack_digest,
                first(provider_ref ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE provider_ref IS NOT NULL) AS provider_ref
            FROM _rc WHERE known GROUP BY reminder_id
        )
        SELECT r.reminder_id, r.tenure_id, r.msisdn, r.channel, r.slot, r.disconnected_on,
               r.status AS old_status, a.ack_at, a.effective_digest, a.ack_digest,
               -- Effective is final: a late failed/expired receipt cannot undo a delivery.
               CASE WHEN r.status = 'acknowledged' OR a.ack_at IS NOT NULL THEN 'acknowledged'
                    WHEN r.status = 'delivered' OR a.delivered_at IS NOT NULL THEN 'delivered'
                    WHEN r.status = 'cancelled' THEN 'cancelled'
                    WHEN a.fail_status IS NOT NULL THEN a.fail_status
                    ELSE r.status END AS new_status,
               least(r.effective_on, CAST(a.delivered_at AS DATE), CAST(a.ack_at AS DATE))
                   AS new_effective_on,
               coalesce(r.provider_ref, a.provider_ref) AS provider_ref
        FROM reminders r JOIN agg a USING (reminder_id)
        """,
    )


def _update_reminders(con: Con, day: dt.date) -> None:
    """Write ``_upd`` to the reminders; a newly failed one is due a fallback from ``day``."""
    run_sql(
        con,
        """
        UPDATE reminders SET status = u.new_status, effective_on = u.new_effective_on,
                             provider_ref = u.provider_ref,
                             fallback_due = CASE WHEN u.new_status IN ('failed', 'expired')
                                                 THEN coalesce(reminders.fallback_due, $d) END
        FROM _upd u WHERE reminders.reminder_id = u.reminder_id
        """,
        {"d": day},
    )


def _queue_ledger_events(con: Con, day: dt.date) -> None:
    """Queue ``reminder_effective`` and ``acknowledged`` for the reminders that just became so."""
    working_copy(
        con,
        "_rt",
        "tenures",
        "tenure_id",
        "SELECT tenure_id FROM _upd WHERE new_status IN ('delivered', 'acknowledged')",
        "t.tenure_id, t.tenure_start, t.tenure_end",
    )
    queue_ledger(
        con,
        day,
        """
        SELECT concat('reminder_effective:', u.reminder_id), u.new_effective_on, 'reminder_effective',
               u.msisdn, u.tenure_id, t.tenure_start, coalesce(t.tenure_end, u.disconnected_on),
               json_object('reminder_id', u.reminder_id, 'channel', u.channel, 'slot', u.slot,
                           'status', u.new_status, 'effective_on', u.new_effective_on,
                           'receipt_sha256', u.effective_digest, 'disconnected_on', u.disconnected_on)
        FROM _upd u JOIN _rt t ON t.tenure_id = u.tenure_id
        WHERE u.old_status NOT IN ('delivered', 'acknowledged')
          AND u.new_status IN ('delivered', 'acknowledged')
        UNION ALL
        SELECT concat('acknowledged:', u.reminder_id), CAST(u.ack_at AS DATE), 'acknowledged',
               u.msisdn, u.tenure_id, t.tenure_start, coalesce(t.tenure_end, u.disconnected_on),
               json_object('reminder_id', u.reminder_id, 'channel', u.channel,
                           'acknowledged_at', strftime(u.ack_at, '%Y-%m-%dT%H:%M:%SZ'),
                           'receipt_sha256', u.ack_digest, 'disconnected_on', u.disconnected_on)
        FROM _upd u JOIN _rt t ON t.tenure_id = u.tenure_id
        WHERE u.old_status <> 'acknowledged' AND u.new_status = 'acknowledged'
        """,
    )


def _report(con: Con, day: dt.date) -> ReceiptsReport:
    row = run_sql(
        con,
        """
        SELECT (SELECT count(*) FROM _rc), (SELECT count(*) FROM _rc WHERE known),
               (SELECT count(*) FROM _rc WHERE NOT known),
               count(*) FILTER (WHERE old_status NOT IN ('delivered', 'acknowledged')
                                AND new_status IN ('delivered', 'acknowledged')),
               count(*) FILTER (WHERE old_status <> 'acknowledged' AND new_status = 'acknowledged'),
               count(*) FILTER (WHERE old_status NOT IN ('failed', 'expired')
                                AND new_status IN ('failed', 'expired'))
        FROM _upd
        """,
    ).fetchone()
    assert row is not None
    return ReceiptsReport(day, *(int(v) for v in row))
