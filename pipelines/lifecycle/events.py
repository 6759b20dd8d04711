"""Step ``events``: the day's subscriber snapshot rows, lifecycle events and reissues applied to
tenures and number state, in rounds (one event per number per round), illegal ones quarantined.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pipelines.config import Settings
from pipelines.db import Con, nightly_step
from pipelines.lifecycle.notices import list_notices
from pipelines.lifecycle.queue import cancel_unsent_reminders, queue_ledger
from pipelines.lifecycle.sql import (
    FILE_NAMES,
    count_rows,
    drop_tables,
    policy_sql,
    run_sql,
    scalar,
    working_copy,
    write_back,
)

# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class EventsReport:
    day: dt.date
    snapshot_rows: int  # subscriber rows of the day not applied before
    seeded: int  # numbers a snapshot row put on record
    event_rows: int  # lifecycle + reissue rows of the day not applied before
    applied: int
    quarantined: int  # snapshot and event rows
    reasons: dict[str, int] = field(default_factory=dict)
    reissues: int = 0
    violations: int = 0
    rounds: int = 0
    notices_listed: int = 0  # numbers newly listed as pending tonight (lifecycle.notices)
    notices_withdrawn: int = 0


# --------------------------------------------------------------------------- temp tables

# The temp tables of one apply_events call, each created by the phase named, all dropped
# together by _drop_temp_tables when the call ends (a rollback drops them with the step).
_TEMP_TABLES = (
    "_q",  # rows to quarantine, collected by every phase, flushed at the end: _open_collectors
    "_led",  # ledger facts of the rounds, queued at the end: _open_collectors
    "_done",  # rows of the day already applied or quarantined (the rerun filter): _open_collectors
    "_snap",  # the day's snapshot rows and their outcome: _classify_snapshot
    "_ev",  # the day's event rows not done yet, with their round k: _load_events
    "_evm",  # the numbers with events today: _open_working_set
    "_ns",  # working copy of number_state, written back once after the rounds: _open_working_set
    "_tn",  # working copy of tenures, written back once after the rounds: _open_working_set
    "_ends",  # tenures whose unsent reminders are cancelled after the rounds: _open_working_set
    "_retime",  # tenures whose freeze end a cancel moved: _open_working_set
    "_e",  # the events of round k > 1, replaced each round: _judge_round
    "_r",  # each event of the round, the state it meets, its reason and effect: _judge_round
)


def _drop_temp_tables(con: Con) -> None:
    drop_tables(con, _TEMP_TABLES)


# --------------------------------------------------------------------------- apply_events

_DONE_ROWS = """
    SELECT file_sha256, line_no FROM state_history
    WHERE logical_date = $d AND file_sha256 IS NOT NULL
    UNION ALL
    SELECT file_sha256, line_no FROM quarantine WHERE logical_date = $d AND stage = 'lifecycle'
"""

_Q_COLUMNS = """
    file_name VARCHAR, file_sha256 VARCHAR, kind VARCHAR, line_no BIGINT, reason VARCHAR, detail VARCHAR
"""

_LED_COLUMNS = """
    idempotency_key VARCHAR, on_date DATE, type VARCHAR, msisdn VARCHAR, tenure_id VARCHAR,
    tenure_start DATE, tenure_end DATE, fields JSON
