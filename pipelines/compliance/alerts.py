"""Nightly compliance checks, and the operators' acknowledgement of known exceptions.

:func:`check_compliance` fails the night (``ComplianceViolationError``, terminal: the
Airflow task fails without retry) when

* a reissue broke the release gate (the number was sold again while frozen, held, active…, or
  before it had been listed as pending for ``min_notice_days``) and nobody has acknowledged it yet — not only today's: an unacknowledged violation keeps
  failing every following night, so a skipped or cleared task cannot bury it; or
* a number was released with a compliance exception (``max_hold_days`` ran out before the
  prior owner had ``min_effective_reminders`` effective reminders) and nobody has
  acknowledged it yet — likewise every following night: no release is silent (issue 15);
  the prior owner has been sent an urgent notice by the schedule step; or
* the share of releases with an exception over a trailing window exceeds
  ``settings.exception_rate_threshold``, overall, in one province, in one ISO week, or in one
  province in one week (each crossing is named). Acknowledged exceptions do not count
  towards the rate: ops looked at them and accepted them. Since every unacknowledged
  exception fails the night by itself, the rate adds *where and when* they concentrate (a
  province's gateway, a week's outage), which is what ops must fix.

An acknowledgement (``recycle alerts ack``) names one number and the date of its item (the
reissue date of a violation, the release date of an exception), why, and who; it is kept in
the ``alert_acks`` table of the state file, append-only, and listed in the compliance report.
"""

from __future__ import annotations

import datetime as dt
import fractions
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from pipelines.config import Settings
from pipelines.db import open_state
from pipelines.errors import ComplianceViolationError, TerminalError
from pipelines.layout import Layout
from pipelines.lifecycle.notices import notice_listed_sql, notice_served_sql
from pipelines.numbers import mask

__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "KINDS",
    "Ack",
    "AlertReport",
    "acknowledge",
    "check_compliance",
    "evaluate_compliance",
    "has_ack_table",
    "list_acks",
    "nightly_alerts",
]

log = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 30  # trailing days of releases behind the exception rate
KINDS = ("reissue_violation", "release_exception")
_SHOWN = 10  # masked numbers named in an alert message; the report lists them all

Con = duckdb.DuckDBPyConnection


# One row per item an alert is about. Violations: every violating reissue recorded up to the
# night; exceptions: releases with an exception inside the window (bounds bound by the caller).
# A reissue is a violation when the lifecycle recorded one (not available: frozen, held, …) or
# when the number had been listed as pending for fewer than min_notice_days on the sale day
# (the notice rule, lifecycle.notices; numbers released before notices existed were never
# listed and are not flagged for it). ``inside_notice`` names the second reason.
def _violations_sql(settings: Settings) -> str:
    served = notice_served_sql(
        settings, "r.prior_tenure_id", "r.disconnected_on", "r.region", "r.reissue_date"
    )
    listed = notice_listed_sql("r.prior_tenure_id", "r.disconnected_on")
    return f"""
    SELECT * FROM (
        SELECT r.msisdn, r.reissue_date AS on_date, r.region, r.logical_date, r.violation,
               ({listed} AND NOT {served}) AS inside_notice,
               EXISTS (SELECT 1 FROM alert_acks a WHERE a.kind = 'reissue_violation'
                       AND a.msisdn = r.msisdn AND a.on_date = r.reissue_date) AS acknowledged
        FROM reissues r
        WHERE r.logical_date <= $d
    ) WHERE violation OR inside_notice
"""


_EXCEPTION_ACKED = """EXISTS (SELECT 1 FROM alert_acks a WHERE a.kind = 'release_exception'
                   AND a.msisdn = r.msisdn AND a.on_date = r.released_on)"""
_EXCEPTIONS = f"""
    SELECT r.msisdn, r.released_on AS on_date, r.region, r.logical_date,
           {_EXCEPTION_ACKED} AS acknowledged
    FROM releases r
    WHERE r.exception AND r.released_on BETWEEN $w AND $d
"""
# Every release with an exception recorded up to the night: each is an alert of its own.
_EXCEPTIONS_ON_RECORD = f"""
    SELECT r.msisdn, r.released_on AS on_date, r.region, r.logical_date,
           {_EXCEPTION_ACKED} AS acknowledged
    FROM releases r
    WHERE r.exception AND r.logical_date <= $d
"""
# The rate per province, per ISO week (of the release date) and per province and week, over
# the releases of the window (a week cut by the window's start counts its days inside it).
_RATE_GROUPS = f"""
    WITH r AS (
        SELECT r.region, strftime(r.released_on, '%G-W%V') AS week,
               r.exception AND NOT {_EXCEPTION_ACKED} AS counted
        FROM releases r WHERE r.released_on BETWEEN $w AND $d
    )
    SELECT region, week, count(*) AS released, count(*) FILTER (WHERE counted) AS counted
    FROM r GROUP BY GROUPING SETS ((region), (week), (region, week))
    HAVING count(*) FILTER (WHERE counted) > 0
    ORDER BY week NULLS FIRST, region NULLS FIRST
"""


