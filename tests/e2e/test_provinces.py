"""Issue 17, equivalence: the same generated nights run (a) embedded, one state for all, and (b)
split by province (one state each, the sequencer appending the ledger and publishing one feed)
give the same feeds, the same ledger entries and the same answers
(``pipelines.dev.compare``, which says what "the same" cannot include and why)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import Policy, Settings, load_settings
from pipelines.dev.compare import compare_outcomes
from pipelines.dev.synth import generate
from pipelines.errors import ConfigError
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, run_day, run_step
from pipelines.provinces.split import split_drops

START = dt.date(2026, 9, 1)
NIGHTS = 16
PROVINCES = ("BJ", "GD", "SH")
# The demo's policy: time compressed, so 16 nights see cancels, reminders, receipts, holds,
# releases, reissues (some early: violations) and restores.
POLICY = Policy(freeze_days=10, suspend_days=5, reminder_offsets=(0, 4, -3), max_hold_days=4)


def _settings(data: Path, provinces: tuple[str, ...] = ()) -> Settings:
    base = load_settings(env={}, data_dir=data, provinces=list(provinces))
    return dataclasses.replace(base, policies={"default": POLICY})


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("provinces")
    gen = root / "generated"
    generate(gen, START, NIGHTS, 60, 11, 0.02, regions=PROVINCES, freeze_days=10, suspend_days=5)
    embedded, split = root / "embedded", root / "split"
    _run_both(gen, NIGHTS, embedded, split, PROVINCES)
    return embedded, split


def _run_both(gen: Path, nights: int, embedded: Path, split: Path, provinces: tuple[str, ...]) -> None:
    """The generated nights of ``gen`` run embedded and split into ``provinces``."""
    ctx = RunContext(simulate_gateways=True, alerts_mode="record")
    one, many = _settings(embedded), _settings(split, provinces)
    for n in range(nights):
        day = START + dt.timedelta(days=n)
        shutil.copytree(Layout(gen).inbox(day), Layout(embedded).inbox(day), dirs_exist_ok=True)
        run_day(one, day, ctx)
        split_drops(many, day, source=Layout(gen).inbox(day))
        run_day(many, day, ctx)


@pytest.mark.slow
def test_split_by_province_gives_the_embedded_outcome(both: tuple[Path, Path]) -> None:
    embedded, split = both
    assert compare_outcomes(embedded, split) == []
    # Each province kept its own state; the nation has none of its own.
    assert not Layout(split).state_db.exists()
    for code in PROVINCES:
        assert Layout(split / "provinces" / code).state_db.exists()


@pytest.mark.slow
def test_the_comparison_sees_a_difference(both: tuple[Path, Path], tmp_path: Path) -> None:
    """The comparison is not blind: one changed published byte or one more ledger entry shows."""
    embedded, split = both
    copy = tmp_path / "copy"
    shutil.copytree(split, copy, ignore=shutil.ignore_patterns("*.lock*", "*.holder"))
    csv = sorted((Layout(copy).feeds_dir / "daily").glob("*/recycled.csv"))[-1]
    csv.write_bytes(csv.read_bytes() + b"\n")
    diffs = compare_outcomes(embedded, copy)
    assert any("recycled.csv differs" in d for d in diffs), diffs


@pytest.mark.slow
def test_a_split_night_replays_idempotently(both: tuple[Path, Path]) -> None:
    """Rerunning the last night appends nothing and changes no published byte."""
    _, split = both
    settings = _settings(split, PROVINCES)
    last = START + dt.timedelta(days=NIGHTS - 1)
    before = {p: p.read_bytes() for p in Layout(split).feeds_dir.rglob("*") if p.is_file()}
    tiles = sorted(str(p) for p in Layout(split).ledger_dir.rglob("*") if p.is_file())
    reports = run_day(settings, last, RunContext(simulate_gateways=True, alerts_mode="record"))
    assert reports["ledger"]["ledger"]["appended"] == 0
    assert {p: p.read_bytes() for p in Layout(split).feeds_dir.rglob("*") if p.is_file()} == before
    assert sorted(str(p) for p in Layout(split).ledger_dir.rglob("*") if p.is_file()) == tiles


def test_a_province_step_needs_its_province(tmp_path: Path) -> None:
    settings = _settings(tmp_path, PROVINCES)
    with pytest.raises(ConfigError, match="runs once per province"):
        run_step(settings, START, "ingest")
    with pytest.raises(ConfigError, match="not run per province"):
        run_step(settings, START, "ledger", province="GD")
    with pytest.raises(ConfigError, match="not configured"):
        run_step(settings, START, "ingest", province="XJ")


@pytest.mark.slow
def test_operator_commands_on_a_split_data_dir(
    both: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nation's status names its steps; RECYCLE_PROVINCE points a command at one province."""
    _, split = both
    last = str(START + dt.timedelta(days=NIGHTS - 1))
    runner = CliRunner()
    monkeypatch.setenv("RECYCLE_PROVINCES", ",".join(PROVINCES))
    nation = json.loads(runner.invoke(app, ["status", "--date", last, "--data", str(split), "--json"]).output)
    assert nation["steps_done"] == ["ledger", "feeds", "snapshot", "push"]
    monkeypatch.setenv("RECYCLE_PROVINCE", "GD")
    got = runner.invoke(app, ["status", "--date", last, "--data", str(split), "--json"])
    province = json.loads(got.output)
    assert "ingest" in province["steps_done"] and "ledger" not in province["steps_done"]
    assert province["files"], "GD's own drops are listed"
    monkeypatch.delenv("RECYCLE_PROVINCE")
    listed = json.loads(runner.invoke(app, ["provinces", "list", "--data", str(split), "--json"]).output)
    assert {r["province"]: r["last_night"] for r in listed} == dict.fromkeys(PROVINCES, last)