"""


@nightly_step
def apply_events(con: Con, settings: Settings, day: dt.date) -> EventsReport:
    """Apply the subscriber snapshot, lifecycle and reissue rows of inbox day ``day``.

    Snapshot rows first (they seed tenures), then the day's events in rounds: round k takes
    the k-th event of every number (by effective date, file, line), validates all of them
    against the current state with one CASE and applies the valid ones set-based. Rows that
    break a rule go to ``quarantine`` (stage ``lifecycle``) with a reason code. Rows already
    applied or quarantined for ``day`` are skipped, which makes a rerun a no-op.
    """
    _open_collectors(con, day)
    snapshot_rows, seeded = _apply_snapshot(con, day)
    event_rows, rounds = _load_events(con, day)
    applied, reissues, violations = 0, 0, 0
    if event_rows:
        applied, reissues, violations = _apply_rounds(con, settings, day, rounds)
    _flush_quarantine(con, day)
    # After the day's events and the gate (step advance ran first): every live disconnection
    # is listed, every restored one withdrawn, tonight.
    notices = list_notices(con, settings, day)
    reasons = dict(run_sql(con, "SELECT reason, count(*) FROM _q GROUP BY reason ORDER BY reason").fetchall())
    report = EventsReport(
        day=day,
        snapshot_rows=snapshot_rows,
        seeded=seeded,
        event_rows=event_rows,
        applied=applied,
        quarantined=sum(reasons.values()),
        reasons={str(k): int(v) for k, v in reasons.items()},
        reissues=reissues,
        violations=violations,
        rounds=rounds,
        notices_listed=notices.listed,
        notices_withdrawn=notices.withdrawn,
    )
    _drop_temp_tables(con)
    return report


def _open_collectors(con: Con, day: dt.date) -> None:
    """The tables every phase appends to (``_q``, ``_led``) and the rows already done (``_done``)."""
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE _q ({_Q_COLUMNS})")
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE _led ({_LED_COLUMNS})")
    # A table, not a subquery: knowing its size (none, on a first run) the planner builds the
    # anti joins below on it rather than on a million rows of the day.
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE _done AS {_DONE_ROWS}", {"d": day})


def _load_events(con: Con, day: dt.date) -> tuple[int, int]:
    """``_ev``: the day's lifecycle and reissue rows not done yet, each with its round ``k``;
    return (rows, rounds)."""
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _ev AS
        WITH raw AS (
            SELECT file_sha256, line_no, msisdn, event, effective_date, region, subscriber_ref,
                   tenure_start, contact_email, contact_phone, language, 'lifecycle' AS src
            FROM lifecycle_events WHERE logical_date = $d
            UNION ALL
            SELECT file_sha256, line_no, msisdn, 'reissue', reissue_date, region, subscriber_ref,
                   NULL, NULL, NULL, NULL, 'reissue'
            FROM reissue_events WHERE logical_date = $d
        ), todo AS (
            SELECT raw.*, coalesce(f.file_name, raw.file_sha256) AS file_name,
                   coalesce(f.kind, raw.src) AS kind
            FROM raw ANTI JOIN _done done
                ON done.file_sha256 = raw.file_sha256 AND done.line_no = raw.line_no
            LEFT JOIN ({FILE_NAMES}) f ON f.sha256 = raw.file_sha256
        ), several AS (
            SELECT msisdn FROM todo GROUP BY msisdn HAVING count(*) > 1
        ), later AS (
            -- Most numbers have one event a day (round 1): the window that orders a number's
            -- events runs over the few that have more, not over the whole day.
            SELECT file_sha256, line_no, row_number() OVER (PARTITION BY msisdn
                       ORDER BY effective_date, file_name, line_no) AS k
            FROM todo SEMI JOIN several USING (msisdn)
        )
        SELECT todo.*, coalesce(later.k, 1) AS k
        FROM todo LEFT JOIN later USING (file_sha256, line_no)
        """,
        {"d": day},
    )
    return count_rows(con, "_ev"), int(scalar(con, "SELECT coalesce(max(k), 0) FROM _ev"))


def _apply_rounds(con: Con, settings: Settings, day: dt.date, rounds: int) -> tuple[int, int, int]:
    """Run the rounds over the day's working set, write it back and act on what the rounds
    decided (reminders cancelled or retimed, ledger facts queued); return the summed
    (applied, reissues, violations)."""
    freeze = policy_sql(settings, "freeze_days", "x.new_region")
    suspend = policy_sql(settings, "suspend_days", "x.new_region")
    _open_working_set(con)
    applied, reissues, violations = 0, 0, 0
    for k in range(1, rounds + 1):
        round_applied, round_reissues, round_violations = _round(con, day, k, freeze, suspend)
        applied += round_applied
        reissues += round_reissues
        violations += round_violations
    write_back(con, "number_state", "_ns")
    write_back(con, "tenures", "_tn")
    cancel_unsent_reminders(con, "SELECT tenure_id FROM _ends")
    _retime_reminders(con, day)
    queue_ledger(con, day, "SELECT * FROM _led")
    return applied, reissues, violations


