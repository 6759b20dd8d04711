"""A number's life: tenures, number state, the state machine, the release gate.

The nightly run calls, for logical date D and each inside its own DuckDB transaction,
``reminders.apply_receipts`` → :func:`advance_time` → :func:`apply_events` →
``reminders.schedule_reminders`` → ``reminders.send_reminders``. Every step is set-based SQL
(a province's night is a million rows against ten million tenures), reads time only from
``day``, and is idempotent for its day: running it again leaves every table identical.

This module declares the schema of a number's life, reminders and outbox included, because
the release gate reads reminders and transitions cancel them; ``pipelines.reminders.core`` builds
on it. See ``docs/lifecycle.md`` for states, transitions, reason codes and the gate rule.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import phonenumbers

from pipelines.config import Settings
from pipelines.db import nightly_step, sql_str

__all__ = [
    "STATES",
    "AdvanceReport",
    "EventsReport",
    "advance_time",
    "apply_events",
    "lifecycle_status",
    "number_history",
    "tenure_id",
]

STATES = ("active", "suspended", "frozen", "held", "available", "ported_out")
# States in which the prior owner is still being reminded (the tenure's disconnection is live).
REMINDING_STATES = ("suspended", "frozen", "held")


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
)

Con = duckdb.DuckDBPyConnection


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


@dataclass(frozen=True)
class AdvanceReport:
    day: dt.date
    suspensions_expired: int
    released: int
    held: int  # newly held today
    released_with_exception: int
    still_held: int


# --------------------------------------------------------------------------- SQL helpers


def tenure_id(msisdn: str, tenure_start: dt.date) -> str:
    """Deterministic id of the tenure (msisdn, tenure_start); equals the SQL ``nr_tenure_id`` (see :func:`expand_sql`)."""
    digest = hashlib.sha256(f"{msisdn}|{tenure_start.isoformat()}".encode()).hexdigest()
    return "T" + digest[:20]


def _sql_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(int(v)) for v in value) + "]::INTEGER[]"
    return str(int(value))


def policy_sql(settings: Settings, attr: str, region_col: str) -> str:
    """SQL for ``settings.policy(<region_col>).<attr>``: a CASE over the configured regions."""
    default = getattr(settings.policies["default"], attr)
    whens = [
        f"WHEN {sql_str(code)} THEN {_sql_value(getattr(p, attr))}"
        for code, p in sorted(settings.policies.items())
        if code != "default" and getattr(p, attr) != default
    ]
    if not whens:
        return f"({_sql_value(default)})"
    return f"(CASE {region_col} {' '.join(whens)} ELSE {_sql_value(default)} END)"


def _country_code_lists() -> tuple[str, str]:
    by_len: dict[int, list[str]] = {1: [], 2: [], 3: []}
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        by_len.setdefault(len(str(code)), []).append(sql_str(str(code)))
    return ", ".join(sorted(by_len[1])), ", ".join(sorted(by_len[2]))


_CC1, _CC2 = _country_code_lists()


def _mask_expr(m: str) -> str:
    # pipelines.numbers.mask in SQL: country codes are prefix-free, and phonenumbers' national
    # number is an integer (hence the ltrim of leading zeros).
    cc = (
        f"(CASE WHEN substr({m}, 2, 1) IN ({_CC1}) THEN 1 "
        f"WHEN substr({m}, 2, 2) IN ({_CC2}) THEN 2 ELSE 3 END)"
    )
    n = (
        f"(CASE WHEN starts_with({m}, '+') THEN ltrim(substr({m}, 2 + {cc}), '0') "
        f"ELSE regexp_replace({m}, '[^0-9]', '', 'g') END)"
    )
    return (
        f"(CASE WHEN length({n}) >= 9 THEN left({n}, 3) || '****' || right({n}, 4) "
        f"ELSE repeat('*', greatest(length({n}) - 2, 0)) || right({n}, 2) END)"
    )


_MACROS: dict[str, Any] = {
    "nr_mask": _mask_expr,
    "nr_cc_len": lambda m: (
        f"(CASE WHEN substr({m}, 2, 1) IN ({_CC1}) THEN 1 "
        f"WHEN substr({m}, 2, 2) IN ({_CC2}) THEN 2 ELSE 3 END)"
    ),
    "nr_tenure_id": lambda m, s: f"('T' || substr(sha256({m} || '|' || strftime({s}, '%Y-%m-%d')), 1, 20))",
    "nr_reminder_id": lambda t, d, slot, ch: (
        f"('R' || substr(sha256({t} || '|' || strftime({d}, '%Y-%m-%d') || '|' || {slot} "
        f"|| '|' || {ch}), 1, 20))"
    ),
}
_MACRO_CALL = re.compile(r"\b(nr_mask|nr_cc_len|nr_tenure_id|nr_reminder_id)\(([^()]*)\)")


@functools.lru_cache(maxsize=512)
def expand_sql(sql: str) -> str:
    """Expand our SQL helpers (``nr_mask(m)``, ``nr_cc_len(m)``, ``nr_tenure_id(m, start)``,
    ``nr_reminder_id(tenure, disconnected_on, slot, channel)``; arguments without parentheses)
    into plain SQL. Inline expressions, not DuckDB macros: a macro created inside a step's
    transaction would vanish with a rollback of that step."""
    return _MACRO_CALL.sub(
        lambda m: str(_MACROS[m.group(1)](*(a.strip() for a in m.group(2).split(",")))), sql
    )


def run_sql(con: Con, sql: str, params: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """``con.execute`` after :func:`expand_sql`."""
    return con.execute(expand_sql(sql), params or {})


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


def working_copy(con: Con, name: str, table: str, key: str, keys_sql: str, columns: str = "*") -> None:
    """``CREATE TEMP TABLE name``: the rows of ``table`` whose ``key`` is in ``keys_sql`` (a
    one-column SELECT), ``columns`` of them plus their rowid as ``_rid``.

    Two passes: the key column alone finds the rowids, then the rows are fetched by rowid.
    A join on the key decodes every column of every row of a ten-million-row table; a rowid
    filter lets the scan skip what it does not need (about half the cost).
    """
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE {name}_rowids AS
        SELECT t.rowid AS rid FROM {table} t WHERE t.{key} IN ({keys_sql})
        """,
    )
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        SELECT {columns}, t.rowid AS _rid FROM {table} t WHERE t.rowid IN (SELECT rid FROM {name}_rowids)
        """,
    )
    run_sql(con, f"DROP TABLE {name}_rowids")


def _count(con: Con, table: str, where: str = "true", params: dict[str, Any] | None = None) -> int:
    row = run_sql(con, f"SELECT count(*) FROM {table} WHERE {where}", params or {}).fetchone()
    return int(row[0]) if row else 0


def _scalar(con: Con, sql: str, params: dict[str, Any] | None = None) -> Any:
    row = run_sql(con, sql, params or {}).fetchone()
    return row[0] if row else None


def _drop(con: Con, names: Iterable[str]) -> None:
    for name in names:
        run_sql(con, f"DROP TABLE IF EXISTS {name}")


# --------------------------------------------------------------------------- apply_events

_DONE_ROWS = """
    SELECT file_sha256, line_no FROM state_history
    WHERE logical_date = $d AND file_sha256 IS NOT NULL
    UNION ALL
    SELECT file_sha256, line_no FROM quarantine WHERE logical_date = $d AND stage = 'lifecycle'
