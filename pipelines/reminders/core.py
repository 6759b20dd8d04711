"""Reminders to a number's prior owner: receipts, schedule, rendering into the outbox, sending.

Steps of the nightly run for logical date D (see ``pipelines.lifecycle.core`` for the order):
:func:`apply_receipts` (step 1), :func:`schedule_reminders` (step 4) and
:func:`send_reminders` (step 5). Reminder ids are deterministic
(``'R' + sha256(tenure|disconnected_on|slot|channel)[:20]``) and are the outbox idempotency
key, so a rerun never schedules, renders or sends a reminder twice. Tables are declared in
``pipelines.lifecycle.core``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.config import Settings
from pipelines.db import nightly_step
from pipelines.lifecycle.core import (
    REMINDING_STATES,
    policy_sql,
    queue_ledger,
    run_sql,
    working_copy,
)
from pipelines.reminders.channels import BatchOutcome, Channel, OutgoingReminder, send_with_retry
from pipelines.reminders.templates import ReminderContext, RenderedReminder, render_reminder

__all__ = [
    "ReceiptsReport",
    "ScheduleReport",
    "SendReport",
    "apply_receipts",
    "reminder_id",
    "schedule_reminders",
    "send_reminders",
]

log = logging.getLogger(__name__)
Con = duckdb.DuckDBPyConnection
_REMINDING = "(" + ", ".join(f"'{s}'" for s in REMINDING_STATES) + ")"


def reminder_id(tenure_id: str, disconnected_on: dt.date, slot: str, channel: str) -> str:
    """Deterministic reminder id; equals the SQL ``nr_reminder_id`` (``lifecycle.expand_sql``)."""
    key = f"{tenure_id}|{disconnected_on.isoformat()}|{slot}|{channel}"
    return "R" + hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ReceiptsReport:
    day: dt.date
    receipts: int  # receipt rows of the day
    applied: int
    unknown: int  # quarantined as unknown_reminder
    newly_effective: int
    newly_acknowledged: int
    newly_failed: int  # failed or expired: a fallback follows at the schedule step


@dataclass(frozen=True)
class ScheduleReport:
    day: dt.date
    scheduled: int  # reminders for new disconnections
    hold: int  # extra reminders for numbers held at the gate today
    fallbacks: int  # next-channel reminders after a failure
    rendered: int  # outbox rows written today
    rendered_one_by_one: int  # of those, rendered without the per-group template fast path


@dataclass(frozen=True)
class SendReport:
    day: dt.date
    attempted: int
    sent: int
    failed: int  # permanent (or retried for too many nights): fallback at the next schedule step
    retry_later: int  # transient: tried again on the next run
    no_channel: int  # pending rows for a channel the caller did not pass
    batches: int


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
    p = {"d": day}
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
        p,
    )
    if not _scalar_count(con, "SELECT count(*) FROM _rc"):
        run_sql(con, "DROP TABLE IF EXISTS _rc")
        return ReceiptsReport(day, 0, 0, 0, 0, 0, 0)
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
        p,
    )
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
    run_sql(
        con,
        """
        UPDATE reminders SET status = u.new_status, effective_on = u.new_effective_on,
                             provider_ref = u.provider_ref,
                             fallback_due = CASE WHEN u.new_status IN ('failed', 'expired')
                                                 THEN coalesce(reminders.fallback_due, $d) END
        FROM _upd u WHERE reminders.reminder_id = u.reminder_id
        """,
        p,
    )
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
    for name in ("_rc", "_upd", "_rt"):
        run_sql(con, f"DROP TABLE IF EXISTS {name}")
    return ReceiptsReport(day, *(int(v) for v in row))


# --------------------------------------------------------------------------- schedule


def _channel_sql(settings: Settings) -> tuple[str, str]:
    """(best channel, next channel after ``channel``) as SQL over columns of ``t`` (tenures)."""
    letter = "'letter'" if settings.letter.enabled else "NULL"
    best = (
        "CASE WHEN t.contact_phone IS NOT NULL THEN 'sms' "
        f"WHEN t.contact_email IS NOT NULL THEN 'email' ELSE {letter} END"
    )
    after = (
        "CASE f.channel WHEN 'sms' THEN CASE WHEN t.contact_email IS NOT NULL THEN 'email' "
        f"ELSE {letter} END WHEN 'email' THEN {letter} END"
    )
    return best, after


_ADDRESS = (
    "CASE x.channel WHEN 'sms' THEN x.contact_phone WHEN 'email' THEN x.contact_email "
    "ELSE x.subscriber_ref END"
)


def _insert_new_reminders(con: Con, day: dt.date, source: str) -> int:
    """Insert reminders from temp table ``source`` whose deterministic id is not yet on record."""
    if not _scalar_count(con, f"SELECT count(*) FROM {source}"):
        return 0
    row = run_sql(
        con,
        f"""
        INSERT INTO reminders
        SELECT x.reminder_id, x.tenure_id, x.msisdn, x.disconnected_on, x.slot, x.reminder_no,
               x.final, x.channel, x.address, x.language, x.due_on, 'scheduled', 0, NULL, NULL,
               NULL, $d, x.origin_id, false, NULL, x.release_on, x.cause
        FROM {source} x
        ANTI JOIN (SELECT reminder_id FROM reminders SEMI JOIN {source} USING (tenure_id)) r
            USING (reminder_id)
        """,
        {"d": day},
    ).fetchone()
    return int(row[0]) if row else 0


@nightly_step
def schedule_reminders(con: Con, settings: Settings, day: dt.date) -> ScheduleReport:
    """Schedule the reminders that ``day`` calls for and render the due ones into the outbox.

    * a new disconnection (cancel, or a 双停 suspension) gets one reminder per policy offset:
      ``disconnected_on + n`` for n >= 0, ``freeze_ends + n`` for n < 0; a date already past
      (a late event) becomes ``day``. Channel: sms if the owner left a phone, else email,
      else a letter.
    * a number held at the gate today gets one more reminder on every channel the owner has
      that has no effective reminder yet (or the best channel if all have one).
    * a failed/expired reminder gets a fallback on the owner's next channel
      (sms → email → letter), due ``day``.
    * every scheduled reminder due by ``day`` is rendered into the outbox (pending).
    """
    p = {"d": day}
    best, after = _channel_sql(settings)
    offsets = policy_sql(settings, "reminder_offsets", "s.region")
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _failed AS
        SELECT * FROM reminders
        WHERE status IN ('failed', 'expired') AND NOT fallback_handled AND fallback_due <= $d
        """,
        p,
    )
    # The numbers this step acts on: numbers that entered a disconnection today, numbers held
    # today (each found by equalities the scan applies before decoding the other columns; an
    # IN or OR would decode ten million rows), and the numbers of the failed reminders while
    # their disconnection is live.
    cols = "s.msisdn, s.state, s.tenure_id, s.disconnected_on, s.freeze_ends, s.cause, s.region"
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _sn AS
        SELECT {cols}, 'new' AS why FROM number_state s
        WHERE s.state = 'suspended' AND s.changed_logical = $d AND s.disconnected_on IS NOT NULL
        UNION ALL
        SELECT {cols}, 'new' FROM number_state s
        WHERE s.state = 'frozen' AND s.changed_logical = $d AND s.disconnected_on IS NOT NULL
        UNION ALL
        SELECT {cols}, 'hold' FROM number_state s WHERE s.state = 'held' AND s.hold_started = $d
        UNION ALL
        SELECT * FROM (
            SELECT {cols}, 'fallback' AS why FROM number_state s
            WHERE s.msisdn IN (SELECT msisdn FROM _failed)
        ) s SEMI JOIN _failed f ON f.msisdn = s.msisdn AND f.tenure_id = s.tenure_id
            AND f.disconnected_on = s.disconnected_on
        WHERE s.state IN {_REMINDING}
        """,
        p,
    )
    # Their owners' contacts, read from the ten-million-row tenures once for all three.
    working_copy(
        con,
        "_tc",
        "tenures",
        "tenure_id",
        "SELECT tenure_id FROM _sn UNION ALL SELECT tenure_id FROM _failed",
        "t.tenure_id, t.contact_phone, t.contact_email, t.subscriber_ref, t.language",
    )
    inserted = run_sql(
        con,
        f"""
        INSERT INTO reminders
        WITH cand AS (
            SELECT s.msisdn, s.tenure_id, s.disconnected_on, s.freeze_ends, s.cause,
                   t.contact_phone, t.contact_email, t.subscriber_ref,
                   coalesce(t.language, 'zh-CN') AS language, {best} AS channel, {offsets} AS offs
            FROM _sn s JOIN _tc t ON t.tenure_id = s.tenure_id
            WHERE s.why = 'new'
        ), dues AS (
            SELECT cand.* EXCLUDE (offs), list_sort(list_transform(offs, lambda o: struct_pack(
                       due := CASE WHEN o >= 0 THEN disconnected_on + o ELSE freeze_ends + o END,
                       off := o))) AS plan
            FROM cand WHERE channel IS NOT NULL
        ), kept AS (
            -- Slots a late event pushes onto the same day are one reminder (the later slot).
            -- List functions per number rather than window functions over all of them.
            SELECT dues.* EXCLUDE (plan), list_filter(plan, lambda x, i: i = len(plan)
                       OR greatest(x.due, $d) < greatest(plan[i + 1].due, $d)) AS slots
            FROM dues
        ), x AS (
            SELECT kept.* EXCLUDE (slots), unnest(list_transform(slots, lambda x, i: struct_pack(
                       slot := 'offset:' || x.off, due := greatest(x.due, $d), no := i,
                       n := len(slots)))) AS u
            FROM kept
        ), y AS (
            SELECT x.*, x.u.slot AS slot FROM x
        ), new AS (
            SELECT nr_reminder_id(x.tenure_id, x.disconnected_on, x.slot, x.channel) AS reminder_id,
                   x.tenure_id, x.msisdn, x.disconnected_on, x.slot,
                   CAST(x.u.no AS INTEGER) AS reminder_no, x.u.no = x.u.n AS final, x.channel,
                   {_ADDRESS} AS address, x.language, x.u.due AS due_on,
                   x.freeze_ends AS release_on, x.cause
            FROM y AS x
        )
        SELECT x.reminder_id, x.tenure_id, x.msisdn, x.disconnected_on, x.slot, x.reminder_no,
               x.final, x.channel, x.address, x.language, x.due_on, 'scheduled', 0, NULL, NULL,
               NULL, $d, NULL, false, NULL, x.release_on, x.cause
        FROM new x
        -- NOT IN, not an anti join: the planner would build its hash table on the new rows.
        WHERE x.reminder_id NOT IN (
            SELECT reminder_id FROM reminders
            SEMI JOIN (SELECT tenure_id FROM _sn WHERE why = 'new') c USING (tenure_id))
        """,
        p,
    ).fetchone()
    scheduled = int(inserted[0]) if inserted else 0

    letter_on = "true" if settings.letter.enabled else "false"
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _hold AS
        WITH h AS (
            SELECT s.msisdn, s.tenure_id, s.disconnected_on, s.cause, t.contact_phone,
                   t.contact_email, t.subscriber_ref, coalesce(t.language, 'zh-CN') AS language,
                   {best} AS best
            FROM _sn s JOIN _tc t ON t.tenure_id = s.tenure_id
            WHERE s.why = 'hold'
        ), has AS (
            SELECT h.*, 'sms' AS channel FROM h WHERE contact_phone IS NOT NULL
            UNION ALL SELECT h.*, 'email' FROM h WHERE contact_email IS NOT NULL
            UNION ALL SELECT h.*, 'letter' FROM h WHERE {letter_on}
        ), effective AS (
            SELECT DISTINCT r.tenure_id, r.disconnected_on, r.channel FROM reminders r
            SEMI JOIN h ON h.tenure_id = r.tenure_id
            WHERE r.status IN ('delivered', 'acknowledged')
        ), remaining AS (
            SELECT has.* FROM has ANTI JOIN effective e ON e.tenure_id = has.tenure_id
                AND e.disconnected_on = has.disconnected_on AND e.channel = has.channel
        ), chosen AS (
            SELECT * FROM remaining
            UNION ALL
            SELECT h.*, h.best FROM h ANTI JOIN remaining USING (msisdn) WHERE h.best IS NOT NULL
        ), plan AS (
            SELECT tenure_id, disconnected_on, max(reminder_no) AS last_no FROM reminders
            SEMI JOIN h USING (tenure_id) GROUP BY ALL
        ), x AS (
            SELECT c.*, CAST(coalesce(plan.last_no, 0) + 1 AS INTEGER) AS reminder_no
            FROM chosen c LEFT JOIN plan USING (tenure_id, disconnected_on)
        )
        SELECT nr_reminder_id(x.tenure_id, x.disconnected_on, 'hold', x.channel) AS reminder_id,
               x.tenure_id, x.msisdn, x.disconnected_on, 'hold' AS slot, x.reminder_no,
               false AS final, x.channel, {_ADDRESS} AS address, x.language, $d AS due_on,
               CAST(NULL AS VARCHAR) AS origin_id, $d + 1 AS release_on, x.cause
        FROM x
        """,
        p,
    )
    hold = _insert_new_reminders(con, day, "_hold")

    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _fb AS
        WITH f AS (
            SELECT f.* EXCLUDE (release_on, cause), t.contact_phone, t.contact_email,
                   t.subscriber_ref, {after} AS next_channel,
                   CASE WHEN s.state = 'held' THEN $d + 1 ELSE s.freeze_ends END AS release_on,
                   s.cause
            FROM _failed f
            JOIN _sn s ON s.msisdn = f.msisdn AND s.tenure_id = f.tenure_id
                 AND s.disconnected_on = f.disconnected_on AND s.why = 'fallback'
            JOIN _tc t ON t.tenure_id = f.tenure_id
        ), x AS (
            SELECT f.* EXCLUDE (channel, slot), f.next_channel AS channel,
                   concat('fallback:', regexp_replace(f.slot, '^fallback:', '')) AS slot,
                   f.reminder_id AS origin
            FROM f WHERE f.next_channel IS NOT NULL
        ), busy AS (
            -- The owner already gets a reminder on that channel today (e.g. a hold reminder).
            SELECT DISTINCT r.tenure_id, r.disconnected_on, r.channel FROM reminders r
            SEMI JOIN x USING (tenure_id)
            WHERE r.due_on = $d AND r.status NOT IN ('failed', 'expired', 'cancelled')
        )
        SELECT nr_reminder_id(x.tenure_id, x.disconnected_on, x.slot, x.channel) AS reminder_id,
               x.tenure_id, x.msisdn, x.disconnected_on, x.slot, x.reminder_no, x.final, x.channel,
               {_ADDRESS} AS address, x.language, $d AS due_on, x.origin AS origin_id,
               x.release_on, x.cause
        FROM x ANTI JOIN busy b ON b.tenure_id = x.tenure_id
            AND b.disconnected_on = x.disconnected_on AND b.channel = x.channel
        """,
        p,
    )
    fallbacks = _insert_new_reminders(con, day, "_fb")
    if _scalar_count(con, "SELECT count(*) FROM _failed"):
        run_sql(
            con,
            """
            UPDATE reminders SET fallback_handled = true
            WHERE reminder_id IN (SELECT reminder_id FROM _failed)
            """,
        )
    rendered, one_by_one = _render_due(con, settings, day)
    for name in ("_sn", "_tc", "_hold", "_failed", "_fb"):
        run_sql(con, f"DROP TABLE IF EXISTS {name}")
    return ScheduleReport(day, scheduled, hold, fallbacks, rendered, one_by_one)


# --------------------------------------------------------------------------- render


_CTX_COLUMNS = (
    "reminder_id, msisdn, masked, channel, language, disconnected_on, release_on, "
    "reminder_no, final, cause, gkey"
)


def _context(settings: Settings, row: Sequence[Any]) -> ReminderContext:
    rid, msisdn, _masked, channel, language, disconnected, release, no, final, cause, _g = row
    return ReminderContext(
        reminder_id=rid,
        msisdn=msisdn,
        channel=channel,
        language=language,
        disconnected_on=disconnected,
        release_on=release,
        reminder_no=int(no),
        final=bool(final),
        carrier_name=settings.carrier_name,
        unbind_url=settings.unbind_url,
        national_unbind_service=settings.national_unbind_service,
        cause=cause,
    )


def _swap(text: str | None, ex_masked: str, ex_id: str, masked: str, rid: str) -> str | None:
    # Same order as the SQL replace() below.
    return None if text is None else text.replace(ex_masked, masked).replace(ex_id, rid)


def _render_due(con: Con, settings: Settings, day: dt.date) -> tuple[int, int]:
    """Render due reminders into the outbox.

    Rendering one by one costs ~70 µs a reminder in Python; a night of a million would take
    over a minute. Reminders that differ only in number and id share a text, so each group
    (channel, language, cause, ordinal, dates, country code, mask length) is rendered once
    and filled in by SQL ``replace``. A second member of every group is rendered for real and
    must match the filled-in text, else the whole group is rendered one by one: a template
    that used the number or id in any other way cannot slip through.
    """
    p = {"d": day}
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _todo AS
        WITH c AS (
            -- Reminders of a number that left its disconnection (restore, port, release,
            -- reissue) were cancelled by that transition: every scheduled one is current.
            SELECT r.reminder_id, r.msisdn, r.channel, r.address, r.language, r.due_on,
                   r.reminder_no, r.final, r.disconnected_on,
                   greatest(r.release_on, $d + 1) AS release_on,
                   CASE WHEN r.cause = 'suspend' THEN 'suspend' ELSE 'cancel' END AS cause
            FROM reminders r
            WHERE r.status = 'scheduled' AND r.due_on <= $d
        ), n AS (
            SELECT c.* FROM c ANTI JOIN (SELECT reminder_id FROM outbox SEMI JOIN c USING (reminder_id)) o
                USING (reminder_id)
        ), m AS (
            SELECT n.*, nr_mask(n.msisdn) AS masked FROM n
        )
        SELECT m.*, concat_ws('|', channel, language, cause, reminder_no, final, disconnected_on,
                              release_on, substr(msisdn, 1, 1 + nr_cc_len(msisdn)), length(masked))
                        AS gkey
        FROM m
        """,
        p,
    )
    if not _scalar_count(con, "SELECT count(*) FROM _todo"):
        run_sql(con, "DROP TABLE IF EXISTS _todo")
        return 0, 0
    # The two members with the smallest ids of every group: an aggregate, not a window, which
    # would sort every row of the day's outbox.
    samples = run_sql(
        con,
        f"""
        SELECT {_CTX_COLUMNS}, s.gi FROM _todo JOIN (
            SELECT unnest(ids) AS reminder_id, unnest(range(1, len(ids) + 1)) AS gi
            FROM (SELECT min(reminder_id, 2) AS ids FROM _todo GROUP BY gkey)) s USING (reminder_id)
        ORDER BY gkey, s.gi
        """,
    ).fetchall()
    templates: list[dict[str, Any]] = []
    exemplars: dict[str, tuple[Sequence[Any], RenderedReminder]] = {}
    bad: list[str] = []
    for row in samples:
        gkey, gi = row[10], row[11]
        rendered = render_reminder(_context(settings, row[:11]))
        if gi == 1:
            exemplars[gkey] = (row, rendered)
            continue
        ex_row, ex = exemplars[gkey]
        args = (str(ex_row[2]), str(ex_row[0]), str(row[2]), str(row[0]))
        same = (
            _swap(ex.subject, *args) == rendered.subject
            and _swap(ex.text, *args) == rendered.text
            and _swap(ex.html, *args) == rendered.html
            and ex.language == rendered.language
        )
        if not same:
            bad.append(gkey)
    for gkey, (ex_row, ex) in exemplars.items():
        if gkey not in bad:
            templates.append(
                {
                    "gkey": gkey,
                    "subject": ex.subject,
                    "text": ex.text,
                    "html": ex.html,
                    "lang": ex.language,
                    "ex_masked": ex_row[2],
                    "ex_id": ex_row[0],
                }
            )
    if bad:
        log.warning("%d reminder group(s) did not fit the template fast path; rendered one by one", len(bad))

    rendered_n = 0
    if templates:
        tpl = pa.Table.from_pylist(
            templates,
            schema=pa.schema(
                [
                    ("gkey", pa.string()),
                    ("subject", pa.string()),
                    ("text", pa.string()),
                    ("html", pa.string()),
                    ("lang", pa.string()),
                    ("ex_masked", pa.string()),
                    ("ex_id", pa.string()),
                ]
            ),
        )
        con.register("_tpl_arrow", tpl)
        try:
            run_sql(con, "CREATE OR REPLACE TEMP TABLE _tpl AS SELECT * FROM _tpl_arrow")
        finally:
            con.unregister("_tpl_arrow")
        run_sql(
            con,
            """
            INSERT INTO outbox
            SELECT t.reminder_id, t.reminder_id, t.channel, t.address, p.lang,
                   replace(replace(p.subject, p.ex_masked, t.masked), p.ex_id, t.reminder_id),
                   replace(replace(p.text, p.ex_masked, t.masked), p.ex_id, t.reminder_id),
                   replace(replace(p.html, p.ex_masked, t.masked), p.ex_id, t.reminder_id),
                   t.due_on, 'pending', 0, NULL, NULL, $d
            FROM _todo t JOIN _tpl p USING (gkey)
            """,
            p,
        )
        rendered_n += int(_scalar_count(con, "SELECT count(*) FROM _todo SEMI JOIN _tpl USING (gkey)"))
        run_sql(con, "DROP TABLE IF EXISTS _tpl")

    one_by_one = 0
    if bad:
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _bad (gkey VARCHAR)")
        con.executemany("INSERT INTO _bad VALUES (?)", [[g] for g in bad])
        rows = run_sql(
            con,
            f"""
            SELECT {_CTX_COLUMNS}, address, due_on FROM _todo SEMI JOIN _bad USING (gkey)
            ORDER BY reminder_id
            """,
        ).fetchall()
        out: list[dict[str, Any]] = []
        for row in rows:
            r = render_reminder(_context(settings, row[:11]))
            out.append(
                {
                    "reminder_id": row[0],
                    "channel": row[3],
                    "address": row[11],
                    "language": r.language,
                    "subject": r.subject,
                    "text": r.text,
                    "html": r.html,
                    "due_on": row[12],
                }
            )
        one_by_one = len(out)
        if out:
            con.register("_one_arrow", pa.Table.from_pylist(out))
            try:
                run_sql(
                    con,
                    """
                    INSERT INTO outbox
                    SELECT reminder_id, reminder_id, channel, address, language, subject, text, html,
                           due_on, 'pending', 0, NULL, NULL, $d
                    FROM _one_arrow ORDER BY reminder_id
                    """,
                    p,
                )
            finally:
                con.unregister("_one_arrow")
        run_sql(con, "DROP TABLE IF EXISTS _bad")
        rendered_n += one_by_one
    run_sql(con, "DROP TABLE IF EXISTS _todo")
    return rendered_n, one_by_one