def _open_working_set(con: Con) -> None:
    """Working copies of the state and tenures of the day's numbers, and the rounds' outputs."""
    run_sql(con, "CREATE OR REPLACE TEMP TABLE _ends (tenure_id VARCHAR)")
    run_sql(con, "CREATE OR REPLACE TEMP TABLE _retime (tenure_id VARCHAR, freeze_ends DATE)")
    # The rounds work on the day's numbers and their tenures only, written back once:
    # joins and UPDATEs against ten million rows per round would dominate the night.
    # ``_rid`` (the row's rowid, NULL for rows opened today) lets the write-back delete
    # exactly the rows read, without joining ten million keys again.
    run_sql(con, "CREATE OR REPLACE TEMP TABLE _evm AS SELECT DISTINCT msisdn FROM _ev")
    working_copy(con, "_ns", "number_state", "msisdn", "SELECT msisdn FROM _evm", "t.*, false AS dirty")
    working_copy(con, "_tn", "tenures", "msisdn", "SELECT msisdn FROM _evm", "t.*, false AS dirty")


# --------------------------------------------------------------------------- snapshot


def _apply_snapshot(con: Con, day: dt.date) -> tuple[int, int]:
    """Seed active tenures from ``subscriber_rows``; a row that contradicts the record is
    quarantined. Return (rows, numbers seeded)."""
    if not count_rows(con, "subscriber_rows", "logical_date = $d", {"d": day}):
        return 0, 0
    _classify_snapshot(con, day)
    _seed_from_snapshot(con, day)
    _refresh_contacts(con)
    _quarantine_snapshot_mismatches(con)
    rows = count_rows(con, "_snap")
    seeded = count_rows(con, "_snap", "outcome = 'seed'")
    return rows, seeded


