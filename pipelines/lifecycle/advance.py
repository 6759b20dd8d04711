"""Step ``advance``: time passes for logical date D: suspensions become permanent, freezes end,
and the release gate decides release, hold or release with a recorded exception.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipelines.config import Settings
from pipelines.contacts.retention import reseal_released
from pipelines.db import Con, nightly_step
from pipelines.lifecycle.notices import notice_served_sql
from pipelines.lifecycle.queue import cancel_unsent_reminders, queue_ledger
from pipelines.lifecycle.sql import count_rows, drop_tables, policy_sql, run_sql, working_copy


@dataclass(frozen=True)
class AdvanceReport:
    day: dt.date
    suspensions_expired: int
    released: int
    held: int  # newly held today
    released_with_exception: int
    still_held: int
    waiting_notice: int = 0  # at the gate, but not yet listed as pending for min_notice_days


# The temp tables of one advance_time call, each created by the phase named, all dropped
# together by _drop_temp_tables when the call ends (a rollback drops them with the step).
_TEMP_TABLES = (
    "_cand",  # numbers whose time may have come, whole rows with their rowid: _find_candidates
    "_exp",  # 双停 suspensions that run out today: _find_candidates
    "_due",  # numbers at the release gate today, with their policy: _find_due
    "_at",  # the candidates' tenures with their rowid: advance_time
    "_gate",  # the gate's outcome per due number: _release_gate (empty: advance_time)
    "_adv",  # the new state rows of the numbers that moved: _apply_advance
)


def _drop_temp_tables(con: Con) -> None:
    drop_tables(con, _TEMP_TABLES)


# --------------------------------------------------------------------------- advance_time


@nightly_step
def advance_time(con: Con, settings: Settings, day: dt.date) -> AdvanceReport:
    """Move numbers whose time has come: 双停 suspensions become disconnections, freezes end
    at the release gate, held numbers are re-checked, and max_hold_days forces an exception.

    Only numbers last changed before ``day`` are considered (those frozen by this very step
    included), so a rerun after the day's later steps changes nothing.
    """
    expired = _find_candidates(con, settings, day)
    waiting = _find_due(con, settings, day)
    # The tenures of these numbers, read once: the gate needs their dates, an expired
    # suspension closes its tenure.
    working_copy(con, "_at", "tenures", "tenure_id", "SELECT tenure_id FROM _cand")
    counts: dict[str, int] = {}
    if count_rows(con, "_due"):
        counts = _release_gate(con, day)
    else:
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _gate AS SELECT *, NULL AS outcome FROM _due")
    if expired or sum(counts.values()):
        _apply_advance(con, day)
    report = AdvanceReport(
        day=day,
        suspensions_expired=expired,
        released=int(counts.get("released", 0)),
        held=int(counts.get("held", 0)),
        released_with_exception=int(counts.get("released_with_exception", 0)),
        still_held=count_rows(con, "number_state", "state = 'held'"),
        waiting_notice=waiting,
    )
    _drop_temp_tables(con)
    return report


def _find_candidates(con: Con, settings: Settings, day: dt.date) -> int:
    """``_cand``: the numbers whose time may have come; ``_exp``: the 双停 suspensions among them
    that run out today (frozen from the end of the suspension). Return how many expire."""
    p = {"d": day}
    suspend = policy_sql(settings, "suspend_days", "s.region")
    freeze = policy_sql(settings, "freeze_days", "s.region")
    # The numbers whose time may have come, whole rows with their rowid: one equality filter on
    # the state per branch is pushed into the scan (an IN or OR is not, and would decode every
    # column of ten million rows); the rows are written back by rowid.
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _cand AS
        SELECT s.*, s.rowid AS _rid FROM number_state s
        WHERE s.state = 'suspended' AND s.changed_logical < $d AND s.suspended_on + {suspend} <= $d
        UNION ALL
        SELECT s.*, s.rowid FROM number_state s
        WHERE s.state = 'frozen' AND s.changed_logical < $d AND s.freeze_ends <= $d
        UNION ALL
        SELECT s.*, s.rowid FROM number_state s WHERE s.state = 'held' AND s.changed_logical < $d
        """,
        p,
    )
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _exp AS
        SELECT s.msisdn, s.tenure_id, s.suspended_on, s.region,
               s.suspended_on + {suspend} AS frozen_on,
               s.suspended_on + {suspend} + {freeze} AS freeze_ends
        FROM _cand s WHERE s.state = 'suspended'
        """,
    )
    # No ledger entry here: a 双停 tenure's ``tenure_closed`` entry was queued on the day of the
    # suspension (its disconnection date), so the reminders sent during the suspension already
    # share its public tenure ref; a restore within the suspension logs ``restored``.
    return count_rows(con, "_exp")


def _find_due(con: Con, settings: Settings, day: dt.date) -> int:
    """``_due``: the numbers at the release gate today (frozen until today, held, or an expired
    suspension whose freeze is already over), with their region's gate policy; those not yet
    listed as pending for ``min_notice_days`` are left out (they stay frozen or held and come
    back every night). Return how many wait for their notice."""
    p = {"d": day}
    min_eff = policy_sql(settings, "min_effective_reminders", "d.region")
    max_hold = policy_sql(settings, "max_hold_days", "d.region")
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _due AS
        SELECT d.*, {min_eff} AS min_eff, {max_hold} AS max_hold FROM (
            SELECT msisdn, tenure_id, state AS from_state, disconnected_on, freeze_ends,
                   hold_started, region
            FROM _cand WHERE state IN ('frozen', 'held')
            UNION ALL
            SELECT msisdn, tenure_id, 'frozen', suspended_on, freeze_ends, NULL, region
            FROM _exp WHERE freeze_ends <= $d
        ) d
        """,
        p,
    )
    # The notice period: platforms must have seen the number in the pending list for
    # min_notice_days before it may be sold again, whatever the reminders say; an exception
    # (max_hold_days) does not skip it either.
    served = notice_served_sql(settings, "d.tenure_id", "d.disconnected_on", "d.region", "$d")
    before = count_rows(con, "_due")
    run_sql(con, f"DELETE FROM _due d WHERE NOT {served}", p)
    return before - count_rows(con, "_due")


