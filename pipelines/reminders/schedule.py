"""Step ``schedule``: reminders due for each live disconnection (policy offsets, hold reminders,
fallbacks on the next channel after a failure), then the outbox rendered for them.

A reminder never goes to the number being recycled (DESIGN "One answer"): an owner's contact
phone that is the reminded number itself, or a number whose own tenure is closing, is not an
SMS address (:func:`_sms_blocked_sql`, the one rule every channel choice here reads).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pipelines.config import Settings
from pipelines.db import Con, nightly_step
from pipelines.lifecycle.sql import count_of, drop_tables, policy_sql, run_sql, working_copy
from pipelines.reminders.holder_notice import schedule_holder_notices
from pipelines.reminders.ids import CLOSING_SQL, REMINDING_SQL
from pipelines.reminders.render import render_due

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleReport:
    day: dt.date
    scheduled: int  # reminders for new disconnections
    hold: int  # reminders for numbers held at the gate: the day held, then every escalation round
    fallbacks: int  # next-channel reminders after a failure
    rendered: int  # outbox rows written today
    rendered_one_by_one: int  # of those, rendered without the per-group template fast path
    # Owners acted on today whose contact phone was not used for SMS: it is the number being
    # recycled, or a number whose own tenure is closing (_sms_blocked_sql).
    sms_contacts_skipped: int = 0
    # Scheduled SMS reminders due today whose address became such a number since they were
    # scheduled: cancelled, each replaced by a fallback on the owner's next channel.
    sms_rerouted: int = 0
    # Urgent notices to prior owners: tonight's releases with an exception and violating
    # reissues, one on every channel the owner has left (slots urgent:exception|violation).
    urgent: int = 0
    # Notices to the new holder of a number reissued tonight, SMS to the number itself
    # (pipelines.reminders.holder_notice: the one message the rule above lets through).
    holder_notices: int = 0


# The temp tables of one schedule_reminders call: each created by the phase named, all dropped
# together when the call ends (render_due keeps its own).
_TEMP_TABLES = (
    "_due_sms",  # scheduled SMS reminders due by today (id, number, address): _find_failed
    "_closing",  # SMS addresses whose own tenure is closing: _find_failed, then _read_contacts
    "_blocked",  # the due SMS reminders whose address is blocked (rerouted): _find_failed
    "_failed",  # failed/expired/blocked reminders due a fallback today: _find_failed
    "_sn",  # the numbers this step acts on and why (new, hold, fallback): _find_numbers
    "_tc",  # their owners' contacts, sms_to the usable phone: _read_contacts
    "_hold",  # the hold reminders planned for today: _plan_hold
    "_urgent",  # the urgent notices planned for today: _plan_hold
    "_fb",  # the fallback reminders planned for today: _plan_fallbacks
)


# A reminder's address is stored sealed (pipelines.contacts); the temp tables here hold it open.
_ADDRESS = (
    "contact_seal(CASE x.channel WHEN 'sms' THEN x.sms_to WHEN 'email' THEN x.contact_email "
    "ELSE x.subscriber_ref END)"
)


# --------------------------------------------------------------------------- schedule


@nightly_step
def schedule_reminders(con: Con, settings: Settings, day: dt.date) -> ScheduleReport:
    """Schedule the reminders that ``day`` calls for and render the due ones into the outbox.

    * a new disconnection (cancel, or a 双停 suspension) gets one reminder per policy offset:
      ``disconnected_on + n`` for n >= 0, ``freeze_ends + n`` for n < 0; a date already past
      (a late event) becomes ``day``. Channel: sms if the owner left a usable phone, else
      email, else a letter.
    * a number held at the gate gets one more reminder on the day it is held, on every channel
      the owner has that has no effective reminder yet (or the best channel if all have one),
      then escalates: every ``hold_reminder_every_days`` (policy), up to ``max_hold_reminders``
      rounds in all, a reminder on every channel the owner has, in the urgent hold text.
    * the prior owner of a number released tonight with an exception, or sold again tonight in
      violation of the gate, gets an urgent notice on every channel left (SMS only to a usable
      phone; letters when enabled), saying what to do now.
    * a failed/expired reminder gets a fallback on the owner's next channel
      (sms → email → letter), due ``day``; so does a scheduled SMS reminder due by ``day``
      whose address is no longer usable (it is cancelled).
    * every scheduled reminder due by ``day`` is rendered into the outbox (pending).

    A phone is usable for SMS unless it is the number being recycled or a number whose own
    tenure is closing (:func:`_sms_blocked_sql`); skipped contacts are counted and logged.
    """
    rerouted = _find_failed(con, day)
    _find_numbers(con, settings, day)
    skipped = _read_contacts(con)
    scheduled = _schedule_new_disconnections(con, settings, day)
    _plan_hold(con, settings, day)
    hold = _insert_new_reminders(con, day, "_hold")
    urgent = _insert_new_reminders(con, day, "_urgent")
    _plan_fallbacks(con, settings, day)
    fallbacks = _insert_new_reminders(con, day, "_fb")
    _mark_fallbacks_handled(con)
    _cancel_blocked(con)
    holder = schedule_holder_notices(con, settings, day)  # the new holder's notice: rendered already
    rendered, one_by_one = render_due(con, settings, day)
    _log_skipped(con, day, skipped, rerouted)
    drop_tables(con, _TEMP_TABLES)
    return ScheduleReport(
        day, scheduled, hold, fallbacks, rendered, one_by_one, skipped, rerouted, urgent, holder
    )


# --------------------------------------------------------------------------- SMS addresses


def _add_closing_numbers(con: Con, phones_sql: str) -> None:
    """Add to ``_closing`` the numbers among ``phones_sql`` (a one-column SELECT) whose own
    tenure is closing: suspended, frozen, held, or available to be sold again."""
    # The phones first, then their states: a semi join on the key column keeps the scan of
    # ten million states to one column until a phone matches.
    run_sql(
        con,
        f"""
        INSERT INTO _closing
        SELECT s.msisdn FROM number_state s
        WHERE s.msisdn IN (SELECT p FROM ({phones_sql}) q(p) WHERE p IS NOT NULL
                           EXCEPT SELECT msisdn FROM _closing)
          AND s.state IN {CLOSING_SQL}
        """,
    )


def _sms_blocked_sql(phone: str, number: str) -> str:
    """The one rule for an SMS address, as SQL: true when ``phone`` is ``number`` (the number
    being recycled) or a number in ``_closing``. Such a text would reach whoever holds that
    number next, and a receipt for it would count as the prior owner reminded."""
    return f"({phone} = {number} OR {phone} IN (SELECT msisdn FROM _closing))"


def _find_failed(con: Con, day: dt.date) -> int:
    """``_failed``: the reminders due a fallback today: failed/expired ones, and scheduled SMS
    reminders due by ``day`` whose address is blocked (``_blocked``). Returns how many of
    those there are."""
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _due_sms AS
        SELECT reminder_id, msisdn, contact_open(address) AS address FROM reminders
        WHERE status = 'scheduled' AND channel = 'sms' AND due_on <= $d
        """,
        {"d": day},
    )
    run_sql(con, "CREATE OR REPLACE TEMP TABLE _closing (msisdn VARCHAR)")
    _add_closing_numbers(con, "SELECT address FROM _due_sms")
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _blocked AS
        SELECT reminder_id FROM _due_sms WHERE {_sms_blocked_sql("address", "msisdn")}
        """,
    )
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _failed AS
        SELECT * FROM reminders
        WHERE status IN ('failed', 'expired') AND NOT fallback_handled AND fallback_due <= $d
        UNION ALL
        SELECT * FROM reminders WHERE reminder_id IN (SELECT reminder_id FROM _blocked)
        """,
        {"d": day},
    )
    return count_of(con, "SELECT count(*) FROM _blocked")