def _classify_snapshot(con: Con, day: dt.date) -> None:
    """``_snap``: each snapshot row not done yet with its outcome (seed, refresh, duplicate,
    tenure_mismatch) against the record."""
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _snap AS
        WITH todo AS (
            SELECT s.* FROM subscriber_rows s ANTI JOIN _done done
                ON done.file_sha256 = s.file_sha256 AND done.line_no = s.line_no
            WHERE s.logical_date = $d
        ), ranked AS (
            SELECT todo.*, coalesce(f.file_name, todo.file_sha256) AS file_name,
                   coalesce(f.kind, 'subscribers') AS kind,
                   row_number() OVER (PARTITION BY todo.msisdn ORDER BY todo.tenure_start DESC,
                                      coalesce(f.file_name, todo.file_sha256), todo.line_no) AS rk
            FROM todo LEFT JOIN ({FILE_NAMES}) f ON f.sha256 = todo.file_sha256
        )
        SELECT r.*, s.state AS cur_state, t.tenure_start AS cur_start,
            CASE
                WHEN r.rk > 1 AND r.tenure_start = w.tenure_start THEN 'duplicate'
                WHEN r.rk > 1 THEN 'tenure_mismatch'
                WHEN s.state IS NULL THEN 'seed'
                WHEN t.tenure_start = r.tenure_start AND s.state IN ('active', 'suspended') THEN 'refresh'
                ELSE 'tenure_mismatch'
            END AS outcome
        FROM ranked r
        JOIN ranked w ON w.msisdn = r.msisdn AND w.rk = 1
        LEFT JOIN number_state s ON s.msisdn = r.msisdn
        LEFT JOIN tenures t ON t.tenure_id = s.tenure_id
        """,
        {"d": day},
    )


def _seed_from_snapshot(con: Con, day: dt.date) -> None:
    """Numbers first seen in the snapshot: an active tenure, its state and its history row."""
    p = {"d": day}
    run_sql(
        con,
        """
        INSERT INTO tenures
        SELECT nr_tenure_id(msisdn, tenure_start), msisdn, tenure_start, NULL, NULL, subscriber_ref,
               region, contact_email, contact_phone, language, 'snapshot', $d
        FROM _snap WHERE outcome = 'seed' ORDER BY msisdn
        """,
        p,
    )
    run_sql(
        con,
        """
        INSERT INTO number_state
        SELECT msisdn, 'active', nr_tenure_id(msisdn, tenure_start), tenure_start, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, region, $d
        FROM _snap WHERE outcome = 'seed' ORDER BY msisdn
        """,
        p,
    )
    run_sql(
        con,
        """
        INSERT INTO state_history
        SELECT msisdn, nr_tenure_id(msisdn, tenure_start), NULL, 'active', tenure_start, $d,
               'snapshot', file_sha256, line_no
        FROM _snap WHERE outcome = 'seed' ORDER BY msisdn
        """,
        p,
    )


def _refresh_contacts(con: Con) -> None:
    # A snapshot is the BSS's current truth about how to reach the owner.
    run_sql(
        con,
        """
        UPDATE tenures SET contact_email = coalesce(s.contact_email, tenures.contact_email),
                           contact_phone = coalesce(s.contact_phone, tenures.contact_phone),
                           language = s.language
        FROM _snap s
        WHERE s.outcome = 'refresh' AND tenures.tenure_id = nr_tenure_id(s.msisdn, s.tenure_start)
        """,
    )


def _quarantine_snapshot_mismatches(con: Con) -> None:
    run_sql(
        con,
        """
        INSERT INTO _q
        SELECT file_name, file_sha256, kind, line_no, 'tenure_mismatch',
               concat('snapshot row for ', nr_mask(msisdn), ' shows a tenure from ', tenure_start,
                      CASE WHEN rk > 1 THEN ', but the same snapshot has a later tenure for it'
                           ELSE concat(', but the number is ', cur_state, ' on record with a tenure from ',
                                       cur_start) END,
                      '; send the missing lifecycle/reissue row or correct the snapshot, then replay')
        FROM _snap WHERE outcome = 'tenure_mismatch'
        """,
    )


# --------------------------------------------------------------------------- rounds

# The first failing rule names the reason; NULL means the event is legal in the current state.
_REASON = """
CASE
    WHEN s.state IS NOT NULL AND e.effective_date < s.since
         AND (e.event <> 'reissue' OR s.state IN ('active', 'suspended')) THEN 'out_of_order'
    WHEN s.state IS NULL AND e.event IN ('restore', 'port_out') THEN 'unknown_number'
    WHEN s.state IS NULL AND e.event IN ('cancel', 'suspend') AND e.tenure_start IS NULL
        THEN 'unknown_number'
    WHEN e.event = 'cancel' AND s.state NOT IN ('active', 'suspended') THEN 'illegal_transition'
    WHEN e.event = 'suspend' AND s.state <> 'active' THEN 'illegal_transition'
    WHEN e.event = 'restore' AND (s.state IN ('held', 'available')
         OR (s.state = 'frozen' AND e.effective_date >= s.freeze_ends)) THEN 'restore_after_freeze'
    WHEN e.event = 'restore' AND s.state NOT IN ('suspended', 'frozen') THEN 'illegal_transition'
    WHEN e.event = 'port_out' AND s.state NOT IN ('active', 'suspended') THEN 'illegal_transition'
    -- A released (available) number is in this carrier's pool: only a reissue gives it a new
    -- subscriber. A port-in comes from another carrier: unknown here, or ported out before.
    WHEN e.event = 'port_in' AND s.state IN ('active', 'suspended', 'frozen', 'held', 'available')
        THEN 'illegal_transition'
    WHEN e.event = 'restore' AND (e.subscriber_ref IS DISTINCT FROM t.subscriber_ref
         OR e.tenure_start IS DISTINCT FROM t.tenure_start) THEN 'tenure_mismatch'
    WHEN e.event IN ('cancel', 'suspend', 'port_out') AND s.state IS NOT NULL
         AND (e.subscriber_ref <> t.subscriber_ref OR e.tenure_start <> t.tenure_start)
        THEN 'tenure_mismatch'
    -- A reissue on the day the tenure on record began would open a tenure with the same key
    -- (number, start day) and hide the first one: a second sale on one day is refused.
    WHEN e.event = 'reissue' AND s.state IS NOT NULL
         AND (e.effective_date <= t.tenure_start OR e.effective_date < t.tenure_end
              OR (t.tenure_end IS NULL AND e.subscriber_ref = t.subscriber_ref))
        THEN 'tenure_mismatch'