@dataclass(frozen=True)
class AlertReport:
    """The night's compliance figures. Numbers appear masked only (it goes to logs and JSON)."""

    day: dt.date
    window_start: dt.date  # first release date counted in the rate (window_days back, inclusive)
    threshold: float
    released: int  # releases in the window, with or without an exception
    with_exception: int
    acknowledged_exceptions: int
    violations: int  # violating reissues recorded up to ``day``, acknowledged or not
    acknowledged_violations: int
    open_violations: tuple[str, ...]  # "<masked> <region> <reissue date>", the first few
    open_exceptions: tuple[str, ...]  # the first few unacknowledged exceptions on record
    inside_notice: int = 0  # of the violations: sold before min_notice_days of pending listing
    # Releases with an exception recorded up to ``day`` (not only the window's), acknowledged or not.
    exceptions_on_record: int = 0
    acknowledged_exceptions_on_record: int = 0
    # Where the rate crossed the threshold: "province GD", "week 2026-W10", "province GD in week
    # 2026-W10", each with its counts, the first few.
    rate_breaches: tuple[str, ...] = ()

    @property
    def counted_exceptions(self) -> int:
        """Exceptions that count towards the rate: those nobody has acknowledged."""
        return self.with_exception - self.acknowledged_exceptions

    @property
    def exception_rate(self) -> float:
        return self.counted_exceptions / self.released if self.released else 0.0

    @property
    def rate_exceeded(self) -> bool:
        return _over(self.counted_exceptions, self.released, self.threshold)

    @property
    def unacknowledged_violations(self) -> int:
        return self.violations - self.acknowledged_violations

    @property
    def unacknowledged_exceptions(self) -> int:
        return self.exceptions_on_record - self.acknowledged_exceptions_on_record

    @property
    def passed(self) -> bool:
        return not (
            self.unacknowledged_violations
            or self.unacknowledged_exceptions
            or self.rate_exceeded
            or self.rate_breaches
        )

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(
            day=self.day.isoformat(),
            window_start=self.window_start.isoformat(),
            open_violations=list(self.open_violations),
            open_exceptions=list(self.open_exceptions),
            rate_breaches=list(self.rate_breaches),
            counted_exceptions=self.counted_exceptions,
            exception_rate=round(self.exception_rate, 6),
            unacknowledged_violations=self.unacknowledged_violations,
            unacknowledged_exceptions=self.unacknowledged_exceptions,
            passed=self.passed,
        )
        return body

    def message(self) -> str:
        """What failed, with counts and masked numbers, and what ops should do."""
        lines = [f"compliance check for logical date {self.day} FAILED:"]
        if self.unacknowledged_violations:
            more = self.unacknowledged_violations - len(self.open_violations)
            lines.append(
                f"- {self.unacknowledged_violations} reissue(s) broke the release gate and are not "
                f"acknowledged: {', '.join(self.open_violations)}"
                + (f" and {more} more (see `recycle report`)" if more > 0 else "")
                + ". These numbers were sold again before the release gate let them go (freeze "
                "over and the prior owner reminded): the prior owner's accounts may now answer "
                "to the new subscriber."
                + (
                    f" {self.inside_notice} of them were sold before platforms had seen the number "
                    "in the pending list for the policy's min_notice_days."
                    if self.inside_notice
                    else ""
                )
                + " Prior owners of numbers sold before their release have been sent an urgent notice."
            )
        if self.unacknowledged_exceptions:
            more = self.unacknowledged_exceptions - len(self.open_exceptions)
            lines.append(
                f"- {self.unacknowledged_exceptions} number(s) were released with a compliance exception "
                f"and are not acknowledged: {', '.join(self.open_exceptions)}"
                + (f" and {more} more (see `recycle report`)" if more > 0 else "")
                + ". Their prior owners were not reached the required number of times before the "
                "release; each has been sent an urgent notice on every channel left."
            )
        if self.rate_breaches:
            lines.append(
                f"- the release exception rate exceeds the threshold {self.threshold:.2%} in: "
                + "; ".join(self.rate_breaches)
                + ". Check the reminder channels and gateways there."
            )
        if self.rate_exceeded:
            lines.append(
                f"- release exception rate {self.exception_rate:.2%} ({self.counted_exceptions} "
                f"unacknowledged exception(s) of {self.released} releases from {self.window_start} "
                f"to {self.day}; {self.acknowledged_exceptions} acknowledged) exceeds the "
                f"threshold {self.threshold:.2%}; e.g. {', '.join(self.open_exceptions)}. Prior "
                "owners are not being reached: check the reminder channels and gateways."
            )
        lines.append(
            "What to do: inspect each number with `recycle show NUMBER`; for a violation stop "
            "early reissues at the sales system and follow the dispute procedure; when a prior "
            "owner asks for proof the number was theirs, issue `recycle statement`; once an item is "
            "understood record it with `recycle alerts ack --number NUMBER --date YYYY-MM-DD "
            "--reason TEXT`, then clear this task (it passes when every item is acknowledged)."
        )
        return "\n".join(lines)


