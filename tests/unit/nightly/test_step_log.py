"""Each nightly step logs one JSON line (step, date, elapsed_s, the report's top-level counts),
which the Airflow task log shows (pipelines/nightly/steps.py ``run_step``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest

from pipelines.config import Settings, load_settings
from pipelines.layout import Layout
from pipelines.nightly.steps import report_counts, run_step, step_log_line

DAY = dt.date(2026, 9, 1)
HEADER = "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={}, data_dir=tmp_path / "data")


def step_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.nightly.steps"]
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_ingest_logs_one_line_with_the_nights_counts(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Layout(settings.data_dir).inbox(DAY)
    inbox.mkdir(parents=True)
    (inbox / "lifecycle_2026-09-01.csv").write_text(
        f"{HEADER}\n"
        "13812345678,cancel,2026-08-30,GD,S1,2020-01-01,a@example.cn,13900000000,zh-CN\n"
        "13812345679,cancel,2026-13-45,GD,S2,2020-01-01,b@example.cn,13900000001,zh-CN\n"
    )
    with caplog.at_level(logging.INFO, logger="pipelines.nightly.steps"):
        run_step(settings, DAY, "ingest")
    (line,) = step_lines(caplog)
    assert line["event"] == "nightly_step" and line["step"] == "ingest" and line["date"] == "2026-09-01"
    assert isinstance(line["elapsed_s"], float) and 0 <= line["elapsed_s"] < 60
    assert line["counts"] == {"files": 1, "rows_in": 2, "accepted": 1, "quarantined": 1, "failed_files": 0}
    # The report file keeps the same totals beside the per-file figures.
    saved = json.loads((Layout(settings.data_dir).run_dir(DAY) / "steps" / "ingest.json").read_text())
    assert saved["ingest"]["quarantined"] == 1 and saved["elapsed_s"] == line["elapsed_s"]


def test_every_step_of_a_night_logs_its_line(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.nightly.steps"):
        for name in ("ingest", "receipts", "advance"):
            run_step(settings, DAY, name)
    lines = step_lines(caplog)
    assert [line["step"] for line in lines] == ["ingest", "receipts", "advance"]
    advance = lines[2]["counts"]
    assert isinstance(advance, dict) and advance["released"] == 0 and "day" not in advance


def test_counts_keep_numbers_count_lists_and_drop_the_rest() -> None:
    report = {
        "send": {"sent": 247, "failed": 0, "passed": True, "day": dt.date(2026, 11, 26), "rate": 0.5},
        "alerts": {"sent": 3, "open_violations": ["155****3792 (HE)", "199****4040 (HA)"], "reasons": {}},
        "simulated_receipts": "/data/inbox/2026-11-27/receipts.csv",
        "batches": 3,
    }
    assert report_counts(report) == {
        "sent": 247,
        "failed": 0,
        "rate": 0.5,
        "alerts.sent": 3,  # a name met twice keeps its section
        "open_violations": 2,
        "batches": 3,
    }


def test_the_line_is_one_line_of_json() -> None:
    text = step_log_line("feeds", DAY, 0.118, {"feeds": {"rows": 41, "manifest_sha256": "9a04"}})
    assert "\n" not in text
    assert json.loads(text) == {
        "event": "nightly_step",
        "step": "feeds",
        "date": "2026-09-01",
        "elapsed_s": 0.118,
        "counts": {"rows": 41},
    }