END
"""

_DETAIL = """
concat(r.event, ' of ', nr_mask(r.msisdn), ' on ', r.effective_date, ': ',
CASE r.reason
    WHEN 'out_of_order' THEN concat('dated before the number''s last change (', r.cur_state,
        ' since ', r.cur_since, '); correct the date or send the events in order, then replay')
    WHEN 'unknown_number' THEN CASE WHEN r.event IN ('cancel', 'suspend')
        THEN 'number not on record and the row has no tenure_start; add tenure_start or seed the number from a subscribers_ snapshot, then replay'
        ELSE 'number not on record; seed it from a subscribers_ snapshot, then replay' END
    WHEN 'illegal_transition' THEN concat('not allowed in state ', r.cur_state, ' (since ',
        r.cur_since, '); check the BSS export for a missing, duplicate or misdated event')
    WHEN 'restore_after_freeze' THEN concat('the freeze ended on ', r.cur_freeze_ends, ' (state ',
        r.cur_state, '); the number can no longer return to its prior owner: offer a new number')
    WHEN 'tenure_mismatch' THEN concat('subscriber_ref/tenure_start/date contradict the tenure on record (started ',
        r.cur_start, coalesce(', ended ' || r.cur_end, ''), '); correct the row, then replay')
END)
"""


def _round(con: Con, day: dt.date, k: int, freeze: str, suspend: str) -> tuple[int, int, int]:
    """Validate and apply the k-th event of every number; return (applied, reissues, violations)."""
    _judge_round(con, k, freeze, suspend)
    _quarantine_illegal(con)
    _apply_to_tenures(con, day)
    _apply_to_number_state(con, day)
    _record_round(con, day)
    _collect_ledger_facts(con, k)
    row = run_sql(
        con,
        """
        SELECT count(*), count(*) FILTER (event = 'reissue'), count(*) FILTER (violation)
        FROM _r WHERE reason IS NULL
        """,
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _judge_round(con: Con, k: int, freeze: str, suspend: str) -> None:
    """``_r``: the k-th event of every number, the state it meets, its reason and its effect."""
    if k > 1:
        # Later rounds are small: a table of their own lets the joins below build their hash
        # tables on them rather than on the day's working set.
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _e AS SELECT * FROM _ev WHERE k = $k", {"k": k})
    # One table per round: the state each event meets, its reason (NULL = legal) and, for the
    # legal ones, what applying it means. Statements below read ``WHERE reason IS NULL``.
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _r AS
        WITH j AS (
            SELECT e.*, s.state AS cur_state, s.tenure_id AS cur_tenure, s.since AS cur_since,
                   s.suspended_on AS cur_suspended_on, s.freeze_ends AS cur_freeze_ends,
                   s.released_on AS cur_released_on, s.region AS cur_region,
                   t.tenure_start AS cur_start, t.tenure_end AS cur_end,
                   {_REASON} AS reason
            FROM {"_ev" if k == 1 else "_e"} e
            LEFT JOIN _ns s ON s.msisdn = e.msisdn
            LEFT JOIN _tn t ON t.tenure_id = s.tenure_id
            {"WHERE e.k = 1" if k == 1 else ""}
        ), a AS (
            SELECT r.*,
                CASE r.event WHEN 'cancel' THEN 'frozen' WHEN 'suspend' THEN 'suspended'
                             WHEN 'port_out' THEN 'ported_out' ELSE 'active' END AS new_state,
                (r.event IN ('port_in', 'reissue') OR r.cur_state IS NULL) AS opens,
                (r.event = 'reissue' AND r.cur_tenure IS NOT NULL AND r.cur_end IS NULL) AS closes_prior,
                CASE WHEN r.event = 'reissue' THEN r.effective_date
                     WHEN r.event = 'port_in' THEN coalesce(r.tenure_start, r.effective_date)
                     WHEN r.cur_state IS NULL THEN r.tenure_start
                     ELSE r.cur_start END AS new_start,
                CASE r.event
                    WHEN 'cancel' THEN CASE WHEN r.cur_state = 'suspended' THEN r.cur_suspended_on
                                            ELSE r.effective_date END
                    WHEN 'suspend' THEN r.effective_date END AS disconnected_on,
                CASE WHEN r.event = 'suspend' THEN r.effective_date
                     WHEN r.event = 'cancel' AND r.cur_state = 'suspended' THEN r.cur_suspended_on
                END AS suspended_on,
                -- A number that came back from another carrier (ported_out) is sold without
                -- reminders: its prior subscriber is not ours to remind, and the feed lists the
                -- reissue with prior_end = port_out (pipelines.feeds.answer).
                (r.event = 'reissue' AND (r.cur_state NOT IN ('available', 'ported_out')
                    OR r.cur_state IS NULL OR coalesce(r.effective_date < r.cur_released_on, false))) AS violation
            FROM j r
        ), x AS (
            SELECT a.*, CASE WHEN a.opens THEN nr_tenure_id(a.msisdn, a.new_start)
                             ELSE a.cur_tenure END AS new_tenure,
                   CASE WHEN a.opens THEN a.region ELSE a.cur_region END AS new_region
            FROM a
        )
        SELECT x.*,
            CASE x.event WHEN 'cancel' THEN 'cancel' WHEN 'suspend' THEN 'suspend' END AS cause,
            CASE WHEN x.event = 'cancel' THEN x.effective_date END AS frozen_on,
            CASE x.event WHEN 'cancel' THEN x.effective_date + {freeze}
                         WHEN 'suspend' THEN x.effective_date + {suspend} + {freeze} END AS freeze_ends
        FROM x
        """,
    )