def _tally(con: Con, sql: str, params: Mapping[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    """(items, acknowledged items, the first few open ones as "<masked> (<region>, <date>)")."""
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE acknowledged) FROM ({sql})", dict(params)
    ).fetchone()
    total, acked = (int(row[0]), int(row[1])) if row else (0, 0)
    first_open = con.execute(
        f"SELECT msisdn, region, on_date FROM ({sql}) WHERE NOT acknowledged "
        f"ORDER BY on_date, msisdn LIMIT {_SHOWN}",
        dict(params),
    ).fetchall()
    return total, acked, tuple(f"{mask(str(m))} ({r}, {d})" for m, r, d in first_open)


def evaluate_compliance(
    con: Con, settings: Settings, day: dt.date, *, window_days: int = DEFAULT_WINDOW_DAYS
) -> AlertReport:
    """The compliance figures for logical date ``day``, without raising."""
    if window_days < 1:
        raise TerminalError(f"the exception-rate window must be at least 1 day, got {window_days}")
    window_start = day - dt.timedelta(days=window_days - 1)
    p = {"d": day, "w": window_start}
    released_row = con.execute(
        "SELECT count(*) FROM releases WHERE released_on BETWEEN $w AND $d", p
    ).fetchone()
    violations_sql = _violations_sql(settings)
    violations, acked_violations, open_violations = _tally(con, violations_sql, {"d": day})
    notice_row = con.execute(
        f"SELECT count(*) FROM ({violations_sql}) WHERE inside_notice", {"d": day}
    ).fetchone()
    exceptions, acked_exceptions, _ = _tally(con, _EXCEPTIONS, p)
    on_record, acked_on_record, open_exceptions = _tally(con, _EXCEPTIONS_ON_RECORD, {"d": day})
    return AlertReport(
        day=day,
        window_start=window_start,
        threshold=settings.exception_rate_threshold,
        released=int(released_row[0]) if released_row else 0,
        with_exception=exceptions,
        acknowledged_exceptions=acked_exceptions,
        violations=violations,
        acknowledged_violations=acked_violations,
        open_violations=open_violations,
        open_exceptions=open_exceptions,
        inside_notice=int(notice_row[0]) if notice_row else 0,
        exceptions_on_record=on_record,
        acknowledged_exceptions_on_record=acked_on_record,
        rate_breaches=_rate_breaches(con, settings.exception_rate_threshold, p),
    )


def _over(counted: int, released: int, threshold: float) -> bool:
    # Exact: 1 of 20 against 0.05 is on the threshold, not above it by a rounding error.
    return bool(released) and fractions.Fraction(counted, released) > fractions.Fraction(repr(threshold))