def _release_gate(con: Con, day: dt.date) -> dict[str, int]:
    """Decide every number in ``_due``: released, held, or released with an exception."""
    p = {"d": day}
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _gate AS
        WITH eff AS (
            SELECT r.tenure_id, r.disconnected_on, count(DISTINCT r.effective_on) AS n
            FROM reminders r SEMI JOIN _due d ON d.tenure_id = r.tenure_id
            WHERE r.status IN ('delivered', 'acknowledged') AND r.effective_on <= $d
            GROUP BY ALL
        )
        SELECT d.*, t.tenure_start, coalesce(t.tenure_end, d.disconnected_on) AS tenure_end,
               CAST(coalesce(eff.n, 0) AS INTEGER) AS effective,
               CASE WHEN coalesce(eff.n, 0) >= d.min_eff THEN 'released'
                    WHEN coalesce(d.hold_started, $d) + d.max_hold <= $d THEN 'released_with_exception'
                    ELSE 'held' END AS outcome
        FROM _due d
        JOIN _at t ON t.tenure_id = d.tenure_id
        LEFT JOIN eff ON eff.tenure_id = d.tenure_id AND eff.disconnected_on = d.disconnected_on
        """,
        p,
    )
    run_sql(con, "DELETE FROM _gate WHERE from_state = 'held' AND outcome = 'held'")
    run_sql(
        con,
        """
        INSERT INTO releases
        SELECT msisdn, tenure_id, tenure_end, $d, effective, outcome = 'released_with_exception', $d, region
        FROM _gate WHERE outcome <> 'held'
        """,
        p,
    )
    queue_ledger(
        con,
        day,
        """
        SELECT concat(outcome, ':', tenure_id, ':', disconnected_on), $d, outcome, msisdn, tenure_id,
               tenure_start, tenure_end,
               json_object('effective_reminders', effective, 'min_effective_reminders', min_eff,
                           'disconnected_on', tenure_end, 'freeze_ends', freeze_ends,
                           'hold_started', hold_started, 'released_on', $d,
                           'exception', outcome = 'released_with_exception', 'region', region)
        FROM _gate WHERE outcome <> 'held'
        """,
    )
    cancel_unsent_reminders(con, "SELECT tenure_id FROM _gate WHERE outcome <> 'held'")
    # Released: contacts move under the release day's key, erased contact_retention_days later.
    reseal_released(con, day, "SELECT tenure_id FROM _gate WHERE outcome <> 'held'")
    rows = run_sql(con, "SELECT outcome, count(*) FROM _gate GROUP BY outcome").fetchall()
    return {str(k): int(v) for k, v in rows}


def _apply_advance(con: Con, day: dt.date) -> None:
    """Write the expiries (``_exp``) and gate outcomes (``_gate``) to the state in one pass.

    The changed rows are deleted by rowid and inserted anew, not UPDATEd: an UPDATE of rows
    spread over a ten-million-row table makes the commit's checkpoint rewrite every row group
    they touch.
    """
    p = {"d": day}
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _adv AS
        SELECT c._rid, c.msisdn,
               CASE WHEN g.outcome = 'held' THEN 'held' WHEN g.outcome IS NOT NULL THEN 'available'
                    ELSE 'frozen' END AS state,
               c.tenure_id,
               CASE WHEN g.outcome IS NOT NULL THEN $d ELSE e.frozen_on END AS since,
               c.disconnected_on, c.cause, c.suspended_on,
               coalesce(e.frozen_on, c.frozen_on) AS frozen_on,
               coalesce(e.freeze_ends, c.freeze_ends) AS freeze_ends,
               CASE WHEN g.outcome = 'held' THEN $d ELSE c.hold_started END AS hold_started,
               CASE WHEN g.outcome IN ('released', 'released_with_exception') THEN $d
                    ELSE c.released_on END AS released_on,
               c.region, $d AS changed_logical
        FROM _cand c LEFT JOIN _exp e USING (msisdn) LEFT JOIN _gate g USING (msisdn)
        WHERE e.msisdn IS NOT NULL OR g.msisdn IS NOT NULL
        """,
        p,
    )
    run_sql(con, "DELETE FROM number_state WHERE rowid IN (SELECT _rid FROM _adv)")
    run_sql(con, "INSERT INTO number_state SELECT * EXCLUDE (_rid) FROM _adv")
    # A 双停 suspension that ran its course is the permanent disconnection of the tenure.
    run_sql(con, "DELETE FROM tenures WHERE rowid IN (SELECT _rid FROM _at SEMI JOIN _exp USING (tenure_id))")
    run_sql(
        con,
        """
        INSERT INTO tenures
        SELECT t.* EXCLUDE (_rid) REPLACE (e.suspended_on AS tenure_end, 'suspend' AS end_reason)
        FROM _at t JOIN _exp e USING (tenure_id)
        """,
    )
    run_sql(
        con,
        """
        INSERT INTO state_history
        SELECT msisdn, tenure_id, 'suspended', 'frozen', frozen_on, $d, 'suspension_expired', NULL, NULL
        FROM _exp
        UNION ALL
        SELECT msisdn, tenure_id, from_state, CASE outcome WHEN 'held' THEN 'held' ELSE 'available' END,
               $d, $d, outcome, NULL, NULL
        FROM _gate
        """,
        p,
    )
