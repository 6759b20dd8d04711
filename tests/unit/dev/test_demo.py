"""The demo asks before deleting, shows every output line and prints commands that run."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import pytest
from rich.console import Console

from pipelines.dev import demo


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the demo prints, on a wide console."""
    buffer = io.StringIO()
    monkeypatch.setattr(demo, "console", Console(file=buffer, width=300, force_terminal=False))
    return buffer


def _earlier_demo(path: Path) -> Path:
    path.mkdir()
    (path / "recycle.toml").write_text('data_dir = "x"\n', encoding="utf-8")
    (path / "state.duckdb").write_bytes(b"state")
    return path


def test_a_missing_or_empty_directory_needs_no_question(tmp_path: Path) -> None:
    assert demo._may_empty(tmp_path / "new", fresh=False, interactive=False) is None
    (tmp_path / "empty").mkdir()
    assert demo._may_empty(tmp_path / "empty", fresh=False, interactive=False) is None


def test_an_earlier_demo_is_kept_without_fresh_when_nobody_can_answer(tmp_path: Path) -> None:
    data = _earlier_demo(tmp_path / "demo")
    refusal = demo._may_empty(data, fresh=False, interactive=False)
    assert refusal is not None and "--fresh" in refusal and str(data) in refusal
    assert demo._may_empty(data, fresh=True, interactive=False) is None


def test_the_prompt_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: io.StringIO) -> None:
    data = _earlier_demo(tmp_path / "demo")
    answers = iter(["n", "y"])
    monkeypatch.setattr(demo.console, "input", lambda prompt: next(answers))
    kept = demo._may_empty(data, fresh=False, interactive=True)
    assert kept is not None and kept.startswith(f"kept {data}") and "--fresh" in kept
    assert demo._may_empty(data, fresh=False, interactive=True) is None


def test_a_directory_that_is_not_a_demo_is_never_emptied(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine", encoding="utf-8")
    refusal = demo._may_empty(tmp_path, fresh=True, interactive=True)
    assert refusal is not None and "not a demo's data directory" in refusal


def test_main_without_fresh_refuses_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: io.StringIO
) -> None:
    data = _earlier_demo(tmp_path / "demo")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert demo.main(["--data", str(data), "--start", "2026-09-01"]) == 1
    assert (data / "state.duckdb").read_bytes() == b"state"
    assert "--fresh" in shown.getvalue()


def _fake_recycle(tmp_path: Path, script: str) -> str:
    path = tmp_path / "recycle"
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_cli_shows_every_line_and_a_command_that_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: io.StringIO
) -> None:
    script = 'echo "2026-09-28: 3 violations"\necho "2026-09-01 12:00:00 WARNING headline" >&2\necho "$@"\n'
    monkeypatch.setattr(demo, "_recycle", lambda: _fake_recycle(tmp_path, script))
    assert demo._cli("check", "+8613812345678", "--since", "2026-09-01") == 0
    out = shown.getvalue()
    assert "2026-09-28: 3 violations" in out and "2026-09-01 12:00:00 WARNING headline" in out
    assert f"$ {tmp_path / 'recycle'} check +8613812345678 --since 2026-09-01" in out


def test_cli_counts_a_failure_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: io.StringIO
) -> None:
    monkeypatch.setattr(demo, "_recycle", lambda: _fake_recycle(tmp_path, "echo AUDIT FAILED >&2\nexit 1\n"))
    assert demo._cli("audit-log") == 1
    assert "AUDIT FAILED" in shown.getvalue() and "exit status 1" in shown.getvalue()


def test_cli_passes_secrets_in_the_environment_not_the_shown_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: io.StringIO
) -> None:
    monkeypatch.setattr(
        demo, "_recycle", lambda: _fake_recycle(tmp_path, 'echo "got $RECYCLE_PLATFORM_TOKEN"\n')
    )
    assert demo._cli("pull", env={"RECYCLE_PLATFORM_TOKEN": "nrp_secret"}) == 0
    lines = shown.getvalue().splitlines()
    assert lines[0].endswith("recycle pull") and "got nrp_secret" in lines[1]
    assert "RECYCLE_PLATFORM_TOKEN" not in os.environ