@pytest.mark.slow
def test_a_single_province_behaves_as_the_embedded_default(tmp_path: Path) -> None:
    gen, embedded, single = tmp_path / "generated", tmp_path / "embedded", tmp_path / "single"
    generate(gen, START, 6, 30, 3, 0.02, regions=("GD",), freeze_days=10, suspend_days=5)
    _run_both(gen, 6, embedded, single, ("GD",))
    assert compare_outcomes(embedded, single) == []


def _a_number_in_the_log(data: Path, province: str) -> str:
    import duckdb

    con = duckdb.connect(str(Layout(data / "provinces" / province).state_db), read_only=True)
    try:
        rows = con.execute(
            "SELECT msisdn FROM ledger_events WHERE appended GROUP BY msisdn "
            "HAVING count(*) FILTER (WHERE type = 'reminder_sent') > 0 ORDER BY count(*) DESC, msisdn LIMIT 1"
        ).fetchall()
    finally:
        con.close()
    assert rows, f"no number of {province} has reminders in the log"
    return str(rows[0][0])


@pytest.mark.slow
def test_a_province_command_reads_the_nations_log(
    both: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RECYCLE_PROVINCE=GD: evidence and statement join GD's state with the one log the sequencer
    appends (the nation's), not a log of their own under the province's directory; the bundle
    holds the entries the embedded run's bundle holds and verifies."""
    embedded, split = both
    number = _a_number_in_the_log(split, "GD")
    copy = tmp_path / "split"  # the statement appends: a copy, the fixture stays as the night left it
    shutil.copytree(split, copy, ignore=shutil.ignore_patterns("*.lock*", "*.holder"))
    runner = CliRunner()
    monkeypatch.setenv("RECYCLE_PROVINCES", ",".join(PROVINCES))

    def bundle(data: Path, out: Path) -> list[tuple[str, object]]:
        got = runner.invoke(app, ["evidence", "--number", number, "--out", str(out), "--data", str(data)])
        assert got.exit_code == 0, got.output
        assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
        doc = json.loads((out / "index.json").read_text())
        return [(e["type"], e["value"]) for e in doc["entries"]]

    want = bundle(embedded, tmp_path / "embedded-evidence")
    monkeypatch.setenv("RECYCLE_PROVINCE", "GD")
    assert bundle(copy, tmp_path / "gd-evidence") == want and any(t == "reminder_sent" for t, _ in want)
    statement = tmp_path / "statement.txt"
    got = runner.invoke(app, ["statement", "--number", number, "--out", str(statement), "--data", str(copy)])
    assert got.exit_code == 0, got.output
    vkey = (Layout(copy).ledger_dir / "vkey").read_text().strip()
    assert runner.invoke(app, ["verify", str(statement), "--vkey", vkey]).exit_code == 0
    assert not (copy / "provinces" / "GD" / "ledger").exists()
    assert not (copy / "provinces" / "GD" / "private").exists()
    after = bundle(copy, tmp_path / "after")  # the statement is in the nation's log, under GD's number
    assert after[: len(want)] == want and [t for t, _ in after[len(want) :]] == ["tenure_statement"]
