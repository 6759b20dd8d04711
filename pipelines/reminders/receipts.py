"""Step ``receipts``: delivery receipts and acknowledgements of the day's drops make reminders
effective (or failed), judged against the reminders they name; the rest is quarantined.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.config import Settings
from pipelines.db import Con, nightly_step
from pipelines.lifecycle.queue import queue_ledger
from pipelines.lifecycle.sql import FILE_NAMES, count_of, drop_tables, run_sql, working_copy
from pipelines.reminders.ids import temp_table_from_rows


@dataclass(frozen=True)
class ReceiptsReport:
    day: dt.date
    receipts: int  # receipt rows of the day
    applied: int  # judged genuine: they count
    unknown: int  # quarantined as unknown_reminder
    newly_effective: int
    newly_acknowledged: int
    newly_failed: int  # failed or expired: a fallback follows at the schedule step
    not_sent: int = 0  # quarantined as reminder_not_sent
    before_send: int = 0  # quarantined as receipt_before_send
    after_release: int = 0  # quarantined as receipt_after_release


# Why a receipt cannot be genuine, in the order they are tried (docs/architecture.md, "Receipts
# stage"); a receipt with none of them counts. Quarantined receipts never touch a reminder.
REASONS: tuple[str, ...] = (
    "unknown_reminder",  # no such reminder, or it went out on another channel
    "reminder_not_sent",  # the reminder had not been sent before this inbox's day
    "receipt_before_send",  # timed before the reminder's send time, less the clock skew allowed
    "receipt_after_release",  # on a carrier day after the number's release
)

# The temp tables of one apply_receipts call: each created by the phase named, all dropped
# together when the call ends (a day without receipts ends after the first phase).
_TEMP_TABLES = (
    "_rc",  # the day's receipt rows, each judged against the reminder it names: _read_receipts
    "_upd",  # per reminder with receipts: its old and new status and dates: _judge_reminders
    "_rt",  # the tenures of reminders that became effective: _queue_ledger_events
)


# receipt_rows' columns (pipelines.ingest.schema), for receipts that did not come in a drop.
_BIND_ROW_SCHEMA = pa.schema(
    [
        ("file_sha256", pa.string()),
        ("line_no", pa.int64()),
        ("logical_date", pa.date32()),
        ("reminder_id", pa.string()),
        ("channel", pa.string()),
        ("status", pa.string()),
        ("at", pa.timestamp("us")),
        ("provider_ref", pa.string()),
    ]
)

# --------------------------------------------------------------------------- receipts


@nightly_step
def apply_receipts(con: Con, settings: Settings, day: dt.date) -> ReceiptsReport:
    """Apply the receipts of inbox day ``day`` to their reminders.

    A receipt counts only when it is genuine (:data:`REASONS`, :func:`_read_receipts`);
    the others are quarantined with their reason. delivered/acknowledged make a reminder
    effective (``effective_on`` = the carrier's day of the receipt, ``settings.timezone``; the
    earliest wins and it never becomes ineffective again); failed/expired mark it for a
    fallback. Newly effective reminders queue ``reminder_effective`` (and ``acknowledged``)
    ledger events carrying the receipt row's SHA-256.
    """
    return _apply(con, settings, day, "SELECT * FROM receipt_rows WHERE logical_date = $d", day)


def apply_bind_receipts(
    con: Con, settings: Settings, day: dt.date, rows: Sequence[Mapping[str, Any]]
) -> ReceiptsReport:
    """Apply receipts that arrived on a gateway's bind while night ``day`` sent (SMPP delivery
    receipts): the rules of :func:`apply_receipts`, one exception: they answer reminders sent
    up to and including this night (``sent_on <= day``), since they came after the send.

    ``rows`` have ``receipt_rows``' columns (``file_sha256``/``line_no`` of the receipts file
    they were recorded in, ``logical_date`` = ``day``); they are not stored in ``receipt_rows``
    (the record file is ingested with the next night's inbox and judged again: no change then).
    """
    temp_table_from_rows(con, "_bind_rows", rows, _BIND_ROW_SCHEMA)
    try:
        return _apply_bind(con, settings, day)
    finally:
        drop_tables(con, ("_bind_rows",))


@nightly_step
def _apply_bind(con: Con, settings: Settings, day: dt.date) -> ReceiptsReport:
    return _apply(
        con, settings, day, "SELECT * FROM _bind_rows WHERE logical_date = $d", day + dt.timedelta(days=1)
    )


def _apply(con: Con, settings: Settings, day: dt.date, source: str, sent_before: dt.date) -> ReceiptsReport:
    if not _read_receipts(con, settings, day, source, sent_before):
        drop_tables(con, _TEMP_TABLES)
        return ReceiptsReport(day, 0, 0, 0, 0, 0, 0)
    _quarantine_judged(con, day)
    _judge_reminders(con)
    _update_reminders(con, day)
    _queue_ledger_events(con, day)
    report = _report(con, day)
    drop_tables(con, _TEMP_TABLES)
    return report


def _read_receipts(con: Con, settings: Settings, day: dt.date, source: str, sent_before: dt.date) -> int:
    """``_rc``: the receipt rows of ``source`` (SQL: the inbox of ``day``, or a bind's) with their file, digest, carrier day (``on_day``, not
    before the sending day) and ``reason``, the first of :data:`REASONS` that makes them not
    genuine (NULL: they count). Returns how many rows there are.

    When was a reminder sent? The state keeps no wall-clock send instant, only ``sent_on``:
    the send step of the night of logical day ``sent_on`` sent it, so it cannot have left
    before that carrier day began. A receipt counts from the start of ``sent_on``'s carrier
    day less ``receipt_clock_skew_minutes`` (a gateway clock running behind ours); one
    timed earlier answers something else. A bound, not the instant: a receipt timed earlier
    on the sending day still counts. The inbox of ``day`` was cut before the night of ``day``
    sent anything, so only reminders sent on an earlier night can have receipts in it (which
    also keeps a rerun of this step after the send step judging alike): ``sent_before`` is
    ``day`` for the inbox, ``day + 1`` for receipts that came on the bind after the night's send.
    A receipt after the
    release (its carrier day after ``released_on`` of the reminder's disconnection episode)
    reminds a prior owner who is no longer one.
    """
    skew = int(settings.receipt_clock_skew_minutes)
    on_day = settings.carrier_day_sql('rr."at"')
    sent_start = settings.day_start_sql("rem.sent_on")
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _rc AS
        WITH rr AS ({source}),
        rem AS (SELECT reminder_id, channel, msisdn, tenure_id, disconnected_on, sent_on
                FROM reminders SEMI JOIN rr USING (reminder_id)),
        rel AS (SELECT tenure_id, disconnected_on, min(released_on) AS released_on
                FROM releases SEMI JOIN rem USING (tenure_id) GROUP BY ALL)
        SELECT rr.*, coalesce(f.file_name, rr.file_sha256) AS file_name,
               coalesce(f.kind, 'receipts') AS kind, rem.channel AS reminder_channel,
               nr_mask(rem.msisdn) AS masked, rem.sent_on, rel.released_on,
               -- A receipt inside the skew allowance before the sending day counts on that day:
               -- the allowance forgives a clock, it does not make an earlier day.
               greatest({on_day}, rem.sent_on) AS on_day,
               CASE WHEN rem.channel IS DISTINCT FROM rr.channel THEN 'unknown_reminder'
                    WHEN rem.sent_on IS NULL OR rem.sent_on >= $sb THEN 'reminder_not_sent'
                    WHEN rr."at" < {sent_start} - to_minutes({skew}) THEN 'receipt_before_send'
                    WHEN {on_day} > rel.released_on THEN 'receipt_after_release'
               END AS reason,
               sha256(concat_ws('|', rr.reminder_id, rr.channel, rr.status,
                                strftime(rr."at", '%Y-%m-%dT%H:%M:%S.%fZ'),
                                coalesce(rr.provider_ref, ''))) AS digest
        FROM rr LEFT JOIN rem USING (reminder_id)
        LEFT JOIN rel ON rel.tenure_id = rem.tenure_id AND rel.disconnected_on = rem.disconnected_on
        LEFT JOIN ({FILE_NAMES}) f ON f.sha256 = rr.file_sha256
        """,
        {"d": day, "sb": sent_before},
    )
    return count_of(con, "SELECT count(*) FROM _rc")


def _quarantine_judged(con: Con, day: dt.date) -> None:
    """Quarantine the receipts that are not genuine, each with its reason and what to do."""
    what = "concat('receipt ', status, ' at ', strftime(\"at\", '%Y-%m-%dT%H:%M:%SZ'), ' for reminder ', reminder_id)"
    run_sql(
        con,
        f"""
        INSERT INTO quarantine
        SELECT file_name, file_sha256, kind, $d, line_no, 'receipts', reason,
               CASE reason
               WHEN 'unknown_reminder' THEN concat(
                   {what}, ' on channel ', channel,
                   CASE WHEN reminder_channel IS NULL THEN ': no such reminder was scheduled'
                        ELSE concat(': that reminder went out by ', reminder_channel) END,
                   '; check the gateway''s receipt export, correct it and replay')
               WHEN 'reminder_not_sent' THEN concat(
                   {what}, ' (number ', masked, '): that reminder had not been sent before ', $d,
                   '; it does not count. Check the gateway''s export names the right reminder id')
               WHEN 'receipt_before_send' THEN concat(
                   {what}, ' (number ', masked, '): before the reminder was sent on ', sent_on,
                   ' (carrier day, less the clock skew allowed); it does not count. Check the ',
                   'gateway''s clock and export; raise receipt_clock_skew_minutes only for a known skew')
               ELSE concat(
                   {what}, ' (number ', masked, '): after the number was released on ', released_on,
                   '; it does not count. The prior owner was reminded too late: review the release')
               END,
               NULL
        FROM _rc WHERE reason IS NOT NULL ORDER BY file_sha256, line_no
        ON CONFLICT DO NOTHING
        """,
        {"d": day},
    )


def _judge_reminders(con: Con) -> None:
    """``_upd``: for every reminder the genuine receipts name, its status and effective date
    before and after them, and the digests the ledger events carry. Days are carrier days
    (``_rc.on_day``): the earliest instant falls on the earliest day."""
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _upd AS
        WITH agg AS (
            SELECT reminder_id,
                min(on_day) FILTER (WHERE status = 'delivered') AS delivered_on,
                min("at") FILTER (WHERE status = 'acknowledged') AS ack_at,
                min(on_day) FILTER (WHERE status = 'acknowledged') AS ack_on,
                last(status ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE status IN ('failed', 'expired')) AS fail_status,
                first(digest ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE status IN ('delivered', 'acknowledged')) AS effective_digest,
                first(digest ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE status = 'acknowledged') AS ack_digest,
                first(provider_ref ORDER BY "at", file_sha256, line_no)
                    FILTER (WHERE provider_ref IS NOT NULL) AS provider_ref
            FROM _rc WHERE reason IS NULL GROUP BY reminder_id
        )
        SELECT r.reminder_id, r.tenure_id, r.msisdn, r.channel, r.slot, r.disconnected_on,
               r.status AS old_status, a.ack_at, a.ack_on, a.effective_digest, a.ack_digest,
               -- Effective is final: a late failed/expired receipt cannot undo a delivery.
               CASE WHEN r.status = 'acknowledged' OR a.ack_at IS NOT NULL THEN 'acknowledged'
                    WHEN r.status = 'delivered' OR a.delivered_on IS NOT NULL THEN 'delivered'
                    WHEN r.status = 'cancelled' THEN 'cancelled'
                    WHEN a.fail_status IS NOT NULL THEN a.fail_status
                    ELSE r.status END AS new_status,
               least(r.effective_on, a.delivered_on, a.ack_on) AS new_effective_on,
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
        SELECT concat('acknowledged:', u.reminder_id), u.ack_on, 'acknowledged',
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
        SELECT (SELECT count(*) FROM _rc), (SELECT count(*) FROM _rc WHERE reason IS NULL),
               (SELECT count(*) FROM _rc WHERE reason = 'unknown_reminder'),
               count(*) FILTER (WHERE old_status NOT IN ('delivered', 'acknowledged')
                                AND new_status IN ('delivered', 'acknowledged')),
               count(*) FILTER (WHERE old_status <> 'acknowledged' AND new_status = 'acknowledged'),
               count(*) FILTER (WHERE old_status NOT IN ('failed', 'expired')
                                AND new_status IN ('failed', 'expired')),
               (SELECT count(*) FROM _rc WHERE reason = 'reminder_not_sent'),
               (SELECT count(*) FROM _rc WHERE reason = 'receipt_before_send'),
               (SELECT count(*) FROM _rc WHERE reason = 'receipt_after_release')
        FROM _upd
        """,
    ).fetchone()
    assert row is not None
    return ReceiptsReport(day, *(int(v) for v in row))
