"""Nightly compliance checks, and the operators' acknowledgement of known exceptions.

:func:`check_compliance` fails the night (``ComplianceViolationError``, terminal: the
Airflow task fails without retry) when

* a reissue broke the release gate (the number was sold again while frozen, held, active…, or
  before it had been listed as pending for ``min_notice_days``) and nobody has acknowledged it yet — not only today's: an unacknowledged violation keeps
  failing every following night, so a skipped or cleared task cannot bury it; or
* the share of releases with a compliance exception (``max_hold_days`` ran out before the
  prior owner had ``min_effective_reminders`` effective reminders) over a trailing window
  exceeds ``settings.exception_rate_threshold``. Acknowledged exceptions do not count
  towards the rate: ops looked at them and accepted them.

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


_EXCEPTIONS = """
    SELECT r.msisdn, r.released_on AS on_date, r.region, r.logical_date,
           EXISTS (SELECT 1 FROM alert_acks a WHERE a.kind = 'release_exception'
                   AND a.msisdn = r.msisdn AND a.on_date = r.released_on) AS acknowledged
    FROM releases r
    WHERE r.exception AND r.released_on BETWEEN $w AND $d
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
    open_exceptions: tuple[str, ...]
    inside_notice: int = 0  # of the violations: sold before min_notice_days of pending listing

    @property
    def counted_exceptions(self) -> int:
        """Exceptions that count towards the rate: those nobody has acknowledged."""
        return self.with_exception - self.acknowledged_exceptions

    @property
    def exception_rate(self) -> float:
        return self.counted_exceptions / self.released if self.released else 0.0

    @property
    def rate_exceeded(self) -> bool:
        if not self.released:
            return False
        # Exact: 1 of 20 against 0.05 is on the threshold, not above it by a rounding error.
        threshold = fractions.Fraction(repr(self.threshold))
        return fractions.Fraction(self.counted_exceptions, self.released) > threshold

    @property
    def unacknowledged_violations(self) -> int:
        return self.violations - self.acknowledged_violations

    @property
    def passed(self) -> bool:
        return not self.unacknowledged_violations and not self.rate_exceeded

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(
            day=self.day.isoformat(),
            window_start=self.window_start.isoformat(),
            open_violations=list(self.open_violations),
            open_exceptions=list(self.open_exceptions),
            counted_exceptions=self.counted_exceptions,
            exception_rate=round(self.exception_rate, 6),
            unacknowledged_violations=self.unacknowledged_violations,
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
            "early reissues at the sales system and follow the dispute procedure; once an item is "
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
    exceptions, acked_exceptions, open_exceptions = _tally(con, _EXCEPTIONS, p)
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
    )


def check_compliance(
    con: Con, settings: Settings, day: dt.date, *, window_days: int = DEFAULT_WINDOW_DAYS
) -> AlertReport:
    """Raise :class:`ComplianceViolationError` when the night for ``day`` is not compliant.

    Not compliant: an unacknowledged violating reissue recorded on or before ``day``, or more
    unacknowledged exceptions than ``settings.exception_rate_threshold`` of the releases of the
    ``window_days`` days ending on ``day`` (the boundary itself passes). Returns the figures
    otherwise.
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
