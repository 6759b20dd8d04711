"""Ninety nights in-process (`recycle run --from --to` semantics) with the production-shaped
policy (a 60-day freeze, reminders on day 0, day 30 and 14 days before the freeze ends):
no number is released with fewer than two effective reminders on distinct days unless a
compliance exception is recorded, the operator's figures add up, and an auditor can check
the same from the public ledger alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.config import load_settings
from pipelines.dev.synth import generate
from pipelines.layout import Layout
from pipelines.ledger import audit_log, verify_log
from pipelines.nightly.status import day_status
from pipelines.nightly.steps import RunContext, run_day

START = dt.date(2026, 3, 1)
DAYS = 90
CONFIG = """\
data_dir = "{data}"
[policy.default]
freeze_days = 60
suspend_days = 10
reminder_offsets = [0, 30, -14]
min_effective_reminders = 2
max_hold_days = 7
"""


@pytest.fixture(scope="module")
def ninety_nights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("ninety")
    generate(data, START, DAYS, 12, seed=5, defect_rate=0.03, freeze_days=60, suspend_days=10)
    (data / "recycle.toml").write_text(CONFIG.format(data=data))
    settings = load_settings(data / "recycle.toml", env={})
    ctx = RunContext(simulate_gateways=True, alerts_mode="record")
    for i in range(DAYS):
        run_day(settings, START + dt.timedelta(days=i), ctx)
    return {"data": data, "settings": settings}


def _con(data: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(Layout(data).state_db), read_only=True)


def test_no_release_without_two_effective_reminders_unless_excepted(ninety_nights: dict[str, Any]) -> None:
    con = _con(ninety_nights["data"])
    try:
        rows = con.execute(
            """
            SELECT r.msisdn, r.exception, r.effective_reminders,
                   count(DISTINCT m.effective_on) FILTER (
                       WHERE m.status IN ('delivered', 'acknowledged') AND m.effective_on <= r.released_on
                   ) AS distinct_days
            FROM releases r
            -- Urgent notices go out after the gate decided (the night of the release): a receipt
            -- for one can fall on the release day, but it is no reminder the gate counted.
            LEFT JOIN reminders m ON m.tenure_id = r.tenure_id AND m.disconnected_on = r.disconnected_on
                AND m.slot NOT LIKE 'urgent:%'
            GROUP BY ALL
            """
        ).fetchall()
    finally:
        con.close()
    assert rows, "ninety nights with a 60-day freeze must release numbers"
    for _msisdn, exception, recorded, distinct_days in rows:
        assert recorded == distinct_days
        if not exception:
            assert distinct_days >= 2
        else:
            assert distinct_days < 2


def test_the_operator_figures_add_up(ninety_nights: dict[str, Any]) -> None:
    data = ninety_nights["data"]
    last = START + dt.timedelta(days=DAYS - 1)
    status = day_status(ninety_nights["settings"], last)
    life = status["lifecycle"]
    assert status["outcome"].startswith("complete")
    assert sum(life["numbers"]["by_state"].values()) == life["numbers"]["total"]
    con = _con(data)
    try:
        released, excepted = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE exception) FROM releases"
        ).fetchone() or (0, 0)
        reissued, violations = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE violation) FROM reissues"
        ).fetchone() or (0, 0)
        held = con.execute("SELECT count(*) FROM number_state WHERE state = 'held'").fetchone()
    finally:
        con.close()
    # "released" counts the clean releases; total = clean + with exception
    assert life["releases"]["all_time"] == {
        "total": released,
        "released": released - excepted,
        "with_exception": excepted,
    }
    assert (life["reissues"]["all_time"]["total"], life["reissues"]["all_time"]["violations"]) == (
        reissued,
        violations,
    )
    assert held is not None and life["held"]["now"] == held[0]
    assert released > 0 and reissued > 0


def test_the_public_ledger_tells_the_same_story(ninety_nights: dict[str, Any]) -> None:
    ledger = Layout(ninety_nights["data"]).ledger_dir
    vkey = (ledger / "vkey").read_text().strip()
    log = verify_log(ledger, vkey)
    audit = audit_log(ledger, vkey, 2)
    assert audit.passed, audit.under_reminded[:3]
    con = _con(ninety_nights["data"])
    try:
        released, excepted = con.execute(
            "SELECT count(*) FILTER (WHERE NOT exception), count(*) FILTER (WHERE exception) FROM releases"
        ).fetchone() or (0, 0)
        violations = con.execute("SELECT count(*) FILTER (WHERE violation) FROM reissues").fetchone()
    finally:
        con.close()
    assert audit.released == released
    assert len(audit.exceptions) == excepted
    assert violations is not None and len(audit.violations) == violations[0]
    assert log.entries == audit.checkpoint.size