def _find_numbers(con: Con, settings: Settings, day: dt.date) -> None:
    # The numbers this step acts on: numbers that entered a disconnection today, numbers held
    # whose escalation round falls today (each found by equalities the scan applies before
    # decoding the other columns; an IN or OR would decode ten million rows), the numbers of the
    # failed reminders while their disconnection is live, and the prior owners due an urgent
    # notice: a release with an exception or a violating reissue recorded tonight (read from
    # releases/reissues, not the state: a number released and sold again the same night is
    # already active under its new tenure).
    cols = (
        "s.msisdn, s.state, s.tenure_id, s.disconnected_on, s.freeze_ends, s.cause, s.region, s.hold_started"
    )
    every = policy_sql(settings, "hold_reminder_every_days", "s.region")
    rounds = policy_sql(settings, "max_hold_reminders", "s.region")
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
        SELECT {cols}, 'hold' FROM number_state s
        WHERE s.state = 'held' AND ($d - s.hold_started) % {every} = 0
          AND ($d - s.hold_started) < {every} * {rounds}
        UNION ALL
        SELECT * FROM (
            SELECT {cols}, 'fallback' AS why FROM number_state s
            WHERE s.msisdn IN (SELECT msisdn FROM _failed)
        ) s SEMI JOIN _failed f ON f.msisdn = s.msisdn AND f.tenure_id = s.tenure_id
            AND f.disconnected_on = s.disconnected_on
        WHERE s.state IN {REMINDING_SQL}
        UNION ALL
        -- freeze_ends carries the date the urgent notice announces (release, reissue).
        SELECT msisdn, 'available', tenure_id, disconnected_on, released_on, 'cancel', region, NULL,
               'exception'
        FROM releases WHERE exception AND logical_date = $d
        UNION ALL
        SELECT msisdn, 'active', prior_tenure_id, coalesce(disconnected_on, reissue_date), reissue_date,
               'cancel', region, NULL, 'violation'
        FROM reissues WHERE violation AND logical_date = $d AND prior_tenure_id IS NOT NULL
        """,
        {"d": day},
    )


def _read_contacts(con: Con) -> int:
    """``_tc``: the owners' contacts, read from the ten-million-row tenures once for all three
    kinds of number, with ``sms_to`` the contact phone unless it is blocked. Returns how many
    owners' phones are blocked."""
    working_copy(
        con,
        "_tc",
        "tenures",
        "tenure_id",
        "SELECT tenure_id FROM _sn UNION ALL SELECT tenure_id FROM _failed",
        "t.tenure_id, t.msisdn, contact_open(t.contact_phone) AS contact_phone, "
        "contact_open(t.contact_email) AS contact_email, t.subscriber_ref, t.language",
    )
    _add_closing_numbers(con, "SELECT contact_phone FROM _tc")
    blocked = _sms_blocked_sql("contact_phone", "msisdn")
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _tc AS
        SELECT _tc.*, coalesce({blocked}, false) AS sms_blocked,
               CASE WHEN NOT coalesce({blocked}, false) THEN contact_phone END AS sms_to
        FROM _tc
        """,
    )
    return count_of(con, "SELECT count(*) FROM _tc WHERE sms_blocked")


def _log_skipped(con: Con, day: dt.date, skipped: int, rerouted: int) -> None:
    """One warning for the night: counts, and a few masked numbers for the operator to look up."""
    if not (skipped or rerouted):
        return
    examples = run_sql(
        con,
        "SELECT nr_mask(msisdn) FROM (SELECT DISTINCT msisdn FROM _tc WHERE sms_blocked) ORDER BY 1 LIMIT 3",
    ).fetchall()
    log.warning(
        "schedule %s: %d owner(s) reminded without SMS, %d scheduled SMS reminder(s) moved to the "
        "next channel: the contact phone is the number being recycled or a number whose own "
        "tenure is closing (e.g. owners of %s); ask them for a current contact",
        day,
        skipped,
        rerouted,
        ", ".join(str(m) for (m,) in examples) or "none",
    )


def _schedule_new_disconnections(con: Con, settings: Settings, day: dt.date) -> int:
    """Insert one reminder per policy offset for every new disconnection; returns how many."""
    best = _best_channel_sql(settings)
    offsets = policy_sql(settings, "reminder_offsets", "s.region")
    inserted = run_sql(
        con,
        f"""
        INSERT INTO reminders
        WITH cand AS (
            SELECT s.msisdn, s.tenure_id, s.disconnected_on, s.freeze_ends, s.cause,
                   t.sms_to, t.contact_email, t.subscriber_ref,
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
        {"d": day},
    ).fetchone()
    return int(inserted[0]) if inserted else 0