def _quarantine_illegal(con: Con) -> None:
    """The round's illegal events, with a detail that says what the operator does next."""
    run_sql(
        con,
        f"""
        INSERT INTO _q SELECT r.file_name, r.file_sha256, r.kind, r.line_no, r.reason, {_DETAIL}
        FROM _r r WHERE r.reason IS NOT NULL
        """,
    )


def _apply_to_tenures(con: Con, day: dt.date) -> None:
    """The round's legal events applied to the working copy of tenures (``_tn``)."""
    p = {"d": day}
    # Tenures opened by this round (a first-seen cancel closes its tenure at once).
    run_sql(
        con,
        """
        INSERT INTO _tn
        SELECT o.new_tenure, o.msisdn, o.new_start,
               CASE WHEN o.event = 'cancel' THEN o.effective_date END,
               CASE WHEN o.event = 'cancel' THEN 'cancel' END,
               o.subscriber_ref, o.region, o.contact_email, o.contact_phone, o.language, o.event, $d,
               true, NULL
        FROM _r o ANTI JOIN _tn t ON t.tenure_id = o.new_tenure
        WHERE o.reason IS NULL AND o.opens
        """,
        p,
    )
    # The tenure on record (closed, reopened, or its contacts refreshed from the event row).
    # Rebuilt rather than UPDATEd: a round changes most of the working set.
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _tn AS
        SELECT t.* REPLACE (
            CASE WHEN o.cur_tenure IS NULL THEN t.tenure_end
                 WHEN o.event = 'cancel' THEN o.disconnected_on
                 WHEN o.event IN ('port_out', 'reissue') THEN o.effective_date
                 WHEN o.event = 'restore' THEN NULL ELSE t.tenure_end END AS tenure_end,
            CASE WHEN o.cur_tenure IS NULL THEN t.end_reason
                 WHEN o.event IN ('cancel', 'port_out', 'reissue') THEN o.event
                 WHEN o.event = 'restore' THEN NULL ELSE t.end_reason END AS end_reason,
            coalesce(o.contact_email, t.contact_email) AS contact_email,
            coalesce(o.contact_phone, t.contact_phone) AS contact_phone,
            coalesce(o.language, t.language) AS language,
            t.dirty OR o.cur_tenure IS NOT NULL AS dirty)
        FROM _tn t LEFT JOIN (
            SELECT cur_tenure, event, disconnected_on, effective_date, contact_email, contact_phone,
                   language
            FROM _r WHERE reason IS NULL AND cur_state IS NOT NULL AND (NOT opens OR closes_prior)
        ) o ON o.cur_tenure = t.tenure_id
        """,
    )


def _apply_to_number_state(con: Con, day: dt.date) -> None:
    """The round's legal events applied to the working copy of number_state (``_ns``)."""
    p = {"d": day}
    changed = {
        "state": "o.new_state",
        "tenure_id": "o.new_tenure",
        "since": "o.effective_date",
        "disconnected_on": "o.disconnected_on",
        "cause": "o.cause",
        "suspended_on": "o.suspended_on",
        "frozen_on": "o.frozen_on",
        "freeze_ends": "o.freeze_ends",
        "hold_started": "NULL",
        "released_on": "NULL",
        "region": "o.new_region",
        "changed_logical": "$d",
    }
    replaced = ", ".join(
        f"CASE WHEN o.msisdn IS NULL THEN n.{col} ELSE {expr} END AS {col}" for col, expr in changed.items()
    )
    # The number's state, rebuilt rather than UPDATEd for the same reason as ``_tn``.
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _ns AS
        SELECT n.* REPLACE ({replaced}, n.dirty OR o.msisdn IS NOT NULL AS dirty)
        FROM _ns n LEFT JOIN (
            SELECT msisdn, new_state, new_tenure, effective_date, disconnected_on, cause,
                   suspended_on, frozen_on, freeze_ends, new_region
            FROM _r WHERE reason IS NULL AND cur_state IS NOT NULL
        ) o ON o.msisdn = n.msisdn
        """,
        p,
    )
    run_sql(
        con,
        """
        INSERT INTO _ns
        SELECT msisdn, new_state, new_tenure, effective_date, disconnected_on, cause, suspended_on,
               frozen_on, freeze_ends, NULL, NULL, new_region, $d, true, NULL
        FROM _r WHERE reason IS NULL AND cur_state IS NULL
        """,
        p,
    )


def _record_round(con: Con, day: dt.date) -> None:
    """The round's facts: state history, reissues, tenures whose reminders end or move."""
    p = {"d": day}
    run_sql(
        con,
        """
        INSERT INTO state_history
        SELECT msisdn, new_tenure, cur_state, new_state, effective_date, $d, event, file_sha256, line_no
        FROM _r WHERE reason IS NULL
        """,
        p,
    )
    run_sql(
        con,
        """
        INSERT INTO reissues
        SELECT msisdn, cur_tenure, new_tenure, effective_date, coalesce(cur_end, CASE WHEN closes_prior
               THEN effective_date END), CASE WHEN cur_state = 'available' THEN cur_released_on END,
               violation, $d, region, file_sha256, line_no
        FROM _r WHERE reason IS NULL AND event = 'reissue'
        """,
        p,
    )
    run_sql(
        con,
        """
        INSERT INTO _ends SELECT cur_tenure FROM _r
        WHERE reason IS NULL AND event IN ('restore', 'port_out', 'reissue') AND cur_tenure IS NOT NULL
        """,
    )
    run_sql(
        con,
        """
        INSERT INTO _retime SELECT cur_tenure, freeze_ends FROM _r
        WHERE reason IS NULL AND event = 'cancel' AND cur_state = 'suspended'
        """,
    )