"""

_FILES = "SELECT sha256, min(file_name) AS file_name, min(kind) AS kind FROM files GROUP BY sha256"

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
    p = {"d": day}
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE _q ({_Q_COLUMNS})")
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE _led ({_LED_COLUMNS})")
    # A table, not a subquery: knowing its size (none, on a first run) the planner builds the
    # anti joins below on it rather than on a million rows of the day.
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE _done AS {_DONE_ROWS}", p)
    snapshot_rows, seeded = _apply_snapshot(con, day)

    freeze = policy_sql(settings, "freeze_days", "x.new_region")
    suspend = policy_sql(settings, "suspend_days", "x.new_region")
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
            LEFT JOIN ({_FILES}) f ON f.sha256 = raw.file_sha256
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
        p,
    )
    event_rows = _count(con, "_ev")
    rounds = int(_scalar(con, "SELECT coalesce(max(k), 0) FROM _ev"))
    applied_events, reissues, violations = 0, 0, 0
    if event_rows:
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _ends (tenure_id VARCHAR)")
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _retime (tenure_id VARCHAR, freeze_ends DATE)")
        # The rounds work on the day's numbers and their tenures only, written back once:
        # joins and UPDATEs against ten million rows per round would dominate the night.
        # ``_rid`` (the row's rowid, NULL for rows opened today) lets the write-back delete
        # exactly the rows read, without joining ten million keys again.
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _evm AS SELECT DISTINCT msisdn FROM _ev")
        working_copy(con, "_ns", "number_state", "msisdn", "SELECT msisdn FROM _evm", "t.*, false AS dirty")
        working_copy(con, "_tn", "tenures", "msisdn", "SELECT msisdn FROM _evm", "t.*, false AS dirty")
        for k in range(1, rounds + 1):
            applied, reissued, violated = _round(con, day, k, freeze, suspend)
            applied_events += applied
            reissues += reissued
            violations += violated
        _write_back(con, "number_state", "_ns")
        _write_back(con, "tenures", "_tn")
        cancel_unsent_reminders(con, "SELECT tenure_id FROM _ends")
        _retime_reminders(con, day)
        queue_ledger(con, day, "SELECT * FROM _led")
    _flush_quarantine(con, day)
    reasons = dict(run_sql(con, "SELECT reason, count(*) FROM _q GROUP BY reason ORDER BY reason").fetchall())
    report = EventsReport(
        day=day,
        snapshot_rows=snapshot_rows,
        seeded=seeded,
        event_rows=event_rows,
        applied=applied_events,
        quarantined=sum(reasons.values()),
        reasons={str(k): int(v) for k, v in reasons.items()},
        reissues=reissues,
        violations=violations,
        rounds=rounds,
    )
    _drop(con, ["_done", "_ev", "_evm", "_ns", "_tn", "_e", "_r", "_ends", "_retime", "_q", "_led", "_snap"])
    return report


def _apply_snapshot(con: Con, day: dt.date) -> tuple[int, int]:
    """Seed active tenures from ``subscriber_rows``; a row that contradicts the record is quarantined."""
    p = {"d": day}
    if not _count(con, "subscriber_rows", "logical_date = $d", p):
        return 0, 0
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
            FROM todo LEFT JOIN ({_FILES}) f ON f.sha256 = todo.file_sha256
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
        p,
    )
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
    rows = _count(con, "_snap")
    seeded = _count(con, "_snap", "outcome = 'seed'")
    return rows, seeded


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
    WHEN e.event = 'port_in' AND s.state IN ('active', 'suspended', 'frozen', 'held')
        THEN 'illegal_transition'
    WHEN e.event = 'restore' AND (e.subscriber_ref IS DISTINCT FROM t.subscriber_ref
         OR e.tenure_start IS DISTINCT FROM t.tenure_start) THEN 'tenure_mismatch'
    WHEN e.event IN ('cancel', 'suspend', 'port_out') AND s.state IS NOT NULL
         AND (e.subscriber_ref <> t.subscriber_ref OR e.tenure_start <> t.tenure_start)
        THEN 'tenure_mismatch'
    WHEN e.event = 'reissue' AND s.state IS NOT NULL
         AND (e.effective_date < t.tenure_start OR e.effective_date < t.tenure_end
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
    p = {"d": day}
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
                (r.event = 'reissue' AND (r.cur_state IS DISTINCT FROM 'available'
                    OR r.effective_date < r.cur_released_on)) AS violation
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
    run_sql(
        con,
        f"""
        INSERT INTO _q SELECT r.file_name, r.file_sha256, r.kind, r.line_no, r.reason, {_DETAIL}
        FROM _r r WHERE r.reason IS NOT NULL
        """,
    )
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
    # The tenure on record (closed, reopened, or its contacts refreshed from the event row) and
    # the number's state. Rebuilt rather than UPDATEd: a round changes most of the working set.
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
    row = run_sql(
        con,
        """
        SELECT count(*), count(*) FILTER (event = 'reissue'), count(*) FILTER (violation)
        FROM _r WHERE reason IS NULL
        """,
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _write_back(con: Con, table: str, work: str) -> None:
    """Replace the changed rows of ``table`` by those of the working copy ``work``.

    DELETE + INSERT rather than UPDATE: on a ten-million-row table it is about three times
    faster for a million changed rows (DuckDB rewrites updated string columns row by row), and
    the rows read are deleted by rowid, without a join over ten million keys.
    """
    run_sql(
        con, f"DELETE FROM {table} WHERE rowid IN (SELECT _rid FROM {work} WHERE dirty AND _rid IS NOT NULL)"
    )
    run_sql(con, f"INSERT INTO {table} SELECT * EXCLUDE (dirty, _rid) FROM {work} WHERE dirty")


def _flush_quarantine(con: Con, day: dt.date) -> None:
    if not _count(con, "_q"):
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


# --------------------------------------------------------------------------- advance_time


@nightly_step
def advance_time(con: Con, settings: Settings, day: dt.date) -> AdvanceReport:
    """Move numbers whose time has come: 双停 suspensions become disconnections, freezes end
    at the release gate, held numbers are re-checked, and max_hold_days forces an exception.

    Only numbers last changed before ``day`` are considered (those frozen by this very step
    included), so a rerun after the day's later steps changes nothing.
    """
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
    expired = _count(con, "_exp")
    # No ledger entry here: a 双停 tenure's ``tenure_closed`` entry was queued on the day of the
    # suspension (its disconnection date), so the reminders sent during the suspension already
    # share its public tenure ref; a restore within the suspension logs ``restored``.
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
    # The tenures of these numbers, read once: the gate needs their dates, an expired
    # suspension closes its tenure.
    working_copy(con, "_at", "tenures", "tenure_id", "SELECT tenure_id FROM _cand")
    counts: dict[str, int] = {}
    if _count(con, "_due"):
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
        still_held=_count(con, "number_state", "state = 'held'"),
    )
    _drop(con, ["_cand", "_exp", "_due", "_at", "_gate", "_adv"])
    return report


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
    held_today = _count(con, "state_history", "logical_date = $d AND to_state = 'held'", p)
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
