"""A night refused by its preconditions writes nothing (pipelines/nightly/preflight.py): a date
not yet ended in the carrier's zone, a gap, a night before one that already ran, a missing
drop. Each refusal runs the real ``recycle run`` and hashes every file under the data
directory before and after; ``--empty-night`` runs an empty night and records the waiver."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.dev.synth import generate
from pipelines.errors import NightNotReadyError, NightRefusedError
from pipelines.layout import Layout
from pipelines.nightly import preflight
from pipelines.nightly.status import day_status
from pipelines.nightly.steps import STEPS, RunContext, run_day, run_step

START = dt.date(2026, 9, 1)
CTX = RunContext(simulate_gateways=True, alerts_mode="record")


def _day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Drops for five nights, the first two run."""
    data = tmp_path_factory.mktemp("preflight") / "data"
    generate(data, START, 5, 5, 1, 0.0, freeze_days=1, suspend_days=2)
    for n in range(2):
        run_day(Settings(data_dir=data), _day(n), CTX)
    return data


@pytest.fixture
def data(two_nights: Path, tmp_path: Path) -> Path:
    """A copy of the two nights' data directory for a test to run more nights in."""
    copy = tmp_path / "data"
    shutil.copytree(two_nights, copy)
    return copy


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under ``root``: mode and content hash."""
    return {
        str(p.relative_to(root)): (
            p.lstat().st_mode,
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
        )
        for p in sorted(root.rglob("*"))
    }


def _recycle_run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipelines.cli.app import main; main()",
            "run",
            "--data",
            str(data),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
        check=False,
    )


def _refused(data: Path, *args: str) -> str:
    """Run ``recycle run`` expecting a refusal: rc 2, one line, no traceback, nothing written."""
    before = _tree(data)
    proc = _recycle_run(data, *args)
    assert _tree(data) == before
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and proc.stdout == "", proc.stderr
    return lines[0]


def test_a_future_date_is_refused_and_writes_nothing(data: Path) -> None:
    tomorrow = Settings().carrier_day(dt.datetime.now(dt.UTC)) + dt.timedelta(days=1)
    shutil.copytree(data / "inbox" / str(_day(2)), data / "inbox" / str(tomorrow))
    line = _refused(data, "--date", str(tomorrow), "--simulate-gateways")
    assert line.startswith(f"error: night {tomorrow} refused: {tomorrow} is in the future")
    assert "fix --date" in line


def test_today_is_not_ready_before_it_ends(data: Path) -> None:
    today = Settings().carrier_day(dt.datetime.now(dt.UTC))
    line = _refused(data, "--date", str(today), "--empty-night")
    assert f"{today} has not ended in Asia/Shanghai" in line and f"recycle run --date {today}" in line


def test_a_date_after_a_gap_is_refused(data: Path) -> None:
    line = _refused(data, "--date", str(_day(3)), "--simulate-gateways")
    assert f"the nights {_day(2)} .. {_day(2)} have not run" in line
    assert f"recycle run --from {_day(2)} --to {_day(3)}" in line


def test_an_earlier_date_than_a_night_that_ran_is_refused(data: Path) -> None:
    earlier = START - dt.timedelta(days=1)
    shutil.copytree(data / "inbox" / str(START), data / "inbox" / str(earlier))
    line = _refused(data, "--date", str(earlier))
    assert f"the later night {_day(1)} already ran" in line and f"next night to run is {_day(2)}" in line


def test_a_night_after_an_incomplete_one_is_refused(data: Path) -> None:
    settings = Settings(data_dir=data)
    for step in STEPS[:3]:  # as an Airflow run stopped at its fourth task leaves it
        run_step(settings, _day(2), step.name, CTX)
    line = _refused(data, "--date", str(_day(3)))
    assert f"previous night {_day(2)} is incomplete" in line and f"recycle run --date {_day(2)}" in line


def test_a_missing_drop_is_refused_then_waived_and_recorded(data: Path) -> None:
    for kind in ("lifecycle", "reissue"):
        for path in (data / "inbox" / str(_day(2))).glob(f"{kind}_*"):
            path.unlink()
    line = _refused(data, "--date", str(_day(2)))
    assert "no lifecycle_* and reissue_* drop in" in line
    assert f"recycle run --date {_day(2)} --empty-night" in line
    proc = _recycle_run(data, "--date", str(_day(2)), "--empty-night", "--simulate-gateways")
    assert proc.returncode == 0, proc.stderr
    status = day_status(Settings(data_dir=data), _day(2))
    assert status["outcome"] == "complete"
    assert status["preflight"]["empty_night"] is True
    assert status["preflight"]["waived_drops"] == ["lifecycle", "reissue"]


def test_a_backfill_ending_in_the_future_is_refused_before_its_first_night(data: Path) -> None:
    today = Settings().carrier_day(dt.datetime.now(dt.UTC))
    line = _refused(data, "--from", str(_day(2)), "--to", str(today + dt.timedelta(days=1)), "--empty-night")
    assert line.startswith(f"error: night {today} refused: {today} has not ended")


def test_run_day_refuses_like_the_cli(data: Path) -> None:
    before = _tree(data)
    with pytest.raises(NightRefusedError, match="have not run"):
        run_day(Settings(data_dir=data), _day(4), CTX)
    assert _tree(data) == before


def test_a_complete_night_replays_after_later_nights(data: Path) -> None:
    settings = Settings(data_dir=data)
    record = (Layout(data).run_dir(START) / preflight.RECORD_NAME).read_bytes()
    run_day(settings, START, CTX)
    assert day_status(settings, START)["outcome"] == "complete"
    assert (Layout(data).run_dir(START) / preflight.RECORD_NAME).read_bytes() == record


# ---------------------------------------------------------------- the rules as functions


def _empty(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def test_a_day_may_run_once_it_has_ended_in_the_carriers_zone(tmp_path: Path) -> None:
    settings = _empty(tmp_path)  # Asia/Shanghai: UTC+8
    day = dt.date(2026, 9, 1)
    just_before = dt.datetime(2026, 9, 1, 15, 59, tzinfo=dt.UTC)  # 23:59 in Shanghai
    just_after = dt.datetime(2026, 9, 1, 16, 0, tzinfo=dt.UTC)  # midnight in Shanghai
    with pytest.raises(NightNotReadyError, match="has not ended"):
        preflight.check_night(settings, day, now=just_before, empty_night=True)
    check = preflight.check_night(settings, day, now=just_after, empty_night=True)
    assert check.first_night and check.waived_drops == ("lifecycle", "reissue") and not check.replay
    with pytest.raises(NightRefusedError, match="is in the future") as refused:
        preflight.check_night(settings, day + dt.timedelta(days=1), now=just_before, empty_night=True)
    assert not isinstance(refused.value, NightNotReadyError)  # waiting cannot fix a typo


def test_the_sensor_waits_for_drops_and_fails_at_once_on_a_gap(data: Path) -> None:
    settings = Settings(data_dir=data)
    now = dt.datetime.now(dt.UTC)
    assert preflight.waiting_for(settings, _day(2), now=now) is None
    for path in (data / "inbox" / str(_day(2))).glob("reissue_*"):
        path.unlink()
    reason = preflight.waiting_for(settings, _day(2), now=now)
    assert reason is not None and "reissue_*" in reason and "lifecycle_*" not in reason
    assert preflight.waiting_for(settings, _day(2), now=now, empty_night=True) is None
    with pytest.raises(NightRefusedError, match="have not run"):
        preflight.waiting_for(settings, _day(4), now=now)


def test_an_upload_in_flight_or_a_symlink_is_not_a_drop(tmp_path: Path) -> None:
    settings = _empty(tmp_path)
    inbox = Layout(tmp_path).inbox(START)
    inbox.mkdir(parents=True)
    (inbox / ".lifecycle_x.csv").write_text("msisdn\n")
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("msisdn\n")
    (inbox / "reissue_x.csv").symlink_to(outside)
    assert preflight.missing_drops(settings, START) == ("lifecycle", "reissue")
    (inbox / "lifecycle_x.csv").write_text("msisdn\n")
    assert preflight.missing_drops(settings, START) == ("reissue",)


def test_the_record_says_what_was_waived(tmp_path: Path) -> None:
    settings = _empty(tmp_path)
    check = preflight.NightCheck(START, replay=False, first_night=True, waived_drops=("reissue",))
    preflight.record_check(settings, check)
    record = json.loads((Layout(tmp_path).run_dir(START) / preflight.RECORD_NAME).read_text())
    assert record == {
        "date": str(START),
        "empty_night": True,
        "event": "nightly_preflight",
        "first_night": True,
        "replay": False,
        "waived_drops": ["reissue"],
    }