def _collect_ledger_facts(con: Con, k: int) -> None:
    """The round's facts for the ledger, into ``_led`` (queued once, after the last round)."""
    # A tenure can close twice in one day (suspended, then cancelled): its entry is the first
    # round's, the earliest event. Rows of one round never share a key (one event per number).
    once = "" if k == 1 else "ANTI JOIN _led USING (idempotency_key)"
    run_sql(
        con,
        f"""
        INSERT INTO _led
        SELECT * FROM (
        SELECT concat('tenure_closed:', new_tenure, ':', disconnected_on), effective_date,
               'tenure_closed', msisdn, new_tenure, new_start, disconnected_on,
               json_object('end_reason', event, 'cause', cause, 'disconnected_on', disconnected_on,
                           'freeze_ends', freeze_ends, 'region', new_region)
        FROM _r WHERE reason IS NULL AND event IN ('cancel', 'suspend')
        UNION ALL
        SELECT concat('tenure_closed:', cur_tenure, ':', effective_date), effective_date,
               'tenure_closed', msisdn, cur_tenure, cur_start, effective_date,
               json_object('end_reason', 'reissue', 'cause', 'reissue', 'disconnected_on',
                           effective_date, 'freeze_ends', NULL, 'region', cur_region)
        FROM _r WHERE reason IS NULL AND closes_prior
        UNION ALL
        SELECT concat('restored:', cur_tenure, ':', effective_date), effective_date, 'restored',
               msisdn, cur_tenure, cur_start, NULL,
               json_object('from_state', cur_state, 'restored_on', effective_date, 'region', cur_region)
        FROM _r WHERE reason IS NULL AND event = 'restore'
        UNION ALL
        SELECT concat(CASE WHEN violation THEN 'reissue_violation:' ELSE 'reissued:' END, new_tenure),
               effective_date, CASE WHEN violation THEN 'reissue_violation' ELSE 'reissued' END,
               msisdn, cur_tenure, cur_start,
               coalesce(cur_end, CASE WHEN closes_prior THEN effective_date END),
               json_object('reissue_date', effective_date, 'new_tenure_start', new_start,
                           'prior_state', cur_state,
                           'released_on', CASE WHEN cur_state = 'available' THEN cur_released_on END,
                           'violation', violation, 'region', region)
        FROM _r WHERE reason IS NULL AND event = 'reissue'
        ) n(idempotency_key, on_date, type, msisdn, tenure_id, tenure_start, tenure_end, fields)
        {once}
        """,
    )


