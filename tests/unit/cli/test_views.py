"""`recycle status` and `recycle show` on two real nights: tables at 80 columns with the failed
file's error, a never-run date refused, a number's masked timeline, an unknown number refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_testkit import NIGHTS, REUSED_NAME
from typer.testing import CliRunner

from pipelines import db
from pipelines.cli import app
from pipelines.cli.common import out
from pipelines.layout import Layout
from pipelines.numbers import mask


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(out, "width", 80)


def test_status_fits_80_columns_and_shows_the_failed_files_error(two_nights: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--date", str(NIGHTS[1]), "--data", str(two_nights)])
    assert result.exit_code == 0, result.output
    tables = [line for line in result.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert tables and max(len(line) for line in tables) <= 80
    assert not any("…" in line for line in tables)
    assert f"│ {REUSED_NAME} │ failed" in result.stdout
    assert f"{REUSED_NAME} failed: {REUSED_NAME}: a different file of this name" in result.stdout
    assert "reminders by status and channel" in result.stdout
    assert "outcome: complete with failed files: " + REUSED_NAME in result.stdout


def test_status_of_a_never_run_date_says_so_and_shows_no_other_nights_figures(two_nights: Path) -> None:
    day = "2026-10-01"
    result = CliRunner().invoke(app, ["status", "--date", day, "--data", str(two_nights)])
    assert result.exit_code == 1
    assert f"no run for {day}" in result.output and f"recycle run --date {day}" in result.output
    assert "numbers by state" not in result.output
    as_json = CliRunner().invoke(app, ["status", "--date", day, "--data", str(two_nights), "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["outcome"] == "not run" and "lifecycle" not in report


def _number_with_a_receipt(data: Path) -> tuple[str, str]:
    with db.connect(Layout(data).state_db, read_only=True) as con:  # db.connect: opens contacts
        row = con.execute(
            """
            SELECT r.msisdn, contact_open(r.address) FROM reminders r JOIN receipt_rows rr USING (reminder_id)
            WHERE r.channel = 'email' ORDER BY r.msisdn LIMIT 1
            """
        ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_show_is_a_masked_timeline(two_nights: Path) -> None:
    number, address = _number_with_a_receipt(two_nights)
    result = CliRunner().invoke(app, ["show", number[3:], "--data", str(two_nights)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(" ") and mask(number) in result.stdout.splitlines()[0]
    assert number[3:] not in result.output and address not in result.output
    events = [line.split("│")[3].strip() for line in result.stdout.splitlines() if line.startswith("│ 20")]
    assert "tenure starts" in events and "reminder 1 email" in events and "receipt email" in events
    dates = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│ 20")]
    assert dates == sorted(dates)


def test_show_json_is_the_whole_record(two_nights: Path) -> None:
    number, address = _number_with_a_receipt(two_nights)
    result = CliRunner().invoke(app, ["show", number, "--data", str(two_nights), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["msisdn"] == number and record["reminders"][0]["receipts"]
    assert address in {r["address"] for r in record["reminders"]}


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_show_of_an_unknown_number_exits_1(two_nights: Path, as_json: list[str]) -> None:
    unknown = "+8613900000000"
    result = CliRunner().invoke(app, ["show", unknown, "--data", str(two_nights), *as_json])
    assert result.exit_code == 1
    assert f"{mask(unknown)} is not on record" in result.output
    assert result.stdout == "" and unknown[3:] not in result.output


def test_status_names_a_night_at_work(two_nights: Path) -> None:
    """While another process holds the night lock, `status` says a run is at work and names it,
    instead of calling a half-done night stopped (deterministic: the holder waits for us)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import datetime as dt, sys; from pipelines.db import night_lock\n"
            f"with night_lock(__import__('pathlib').Path({str(two_nights)!r}), [dt.date(2026, 9, 3)]):\n"
            "    print('held', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["status", "--date", str(NIGHTS[1]), "--data", str(two_nights)])
        assert f"a nightly run is at work: pid {holder.pid}, recycle run of" in result.stderr
    finally:
        holder.communicate("\n", timeout=30)
    after = CliRunner().invoke(app, ["status", "--date", str(NIGHTS[1]), "--data", str(two_nights)])
    assert "at work" not in after.stderr
