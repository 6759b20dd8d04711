"""`recycle run` when stderr is not a terminal (logs, CI, these tests): one plain line per
night — date, outcome as `recycle status` says it, seconds — and no progress bar."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import pipelines.nightly.steps as steps
from pipelines.cli import app
from pipelines.dev.synth import generate
from pipelines.errors import TerminalError

FIRST = dt.date(2026, 9, 1)


def test_a_backfill_prints_one_line_per_night(tmp_path: Path) -> None:
    generate(tmp_path, FIRST, 2, 10, 3, 0.0, freeze_days=1, suspend_days=2)
    result = CliRunner().invoke(
        app,
        ["run", "--from", "2026-09-01", "--to", "2026-09-02", "--data", str(tmp_path), "--simulate-gateways"],
    )
    assert result.exit_code == 0, result.output
    nights = [line for line in result.output.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(nights) == 2
    for night, line in zip(("2026-09-01", "2026-09-02"), nights, strict=True):
        assert re.fullmatch(rf"{night} complete \d+\.\ds", line), line
    assert "━" not in result.output and "\r" not in result.output


def test_a_night_that_fails_names_its_step_then_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_run_day(
        settings: Any, day: dt.date, ctx: Any, on_step: Callable[[str], None] | None = None
    ) -> None:
        assert on_step is not None
        on_step("ingest")
        on_step("receipts")
        raise TerminalError("receipts_2026-09-01.csv: bad contract")

    monkeypatch.setattr(steps, "run_day", failing_run_day)
    result = CliRunner().invoke(
        app, ["run", "--date", "2026-09-01", "--data", str(tmp_path), "--empty-night"]
    )
    assert re.search(r"^2026-09-01 failed at step receipts \d+\.\ds$", result.output, re.M), result.output
    assert isinstance(result.exception, TerminalError)