def _flush_quarantine(con: Con, day: dt.date) -> None:
    if not count_rows(con, "_q"):
        return
    run_sql(
        con,
        """
        INSERT INTO quarantine
        SELECT file_name, file_sha256, kind, $d, line_no, 'lifecycle', reason, detail, NULL
        FROM _q ORDER BY file_sha256, line_no
        ON CONFLICT DO NOTHING
        """,
        {"d": day},
    )


def _retime_reminders(con: Con, day: dt.date) -> None:
    """A cancel during a 双停 suspension moves the freeze end: move the 'before freeze end'
    slots with it and drop their unsent texts so they are rendered again with the new date."""
    run_sql(
        con,
        """
        DELETE FROM outbox WHERE status = 'pending' AND reminder_id IN (
            SELECT r.reminder_id FROM reminders r JOIN _retime t ON t.tenure_id = r.tenure_id
            WHERE r.status = 'scheduled')
        """,
    )
    run_sql(
        con,
        """
        UPDATE reminders SET
            due_on = CASE WHEN reminders.slot LIKE 'offset:-%'
                          THEN greatest(t.freeze_ends + CAST(substr(reminders.slot, 8) AS INTEGER), $d)
                          ELSE reminders.due_on END,
            release_on = t.freeze_ends, cause = 'cancel'
        FROM _retime t
        WHERE reminders.tenure_id = t.tenure_id AND reminders.status = 'scheduled'
        """,
        {"d": day},
    )
