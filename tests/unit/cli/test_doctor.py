"""`recycle doctor`: one verdict over the ledger fsck, the public-log audit, the newest night's
alerts and its status; failing parts first, each with the command that shows the detail; exit 1
when any fails. And `audit-log` / `alerts check` each say what they cover."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
from cli_testkit import NIGHTS, REUSED_NAME
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.layout import Layout

NIGHT = NIGHTS[-1]


def _doctor(data: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["doctor", "--data", str(data)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout.splitlines()


def test_a_clean_data_dir_passes_every_check(two_clean_nights: Path) -> None:
    code, lines = _doctor(two_clean_nights)
    assert code == 0, lines
    assert lines[0] == f"DOCTOR: PASSED all 4 checks (newest night {NIGHT})"
    assert [line.split(":")[0].split(maxsplit=1)[1] for line in lines[1:]] == [
        "ledger fsck",
        "audit-log",
        f"alerts check {NIGHT}",
        f"status {NIGHT}",
    ]


def _violation(data: Path) -> None:
    """A reissue before release recorded for the newest night: the alerts check must fail."""
    with duckdb.connect(str(Layout(data).state_db)) as con:
        con.execute(
            "INSERT INTO reissues VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ["+8613800000009", "T1", "T2", NIGHT, NIGHTS[0], None, True, NIGHT, "GD", "f" * 64, 1],
        )


def test_failing_parts_come_first_with_their_commands(two_nights: Path, tmp_path: Path) -> None:
    data = shutil.copytree(two_nights, tmp_path / "data")
    _violation(data)
    code, lines = _doctor(data)
    assert code == 1
    assert lines[0] == f"DOCTOR: FAILED 2 of 4 checks: alerts check {NIGHT}, status {NIGHT}"
    assert lines[1].startswith(f"  FAILED alerts check {NIGHT}: 1 unacknowledged reissue violation(s)")
    assert lines[2].strip() == f"details: recycle alerts check --date {NIGHT}"
    assert lines[3] == f"  FAILED status {NIGHT}: complete with failed files: {REUSED_NAME}"
    assert lines[4].strip() == f"details: recycle status --date {NIGHT}"
    assert [line.split()[0] for line in lines[5:]] == ["ok", "ok"]
    assert "+8613800000009" not in "\n".join(lines)


def test_a_tampered_ledger_fails_fsck_and_audit_without_a_traceback(
    two_clean_nights: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(two_clean_nights, tmp_path / "data")
    checkpoint = Layout(data).ledger_dir / "checkpoint"
    checkpoint.write_bytes(checkpoint.read_bytes().replace(b"\n", b"\n\n", 1))
    code, lines = _doctor(data)
    assert code == 1
    assert lines[0] == "DOCTOR: FAILED 2 of 4 checks: ledger fsck, audit-log"
    assert lines[1].startswith("  FAILED ledger fsck: ") and "Traceback" not in "\n".join(lines)
    assert [line.split()[0] for line in lines[-2:]] == ["ok", "ok"]


def test_no_night_yet_says_what_to_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["doctor", "--data", str(tmp_path)])
    assert result.exit_code == 2  # not a data directory yet (no state file): every command's rc 2
    assert "no night has run" in result.output and "recycle run --date" in result.output


def test_audit_log_and_alerts_check_say_what_they_cover(two_clean_nights: Path) -> None:
    data = ["--data", str(two_clean_nights)]
    audit = CliRunner().invoke(app, ["audit-log", *data])
    assert audit.exit_code == 0, audit.output
    assert audit.stderr.startswith("covers: the public ledger alone: every release had 2+ effective-reminder")
    alerts = CliRunner().invoke(app, ["alerts", "check", "--date", str(NIGHT), *data])
    assert alerts.exit_code == 0, alerts.output
    assert alerts.stderr.startswith(
        "covers: the night's compliance alerts: unacknowledged reissue violations"
    )