def _scalar_count(con: Con, sql: str) -> int:
    row = run_sql(con, sql).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------- send


def send_reminders(
    con: Con,
    settings: Settings,
    day: dt.date,
    channels: Mapping[str, Channel],
    *,
    batch_size: int = 1000,
    attempts: int = 3,
    backoff_s: float = 0.5,
    give_up_after_nights: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Send pending outbox rows due by ``day`` through ``channels`` (name → Channel).

    Call it OUTSIDE a transaction: it commits after every batch, so what a gateway accepted is
    recorded even if a later batch fails. Rows tried on ``day`` already are skipped, so a rerun
    sends nothing twice; transient failures wait for the next run, and after
    ``give_up_after_nights`` nights count as permanent. A permanent failure marks the reminder
    failed; the next schedule step falls back to the owner's next channel. Every send queues a
    ``reminder_sent`` ledger event.
    """
    del settings  # channels are built by the caller from the settings
    p = {"d": day}
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _send AS
        SELECT reminder_id, channel, address, language, subject, text, due_on, html, attempts,
               row_number() OVER (PARTITION BY channel ORDER BY reminder_id) AS rn
        FROM outbox
        WHERE status = 'pending' AND due_on <= $d AND (last_attempt_on IS NULL OR last_attempt_on < $d)
        ORDER BY channel, rn
        """,
        p,
    )
    # What the ledger entry of a sent reminder carries, read once for the run instead of
    # joining the ten-million-row tenures for every batch; none of it changes while sending.
    con.execute("BEGIN TRANSACTION")
    try:
        working_copy(
            con,
            "_st",
            "tenures",
            "tenure_id",
            "SELECT m.tenure_id FROM reminders m SEMI JOIN _send USING (reminder_id)",
            "t.tenure_id, t.tenure_start, t.tenure_end",
        )
        run_sql(
            con,
            """
            CREATE OR REPLACE TEMP TABLE _sinfo AS
            SELECT m.reminder_id, m.msisdn, m.tenure_id, t.tenure_start,
                   coalesce(t.tenure_end, m.disconnected_on) AS tenure_end, m.channel, m.slot,
                   m.reminder_no, m.final, m.due_on, m.disconnected_on
            FROM reminders m SEMI JOIN _send USING (reminder_id)
            JOIN _st t ON t.tenure_id = m.tenure_id
            """,
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    per_channel = dict(run_sql(con, "SELECT channel, count(*) FROM _send GROUP BY channel").fetchall())
    no_channel = sum(int(n) for ch, n in per_channel.items() if ch not in channels)
    if no_channel:
        log.warning(
            "%d pending reminder(s) for channel(s) %s that this run has no adapter for; they stay pending",
            no_channel,
            ", ".join(sorted(str(c) for c in per_channel if c not in channels)),
        )
    sent = failed = retry = batches = attempted = 0
    for name in sorted(str(c) for c in per_channel if c in channels):
        channel = channels[name]
        total = int(per_channel[name])
        for start in range(1, total + 1, batch_size):
            rows = run_sql(
                con,
                """
                SELECT reminder_id, channel, address, language, subject, text, due_on, html, attempts
                FROM _send WHERE channel = $ch AND rn BETWEEN $a AND $b ORDER BY rn
                """,
                {"ch": name, "a": start, "b": start + batch_size - 1},
            ).fetchall()
            batch = [
                OutgoingReminder(
                    reminder_id=r[0],
                    channel=r[1],
                    to=r[2],
                    language=r[3],
                    subject=r[4],
                    text=r[5],
                    due_on=r[6],
                    html=r[7],
                )
                for r in rows
            ]
            nights = {r[0]: int(r[8]) + 1 for r in rows}
            outcome = send_with_retry(channel, batch, attempts=attempts, backoff_s=backoff_s, sleep=sleep)
            s, f, t = _record_batch(con, day, batch, outcome, nights, give_up_after_nights)
            sent += s
            failed += f
            retry += t
            attempted += len(batch)
            batches += 1
    for name in ("_send", "_st", "_sinfo"):
        run_sql(con, f"DROP TABLE IF EXISTS {name}")
    return SendReport(day, attempted, sent, failed, retry, no_channel, batches)


def _record_batch(
    con: Con,
    day: dt.date,
    batch: Sequence[OutgoingReminder],
    outcome: BatchOutcome,
    nights: Mapping[str, int],
    give_up_after_nights: int,
) -> tuple[int, int, int]:
    results: dict[str, dict[str, Any]] = {}
    for failure in outcome.failed:
        permanent = failure.permanent or nights[failure.reminder_id] >= give_up_after_nights
        results[failure.reminder_id] = {
            "reminder_id": failure.reminder_id,
            "result": "failed" if permanent else "retry",
            "provider_ref": None,
            "error": ("" if failure.permanent else f"transient for {nights[failure.reminder_id]} night(s): ")
            + failure.reason,
        }
    for ok in outcome.sent:
        results[ok.reminder_id] = {
            "reminder_id": ok.reminder_id,
            "result": "sent",
            "provider_ref": ok.provider_ref,
            "error": None,
        }
    for r in batch:
        # A channel that reports nothing for a reminder has not sent it: try again next run.
        results.setdefault(
            r.reminder_id,
            {
                "reminder_id": r.reminder_id,
                "result": "retry",
                "provider_ref": None,
                "error": "the channel reported no outcome",
            },
        )
    table = pa.Table.from_pylist(
        sorted(results.values(), key=lambda x: str(x["reminder_id"])),
        schema=pa.schema(
            [
                ("reminder_id", pa.string()),
                ("result", pa.string()),
                ("provider_ref", pa.string()),
                ("error", pa.string()),
            ]
        ),
    )
    p = {"d": day}
    con.execute("BEGIN TRANSACTION")
    try:
        con.register("_res_arrow", table)
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _res AS SELECT * FROM _res_arrow")
        con.unregister("_res_arrow")
        run_sql(
            con,
            """
            UPDATE outbox SET
                status = CASE r.result WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'failed' ELSE 'pending' END,
                attempts = outbox.attempts + 1, last_attempt_on = $d, last_error = r.error
            FROM _res r WHERE outbox.reminder_id = r.reminder_id
            """,
            p,
        )
        run_sql(
            con,
            """
            UPDATE reminders SET
                status = CASE WHEN reminders.status <> 'scheduled' THEN reminders.status
                              WHEN r.result = 'sent' THEN 'sent'
                              WHEN r.result = 'failed' THEN 'failed' ELSE 'scheduled' END,
                sent_on = CASE WHEN r.result = 'sent' THEN $d ELSE reminders.sent_on END,
                -- The schedule step of this night has run: fall back at the next one.
                fallback_due = CASE WHEN reminders.status = 'scheduled' AND r.result = 'failed'
                                    THEN $d + 1 ELSE reminders.fallback_due END,
                provider_ref = coalesce(reminders.provider_ref, r.provider_ref),
                attempts = reminders.attempts + 1
            FROM _res r WHERE reminders.reminder_id = r.reminder_id
            """,
            p,
        )
        queue_ledger(
            con,
            day,
            """
            SELECT concat('reminder_sent:', m.reminder_id), $d, 'reminder_sent', m.msisdn, m.tenure_id,
                   m.tenure_start, m.tenure_end,
                   json_object('reminder_id', m.reminder_id, 'channel', m.channel, 'slot', m.slot,
                               'reminder_no', m.reminder_no, 'final', m.final, 'due_on', m.due_on,
                               'sent_on', $d, 'provider_ref', r.provider_ref,
                               'disconnected_on', m.disconnected_on)
            FROM _res r JOIN _sinfo m USING (reminder_id)
            WHERE r.result = 'sent'
            """,
        )
        run_sql(con, "DROP TABLE IF EXISTS _res")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    counts = {"sent": 0, "failed": 0, "retry": 0}
    for res in results.values():
        counts[str(res["result"])] += 1
    return counts["sent"], counts["failed"], counts["retry"]
