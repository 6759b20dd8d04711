"""Nightly compliance alerts: a violating reissue, and a release with an exception, fail the
night until ops acknowledge them, and the exception rate over a trailing window (overall, per
province, per ISO week) fails it above the threshold (not at it), naming where it crossed.

Histories are rows inserted into ``releases`` and ``reissues`` (the lifecycle's tables), so
each figure below is counted by hand from the rows of the test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from pipelines import db
from pipelines.cli import app
from pipelines.compliance.alerts import (
    acknowledge,
    check_compliance,
    evaluate_compliance,
    list_acks,
)
from pipelines.config import Settings
from pipelines.errors import ComplianceViolationError, TerminalError
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, step_alerts
from pipelines.numbers import mask

D = dt.date(2026, 3, 31)
AT = dt.datetime(2026, 4, 1, 8, 30, tzinfo=dt.UTC)
SETTINGS = Settings()  # exception_rate_threshold = 0.05


def num(i: int) -> str:
    return f"+86138{i:08d}"


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = db.connect(tmp_path / "state.duckdb")
    yield c
    c.close()


def release(
    con: duckdb.DuckDBPyConnection, i: int, on: dt.date, exception: bool = False, region: str = "GD"
) -> None:
    con.execute(
        "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [num(i), f"T{i}", on - dt.timedelta(days=90), on, 0 if exception else 2, exception, on, region],
    )


def reissue(
    con: duckdb.DuckDBPyConnection,
    i: int,
    on: dt.date,
    violation: bool = True,
    recorded: dt.date | None = None,
    region: str = "BJ",
) -> None:
    con.execute(
        "INSERT INTO reissues VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            num(i),
            f"T{i}",
            f"N{i}",
            on,
            on - dt.timedelta(days=20),
            None,
            violation,
            recorded or on,
            region,
            "f" * 64,
            i,
        ],
    )


def test_a_clean_night_passes(con: duckdb.DuckDBPyConnection) -> None:
    for i in range(10):
        release(con, i, D - dt.timedelta(days=i))
    reissue(con, 50, D, violation=False)
    report = check_compliance(con, SETTINGS, D)
    assert (report.released, report.with_exception, report.violations) == (10, 0, 0)
    assert report.passed and report.exception_rate == 0.0


def test_a_violating_reissue_raises_with_masked_numbers_and_what_to_do(
    con: duckdb.DuckDBPyConnection,
) -> None:
    reissue(con, 7, D)
    reissue(con, 8, D, region="GD")
    with pytest.raises(ComplianceViolationError) as err:
        check_compliance(con, SETTINGS, D)
    text = err.value.diagnostics()
    assert "2 reissue(s) broke the release gate" in text
    assert f"{mask(num(7))} (BJ, {D})" in text and f"{mask(num(8))} (GD, {D})" in text
    assert num(7) not in text and num(7)[3:] not in text  # neither E.164 nor national digits
    assert "recycle alerts ack --number" in text
    assert isinstance(err.value, TerminalError)  # the DAG fails the task without retry


def test_an_unacknowledged_violation_keeps_failing_later_nights(con: duckdb.DuckDBPyConnection) -> None:
    reissue(con, 7, D - dt.timedelta(days=40))  # long before any rate window
    for later in (D, D + dt.timedelta(days=1)):
        with pytest.raises(ComplianceViolationError):
            check_compliance(con, SETTINGS, later)
    # ... but not a night before it was recorded (a backfill of an earlier day).
    assert check_compliance(con, SETTINGS, D - dt.timedelta(days=41)).passed


def test_an_acknowledged_violation_passes_and_is_kept_with_who_and_why(
    con: duckdb.DuckDBPyConnection,
) -> None:
    reissue(con, 7, D - dt.timedelta(days=2), recorded=D)  # a late drop: recorded on D
    reissue(con, 8, D)
    acks = acknowledge(con, num(7), D - dt.timedelta(days=2), " sales error; owner called ", "ops.li", AT)
    assert [(a.kind, a.reason, a.acked_by) for a in acks] == [
        ("reissue_violation", "sales error; owner called", "ops.li")
    ]
    with pytest.raises(ComplianceViolationError) as err:  # number 8 is still open
        check_compliance(con, SETTINGS, D)
    assert mask(num(8)) in str(err.value) and mask(num(7)) not in str(err.value)
    acknowledge(con, num(8), D, "test line", "ops.wang", AT)
    report = check_compliance(con, SETTINGS, D)
    assert (report.violations, report.acknowledged_violations, report.passed) == (2, 2, True)
    stored = list_acks(con)
    assert [(a.msisdn, a.on_date, a.acked_at) for a in stored] == [
        (num(7), D - dt.timedelta(days=2), AT.replace(tzinfo=None)),
        (num(8), D, AT.replace(tzinfo=None)),
    ]
    assert [a.msisdn for a in list_acks(con, num(8))] == [num(8)]


def test_an_ack_must_name_a_recorded_item_and_a_reason(con: duckdb.DuckDBPyConnection) -> None:
    reissue(con, 7, D)
    with pytest.raises(TerminalError, match="nothing to acknowledge"):
        acknowledge(con, num(7), D - dt.timedelta(days=1), "wrong date", "ops", AT)
    with pytest.raises(TerminalError, match="nothing to acknowledge"):
        acknowledge(con, num(7), D, "wrong kind", "ops", AT, kind="release_exception")
    with pytest.raises(TerminalError, match="reason"):
        acknowledge(con, num(7), D, "   ", "ops", AT)
    assert list_acks(con) == []
    with pytest.raises(ComplianceViolationError):
        check_compliance(con, SETTINGS, D)


def test_exception_rate_at_the_threshold_passes_above_it_fails(con: duckdb.DuckDBPyConnection) -> None:
    # 20 releases in the 30-day window ending on D, one with an exception: exactly 5%.
    for i in range(20):
        release(con, i, D - dt.timedelta(days=i), exception=i == 3)
    # Outside the window (30 days back is D-30): neither counted nor able to tip the rate.
    release(con, 90, D - dt.timedelta(days=30), exception=True)
    release(con, 91, D + dt.timedelta(days=1), exception=True)
    # Every unacknowledged exception fails the night by itself; the overall rate is read here.
    report = evaluate_compliance(con, SETTINGS, D)
    assert (report.released, report.with_exception, report.window_start) == (20, 1, D - dt.timedelta(days=29))
    assert report.exception_rate == 0.05 and not report.rate_exceeded

    release(con, 20, D - dt.timedelta(days=29), exception=True)  # 2 of 21 = 9.5%
    report = evaluate_compliance(con, SETTINGS, D)
    assert report.rate_exceeded
    text = report.message()
    assert "release exception rate 9.52% (2 unacknowledged exception(s) of 21 releases" in text
    assert "exceeds the threshold 5.00%" in text and mask(num(3)) in text
    assert "reissue" not in text.split("\n")[1]  # no violation

    # A threshold of 10%: 2/21 is below; 0.1 itself is compared exactly (3 of 30 is not above).
    assert not evaluate_compliance(con, replace(SETTINGS, exception_rate_threshold=0.1), D).rate_exceeded
    for i in range(21, 30):
        release(con, i, D - dt.timedelta(days=5), exception=i == 21)
    report = evaluate_compliance(con, replace(SETTINGS, exception_rate_threshold=0.1), D)
    assert (report.with_exception, report.released, report.rate_exceeded) == (3, 30, False)


def test_acknowledged_exceptions_do_not_count_towards_the_rate(con: duckdb.DuckDBPyConnection) -> None:
    for i in range(10):
        release(con, i, D, exception=i < 2)  # 20%
    with pytest.raises(ComplianceViolationError):
        check_compliance(con, SETTINGS, D)
    acknowledge(con, num(0), D, "no contact on file (migrated account)", "ops", AT)
    with pytest.raises(ComplianceViolationError):  # 1 of 10 = 10% still
        check_compliance(con, SETTINGS, D)
    acknowledge(con, num(1), D, "no contact on file (migrated account)", "ops", AT, kind="release_exception")
    report = check_compliance(con, SETTINGS, D)
    assert (report.with_exception, report.acknowledged_exceptions, report.counted_exceptions) == (2, 2, 0)


def test_one_release_with_an_exception_fails_every_night_until_acknowledged(
    con: duckdb.DuckDBPyConnection,
) -> None:
    for i in range(40):
        # 1 of 40, all in one week (2026-W14): under the rate everywhere.
        release(con, i, D - dt.timedelta(days=i % 2), exception=i == 5)
    report = evaluate_compliance(con, SETTINGS, D)
    assert not report.rate_exceeded and report.rate_breaches == ()
    assert (report.exceptions_on_record, report.unacknowledged_exceptions) == (1, 1)
    for night in (D, D + dt.timedelta(days=45)):  # later nights too, after the rate's window
        with pytest.raises(ComplianceViolationError) as err:
            check_compliance(con, SETTINGS, night)
        text = str(err.value)
        assert "1 number(s) were released with a compliance exception and are not acknowledged" in text
        assert f"{mask(num(5))} (GD, {D - dt.timedelta(days=1)})" in text and num(5) not in text
        assert "urgent notice" in text and "recycle alerts ack" in text
    acknowledge(con, num(5), D - dt.timedelta(days=1), "owner reached by phone", "ops", AT)
    assert check_compliance(con, SETTINGS, D).passed
    assert check_compliance(con, SETTINGS, D + dt.timedelta(days=45)).passed


def test_the_rate_per_province_and_week_names_where_it_crossed(con: duckdb.DuckDBPyConnection) -> None:
    # GD: 40 clean releases in week 2026-W14 (D is Tuesday 31 March); BJ: 1 exception of 2,
    # also in W14. Overall 1 of 42 (2.4%) and W14 1 of 42 are under 5%; BJ is not.
    for i in range(40):
        release(con, i, D - dt.timedelta(days=i % 2))
    release(con, 50, D, exception=True, region="BJ")
    release(con, 51, D, region="BJ")
    report = evaluate_compliance(con, SETTINGS, D)
    assert not report.rate_exceeded
    assert report.rate_breaches == (
        "province BJ: 1 of 2 (50.00%)",
        "province BJ in week 2026-W14: 1 of 2 (50.00%)",
    )
    assert "exceeds the threshold 5.00% in: province BJ: 1 of 2" in report.message()

    # One week: BJ's exception acknowledged (no longer counted anywhere), GD's exceptions of
    # week 2026-W13 (2 of 10) cross, overall (2 of 52, 3.8%) does not.
    acknowledge(con, num(50), D, "owner reached at the shop", "ops", AT)
    for i in range(60, 70):
        release(con, i, D - dt.timedelta(days=7), exception=i < 62)
    report = evaluate_compliance(con, SETTINGS, D)
    assert not report.rate_exceeded
    assert "week 2026-W13: 2 of 10 (20.00%)" in report.rate_breaches
    assert "province GD in week 2026-W13: 2 of 10 (20.00%)" in report.rate_breaches
    assert not any(
        b.startswith(("province GD:", "province BJ", "week 2026-W14")) for b in report.rate_breaches
    )
    assert report.as_dict()["rate_breaches"] == list(report.rate_breaches)


def test_the_window_is_configurable(con: duckdb.DuckDBPyConnection) -> None:
    release(con, 1, D - dt.timedelta(days=1), exception=True)
    for i in range(2, 6):
        release(con, i, D)
    assert evaluate_compliance(con, SETTINGS, D).rate_exceeded  # 1 of 5 in 30 days
    report = evaluate_compliance(con, SETTINGS, D, window_days=1)  # today only: 0 of 4
    assert (report.released, report.with_exception, report.rate_exceeded) == (4, 0, False)
    with pytest.raises(TerminalError):
        evaluate_compliance(con, SETTINGS, D, window_days=0)


def test_no_release_in_the_window_is_no_rate(con: duckdb.DuckDBPyConnection) -> None:
    report = check_compliance(con, SETTINGS, D)
    assert (report.released, report.exception_rate, report.passed) == (0, 0.0, True)


def test_nightly_step_reads_the_state_file_and_raises(tmp_path: Path) -> None:
    settings = replace(SETTINGS, data_dir=tmp_path)
    with db.open_state(Layout(tmp_path).state_db) as c:
        release(c, 1, D)
    out = step_alerts(settings, D, RunContext())
    assert out["alerts"]["passed"] is True and out["alerts"]["released"] == 1
    with db.open_state(Layout(tmp_path).state_db) as c:
        reissue(c, 2, D)
    with pytest.raises(ComplianceViolationError):
        step_alerts(settings, D, RunContext())
    ctx = RunContext(exception_rate_window_days=1)
    with pytest.raises(ComplianceViolationError):
        step_alerts(settings, D + dt.timedelta(days=3), ctx)
    recorded = step_alerts(settings, D, RunContext(alerts_mode="record"))
    assert recorded["alerts"]["passed"] is False and recorded["alerts"]["violations"] == 1
    assert recorded["alerts"]["open_violations"] == [f"{mask(num(2))} (BJ, {D})"]


def test_cli_ack_then_check(tmp_path: Path) -> None:
    with db.open_state(Layout(tmp_path).state_db) as c:
        reissue(c, 7, D)
    runner = CliRunner()
    data = ["--data", str(tmp_path)]
    failed = runner.invoke(app, ["alerts", "check", "--date", D.isoformat(), *data])
    assert failed.exit_code == 1 and mask(num(7)) in failed.output
    acked = runner.invoke(
        app,
        [
            "alerts",
            "ack",
            "--number",
            num(7)[3:],
            "--date",
            D.isoformat(),
            "--reason",
            "known",
            "--by",
            "ops.li",
            *data,
        ],
    )
    assert acked.exit_code == 0, acked.output
    assert f"acknowledged reissue_violation of {mask(num(7))}" in acked.output
    assert num(7) not in acked.output
    passed = runner.invoke(app, ["alerts", "check", "--date", D.isoformat(), "--json", *data])
    assert passed.exit_code == 0 and '"passed": true' in passed.output
    listed = runner.invoke(app, ["alerts", "list", *data])
    assert "ops.li" in listed.output and mask(num(7)) in listed.output