def _plan_hold(con: Con, settings: Settings, day: dt.date) -> None:
    """``_hold``: the reminders of numbers held whose escalation round falls today, and the
    urgent notices of tonight's releases with an exception and violating reissues (``_urgent``).

    Round 0 of a hold (the day the number is held) goes on every channel the owner has that has
    no effective reminder yet (else the best one): DESIGN's "more reminders on other channels".
    Later rounds, every ``hold_reminder_every_days`` up to ``max_hold_reminders``, and urgent
    notices go on every channel the owner has: by then the other channels have been tried, and
    the one that reached the owner before is the likeliest to reach them again.
    Slots: ``hold`` (round 0, the id it always had), ``hold:<round>``, ``urgent:exception``,
    ``urgent:violation``; each its own deterministic reminder id.
    """
    best = _best_channel_sql(settings)
    every = policy_sql(settings, "hold_reminder_every_days", "s.region")
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _hold AS
        WITH h AS (
            SELECT s.msisdn, s.tenure_id, s.disconnected_on, s.cause, t.sms_to,
                   t.contact_email, t.subscriber_ref, coalesce(t.language, 'zh-CN') AS language,
                   {best} AS best,
                   CASE s.why WHEN 'hold' THEN CAST(($d - s.hold_started) // {every} AS INTEGER) END AS round,
                   CASE s.why WHEN 'hold' THEN $d + 1 ELSE s.freeze_ends END AS release_on,
                   CASE s.why WHEN 'exception' THEN 'urgent:exception' WHEN 'violation' THEN 'urgent:violation'
                        ELSE 'hold' END AS kind
            FROM _sn s JOIN _tc t ON t.tenure_id = s.tenure_id
            WHERE s.why IN ('hold', 'exception', 'violation')
        ), has AS ({_every_channel_sql(settings, "h")}
        ), effective AS (
            SELECT DISTINCT r.tenure_id, r.disconnected_on, r.channel FROM reminders r
            SEMI JOIN h ON h.tenure_id = r.tenure_id
            WHERE r.status IN ('delivered', 'acknowledged')
        ), remaining AS (
            SELECT has.* FROM has LEFT JOIN effective e ON e.tenure_id = has.tenure_id
                AND e.disconnected_on = has.disconnected_on AND e.channel = has.channel
            WHERE has.round IS DISTINCT FROM 0 OR e.tenure_id IS NULL
        ), chosen AS (
            SELECT * FROM remaining
            UNION ALL
            SELECT h.*, h.best FROM h ANTI JOIN remaining USING (tenure_id, disconnected_on)
            WHERE h.best IS NOT NULL AND h.round = 0
        ), plan AS (
            SELECT tenure_id, disconnected_on, max(reminder_no) AS last_no FROM reminders
            SEMI JOIN h USING (tenure_id) GROUP BY ALL
        ), x AS (
            SELECT c.*, CAST(coalesce(plan.last_no, 0) + 1 AS INTEGER) AS reminder_no,
                   CASE WHEN c.round > 0 THEN concat('hold:', c.round) ELSE c.kind END AS slot
            FROM chosen c LEFT JOIN plan USING (tenure_id, disconnected_on)
        )
        SELECT nr_reminder_id(x.tenure_id, x.disconnected_on, x.slot, x.channel) AS reminder_id,
               x.tenure_id, x.msisdn, x.disconnected_on, x.slot, x.reminder_no,
               false AS final, x.channel, {_ADDRESS} AS address, x.language, $d AS due_on,
               CAST(NULL AS VARCHAR) AS origin_id, x.release_on, x.cause
        FROM x
        """,
        {"d": day},
    )
    run_sql(con, "CREATE OR REPLACE TEMP TABLE _urgent AS SELECT * FROM _hold WHERE slot LIKE 'urgent:%'")
    run_sql(con, "DELETE FROM _hold WHERE slot LIKE 'urgent:%'")


def _every_channel_sql(settings: Settings, src: str) -> str:
    """One row per channel the owner of each ``src`` row has (``channel``): SMS to a usable
    phone, email, and a letter when letters are enabled."""
    letter_on = "true" if settings.letter.enabled else "false"
    return (
        f"SELECT {src}.*, 'sms' AS channel FROM {src} WHERE sms_to IS NOT NULL "
        f"UNION ALL SELECT {src}.*, 'email' FROM {src} WHERE contact_email IS NOT NULL "
        f"UNION ALL SELECT {src}.*, 'letter' FROM {src} WHERE {letter_on}"
    )


def _plan_fallbacks(con: Con, settings: Settings, day: dt.date) -> None:
    """``_fb``: a reminder on the owner's next channel for each failed one, due ``day``."""
    after = _next_channel_sql(settings)
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _fb AS
        WITH f AS (
            SELECT f.* EXCLUDE (release_on, cause), t.sms_to, t.contact_email,
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
        {"d": day},
    )


def _cancel_blocked(con: Con) -> None:
    """Cancel the blocked SMS reminders (their fallbacks are planned) and any pending text of
    theirs, so that nothing goes to that address."""
    if not count_of(con, "SELECT count(*) FROM _blocked"):
        return
    run_sql(
        con,
        """
        UPDATE outbox SET status = 'cancelled'
        WHERE status = 'pending' AND reminder_id IN (SELECT reminder_id FROM _blocked)
        """,
    )
    run_sql(
        con,
        """
        UPDATE reminders SET status = 'cancelled'
        WHERE status = 'scheduled' AND reminder_id IN (SELECT reminder_id FROM _blocked)
        """,
    )


def _mark_fallbacks_handled(con: Con) -> None:
    if count_of(con, "SELECT count(*) FROM _failed"):
        run_sql(
            con,
            """
            UPDATE reminders SET fallback_handled = true
            WHERE reminder_id IN (SELECT reminder_id FROM _failed)
            """,
        )


def _letter_sql(settings: Settings) -> str:
    return "'letter'" if settings.letter.enabled else "NULL"


def _best_channel_sql(settings: Settings) -> str:
    """The owner's best channel as SQL over columns of ``t`` (``_tc``: SMS only to a usable phone)."""
    return (
        "CASE WHEN t.sms_to IS NOT NULL THEN 'sms' "
        f"WHEN t.contact_email IS NOT NULL THEN 'email' ELSE {_letter_sql(settings)} END"
    )


def _next_channel_sql(settings: Settings) -> str:
    """The owner's next channel after ``f.channel`` as SQL over columns of ``t`` (``_tc``).

    SMS comes first, so it is never the next channel; a blocked phone needs no test here."""
    letter = _letter_sql(settings)
    return (
        "CASE f.channel WHEN 'sms' THEN CASE WHEN t.contact_email IS NOT NULL THEN 'email' "
        f"ELSE {letter} END WHEN 'email' THEN {letter} END"
    )


def _insert_new_reminders(con: Con, day: dt.date, source: str) -> int:
    """Insert reminders from temp table ``source`` whose deterministic id is not yet on record."""
    if not count_of(con, f"SELECT count(*) FROM {source}"):
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