def _rate_breaches(con: Con, threshold: float, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The provinces, ISO weeks and provinces-in-a-week of the window whose unacknowledged
    exception rate exceeds ``threshold``, each with its counts (the first ``_SHOWN``)."""
    rows = con.execute(_RATE_GROUPS, dict(params)).fetchall()
    found = []
    for region, week, released, counted in rows:
        if not _over(int(counted), int(released), threshold):
            continue
        where = f"province {region}" if week is None else f"week {week}"
        if region is not None and week is not None:
            where = f"province {region} in week {week}"
        found.append(f"{where}: {counted} of {released} ({counted / released:.2%})")
    return tuple(found[:_SHOWN])


def check_compliance(
    con: Con, settings: Settings, day: dt.date, *, window_days: int = DEFAULT_WINDOW_DAYS
) -> AlertReport:
    """Raise :class:`ComplianceViolationError` when the night for ``day`` is not compliant.

    Not compliant: an unacknowledged violating reissue or release with an exception recorded on
    or before ``day``, or more unacknowledged exceptions than
    ``settings.exception_rate_threshold`` of the releases of the ``window_days`` days ending on
    ``day`` (the boundary itself passes), overall or in one province, ISO week, or province in
    a week. Returns the figures otherwise.
    """
    report = evaluate_compliance(con, settings, day, window_days=window_days)
    if not report.passed:
        raise ComplianceViolationError(report.message())
    return report


@dataclass(frozen=True)
class Ack:
    msisdn: str  # E.164: show it with pipelines.numbers.mask
    on_date: dt.date
    kind: str
    reason: str
    acked_by: str
    acked_at: dt.datetime


def acknowledge(
    con: Con,
    msisdn: str,
    on_date: dt.date,
    reason: str,
    acked_by: str,
    acked_at: dt.datetime,
    kind: str | None = None,
) -> list[Ack]:
    """Record that ops know and accept the violation/exception of ``msisdn`` (E.164) on ``on_date``.

    ``kind`` narrows it to ``reissue_violation`` or ``release_exception``; by default every
    item of the number on that date is acknowledged. Raises :class:`TerminalError` when there
    is no such item, so a typo cannot silence a future alert. An item acknowledged before gets
    another row (the history of who said what is kept).
    """
    reason = reason.strip()
    if not reason:
        raise TerminalError("an acknowledgement needs a reason (--reason): say why it is acceptable")
    if kind is not None and kind not in KINDS:
        raise TerminalError(f"unknown alert kind {kind!r}; kinds are {', '.join(KINDS)}")
    found = con.execute(
        """
        SELECT 'reissue_violation' FROM reissues
        WHERE violation AND msisdn = $m AND reissue_date = $o
        UNION
        SELECT 'release_exception' FROM releases
        WHERE exception AND msisdn = $m AND released_on = $o
        ORDER BY 1
        """,
        {"m": msisdn, "o": on_date},
    ).fetchall()
    kinds = [str(k) for (k,) in found if kind is None or k == kind]
    if not kinds:
        raise TerminalError(
            f"nothing to acknowledge for {mask(msisdn)} on {on_date}: no "
            f"{kind or 'violating reissue or release with exception'} is recorded on that date. "
            "The date is the reissue date of a violation or the release date of an exception; "
            "check with `recycle show NUMBER`."
        )
    at = acked_at.astimezone(dt.UTC).replace(tzinfo=None) if acked_at.tzinfo else acked_at
    acks = [Ack(msisdn, on_date, k, reason, acked_by, at) for k in kinds]
    con.executemany(
        "INSERT INTO alert_acks VALUES (?, ?, ?, ?, ?, ?)",
        [[a.msisdn, a.on_date, a.kind, a.reason, a.acked_by, a.acked_at] for a in acks],
    )
    return acks


def has_ack_table(con: Con) -> bool:
    """Whether ``alert_acks`` exists (a state file opened read-only before any ack has none)."""
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alert_acks'"
    ).fetchone()
    return bool(row and row[0])


def list_acks(con: Con, msisdn: str | None = None) -> list[Ack]:
    """Every acknowledgement on record (of ``msisdn`` only, if given), oldest first."""
    if not has_ack_table(con):
        return []
    rows = con.execute(
        "SELECT msisdn, on_date, kind, reason, acked_by, acked_at FROM alert_acks "
        "WHERE $m IS NULL OR msisdn = $m ORDER BY acked_at, msisdn, on_date, kind",
        {"m": msisdn},
    ).fetchall()
    return [Ack(str(m), o, str(k), str(r), str(b), a) for m, o, k, r, b, a in rows]


def nightly_alerts(
    settings: Settings, day: dt.date, *, mode: str = "raise", window_days: int = DEFAULT_WINDOW_DAYS
) -> Mapping[str, Any]:
    """Nightly step ``alerts``: :func:`check_compliance` for ``day`` (raises when not compliant).

    ``mode`` = ``"raise"`` (default) or ``"record"``, which logs the failure as a warning and
    returns the figures instead (demos and backfills over synthetic drops that contain early
    reissues on purpose); ``window_days`` is the exception-rate window.
    """
    window = window_days
    if mode not in ("raise", "record"):
        raise TerminalError(f"alerts_mode {mode!r}: use 'raise' or 'record'")
    # Opened writable: open_state creates alert_acks on a state file that predates it.
    with open_state(Layout(settings.data_dir).state_db) as con:
        if mode == "raise":
            report = check_compliance(con, settings, day, window_days=window)
        else:
            report = evaluate_compliance(con, settings, day, window_days=window)
            if not report.passed:
                log.warning("%s", report.message())
    return {"alerts": report.as_dict()}
