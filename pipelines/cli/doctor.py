"""`recycle doctor`: every check an auditor or operator needs, one verdict.

The checks, each what its own command does: the ledger's fsck (`recycle verify <data>/ledger`),
the public-log audit (`recycle audit-log`), the compliance alerts of the newest night
(`recycle alerts check --date D`) and that night's status (`recycle status --date D`). Each is
run even when an earlier one failed; the failing ones are listed first, each with the command
that shows the detail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import typer

from pipelines.cli.common import ConfigOpt, DataOpt, err, out, settings_from
from pipelines.config import Settings
from pipelines.errors import RecycleError
from pipelines.layout import Layout

__all__ = ["Check", "doctor", "newest_night", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One check's outcome: its name, whether it passed, one line of figures, the command to look closer."""

    name: str
    passed: bool
    summary: str
    detail_command: str


def newest_night(settings: Settings) -> dt.date | None:
    """The newest logical date with a run folder (any step recorded), or None before the first run."""
    runs = Layout(settings.data_dir).root / "runs"
    dates = []
    for folder in runs.glob("*") if runs.is_dir() else ():
        try:
            dates.append(dt.date.fromisoformat(folder.name))
        except ValueError:
            continue
    return max(dates, default=None)


def _vkey(settings: Settings) -> tuple[Path, str]:
    folder = Layout(settings.ledger_home).ledger_dir
    key = folder / "vkey"
    if not key.exists():
        raise FileNotFoundError(
            f"no ledger at {folder} (no vkey file); run a night first: recycle run --date D"
        )
    return folder, key.read_text().strip()


# A check returns (passed, one line of figures); it raises when it cannot run.
Outcome = tuple[bool, str]


def _ledger_fsck(settings: Settings, _night: dt.date) -> Outcome:
    from pipelines.ledger import verify_log

    folder, key = _vkey(settings)
    report = verify_log(folder, key)  # raises VerificationError on any mismatch
    return True, f"{report.entries} entries, root matches the signed checkpoint"


def _audit_log(settings: Settings, _night: dt.date) -> Outcome:
    from pipelines.ledger import audit_log

    folder, key = _vkey(settings)
    report = audit_log(folder, key, settings.policy("default").min_effective_reminders)
    return report.passed, (
        f"{report.released} released, {len(report.under_reminded)} under-reminded, "
        f"{len(report.violations)} reissue violation(s), {len(report.released_without_closure)} "
        "released without a closure"
    )


def _alerts(settings: Settings, night: dt.date) -> Outcome:
    from pipelines.compliance.alerts import evaluate_compliance
    from pipelines.db import open_state

    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        report = evaluate_compliance(con, settings, night)
    return report.passed, (
        f"{report.violations - report.acknowledged_violations} unacknowledged reissue violation(s), "
        f"{report.unacknowledged_exceptions} unacknowledged release exception(s), exception rate {report.exception_rate:.2%} vs {report.threshold:.2%}"
    )


def _status(settings: Settings, night: dt.date) -> Outcome:
    from pipelines.nightly.status import day_status

    outcome = day_status(settings, night)["outcome"]
    return outcome == "complete", outcome


# (name, check, the command that shows its detail), in the order they run; {night} is the
# newest night, {ledger} the ledger folder.
_CHECKS: tuple[tuple[str, Callable[[Settings, dt.date], Outcome], str], ...] = (
    ("ledger fsck", _ledger_fsck, "recycle verify {ledger}"),
    ("audit-log", _audit_log, "recycle audit-log"),
    ("alerts check {night}", _alerts, "recycle alerts check --date {night}"),
    ("status {night}", _status, "recycle status --date {night}"),
)


def run_checks(settings: Settings, night: dt.date) -> list[Check]:
    """Every check for ``night``, failing ones first (in their order), then the passing ones.

    A check that cannot run (no ledger, a bad signature, the state file busy) is a failed check
    with the reason as its summary: the doctor never stops at the first problem."""
    checks: list[Check] = []
    ledger = Layout(settings.ledger_home).ledger_dir
    for name, check, command in _CHECKS:
        try:
            passed, summary = check(settings, night)
        except (RecycleError, OSError, duckdb.Error) as exc:
            passed, summary = False, exc.diagnostics() if isinstance(exc, RecycleError) else str(exc)
        checks.append(
            Check(name.format(night=night), passed, summary, command.format(night=night, ledger=ledger))
        )
    return [c for c in checks if not c.passed] + [c for c in checks if c.passed]


def doctor(config: ConfigOpt = None, data: DataOpt = None) -> None:
    """Every check an auditor or operator needs, one verdict: the ledger's fsck, the public-log
    audit, the newest night's alerts and its status; exit 1 when any fails, failing first."""
    settings = settings_from(config, data)
    night = newest_night(settings)
    if night is None:
        err.print(
            f"no night has run in {settings.data_dir}; run one: recycle run --date D",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    checks = run_checks(settings, night)
    failed = [c for c in checks if not c.passed]
    if failed:
        names = ", ".join(c.name for c in failed)
        out.print(f"DOCTOR: FAILED {len(failed)} of {len(checks)} checks: {names}", highlight=False)
    else:
        out.print(f"DOCTOR: PASSED all {len(checks)} checks (newest night {night})", highlight=False)
    for c in checks:
        mark = "ok    " if c.passed else "FAILED"
        out.print(f"  {mark} {c.name}: {c.summary}", highlight=False, soft_wrap=True)
        if not c.passed:
            out.print(f"         details: {c.detail_command}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)
