"""A typo in ``--data`` is refused, never silently created: every command that reads a data
directory refuses a missing one and one without a state file, with one line naming the
directory and the command that creates one, rc 2, no traceback, nothing written on disk.
``recycle run`` creates one only with ``--init``; ``recycle gen`` creates its ``--out``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

DAY = "2026-09-01"
NUMBER = "13800000001"

# Every command that reads a data directory, with its other arguments ({out}: a folder it would
# write into; {file}: an existing input file).
READING: dict[str, list[str]] = {
    "status": ["status", "--date", DAY],
    "show": ["show", NUMBER],
    "evidence": ["evidence", "--number", NUMBER, "--out", "{out}"],
    "evidence-summary": ["evidence-summary", "--number", NUMBER, "--out", "{out}"],
    "audit-log": ["audit-log"],
    "erase": ["erase", "--number", NUMBER, "--yes"],
    "alerts check": ["alerts", "check", "--date", DAY],
    "alerts list": ["alerts", "list"],
    "alerts ack": ["alerts", "ack", "--number", NUMBER, "--date", DAY, "--reason", "known"],
    "report": ["report", "--from", DAY, "--to", DAY, "--out", "{out}"],
    "export-fcc": ["export-fcc", "--month", "2026-09", "--company-id", "DEMO01", "--out", "{out}"],
    "export-cn": ["export-cn", "--month", "2026-09", "--out", "{out}"],
    "serve": ["serve", "--port", "0"],
    "notifications": ["notifications", NUMBER],
    "new-owner": ["new-owner", NUMBER],
    "platform add": ["platform", "add", "bank-a"],
    "platform scopes": ["platform", "scopes", "bank-a", "--scope", "check"],
    "platform revoke": ["platform", "revoke", "bank-a"],
    "platform list": ["platform", "list"],
    "acks import": ["acks", "import", "--platform", "bank-a", "{file}"],
    "root rotate": ["root", "rotate"],
    "quarantine list": ["quarantine", "list", "--date", DAY],
    "quarantine export": ["quarantine", "export", "--date", DAY, "--out", "{out}"],
    "doctor": ["doctor"],
}


def _snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _args(template: list[str], tmp_path: Path) -> list[str]:
    fill = {"{out}": str(tmp_path / "out"), "{file}": str(tmp_path / "acks.csv")}
    return [fill.get(arg, arg) for arg in template]


@pytest.fixture
def acks_file(tmp_path: Path) -> Path:
    path = tmp_path / "acks.csv"
    path.write_text("phone_number,status,feed_date,observed_at\n")
    return path


def _one_line_refusal(output: str) -> str:
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("command", list(READING))
def test_a_missing_data_dir_is_refused_and_not_created(command: str, tmp_path: Path, acks_file: Path) -> None:
    missing = tmp_path / "typo"
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["--data", str(missing), *_args(READING[command], tmp_path)])
    assert result.exit_code == 2, result.output
    line = _one_line_refusal(result.output)
    assert line.startswith(f"error: no data directory {missing};")
    assert f"recycle gen --out {missing}" in line
    assert f"recycle run --init --date D --data {missing}" in line
    assert not missing.exists()
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("command", list(READING))
def test_a_data_dir_without_state_is_refused_and_left_empty(
    command: str, tmp_path: Path, acks_file: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    before = _snapshot(tmp_path)
    # The subcommand's own --data this time (the one before it is the other test's).
    result = CliRunner().invoke(app, [*_args(READING[command], tmp_path), "--data", str(empty)])
    assert result.exit_code == 2, result.output
    line = _one_line_refusal(result.output)
    assert line.startswith(f"error: {empty} holds no state file (state.duckdb)")
    assert f"recycle run --date D --data {empty}" in line
    assert list(empty.iterdir()) == []
    assert _snapshot(tmp_path) == before


def test_a_data_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "state.duckdb"
    file.write_bytes(b"")
    result = CliRunner().invoke(app, ["status", "--date", DAY, "--data", str(file)])
    assert result.exit_code == 2
    assert _one_line_refusal(result.output) == (
        f"error: data directory {file} is not a directory; check --data / data_dir"
    )


def test_run_refuses_a_missing_dir_without_init(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    result = CliRunner().invoke(app, ["run", "--date", DAY, "--data", str(missing)])
    assert result.exit_code == 2
    assert f"recycle run --init --date D --data {missing}" in _one_line_refusal(result.output)
    assert list(tmp_path.iterdir()) == []


def test_run_init_creates_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    # A new directory has no drops: its first night runs empty on purpose.
    result = CliRunner().invoke(app, ["run", "--init", "--date", DAY, "--data", str(data), "--empty-night"])
    assert result.exit_code == 0, result.output
    assert (data / "state.duckdb").is_file()
    # Now a data directory: the reading commands accept it.
    status = CliRunner().invoke(app, ["status", "--date", DAY, "--data", str(data), "--json"])
    assert status.exit_code == 0, status.output


def test_run_takes_the_dir_gen_created(tmp_path: Path) -> None:
    data = tmp_path / "gen"
    gen = CliRunner().invoke(
        app, ["gen", "--out", str(data), "--start", DAY, "--days", "1", "--rows-per-day", "5"]
    )
    assert gen.exit_code == 0, gen.output
    assert data.is_dir() and not (data / "state.duckdb").exists()
    result = CliRunner().invoke(app, ["run", "--date", DAY, "--data", str(data), "--simulate-gateways"])
    assert result.exit_code == 0, result.output
    assert (data / "state.duckdb").is_file()


def test_verify_a_missing_path_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "ledgr"
    result = CliRunner().invoke(app, ["verify", str(missing)])
    assert result.exit_code == 2
    assert _one_line_refusal(result.output).startswith(f"error: no such file or folder {missing};")


def test_audit_log_on_a_folder_without_a_ledger_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit-log", "--ledger", str(tmp_path)])
    assert result.exit_code == 2
    assert _one_line_refusal(result.output).startswith(f"error: no ledger in {tmp_path} (no vkey file)")
