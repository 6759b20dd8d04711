"""`recycle`'s conventions: --version, options before the subcommand, a help text for every
option and argument, and enum-like options refused outside their words by typer itself."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
from typer.main import get_command
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cli.audit import AlertKind
from pipelines.cli.nightly import AlertsChoice
from pipelines.compliance.alerts import KINDS
from pipelines.nightly.steps import ALERTS_MODES


def _walk(cmd: Any, path: str) -> list[tuple[str, Any]]:
    found = [(path, cmd)]
    for name, sub in getattr(cmd, "commands", {}).items():
        found += _walk(sub, f"{path} {name}")
    return found


def test_version_is_the_installed_distributions() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"recycle {version('number-recycling')}"


def test_every_option_and_argument_has_a_help_text() -> None:
    missing = [
        f"{path} {param.name}"
        for path, cmd in _walk(get_command(app), "recycle")
        for param in cmd.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []


def test_config_data_and_verbose_before_the_subcommand(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    config = tmp_path / "recycle.toml"
    config.write_text(f'data_dir = "{first}"\n')
    for folder in (first, second):  # data directories: a state file each (a typo is refused)
        folder.mkdir()
        duckdb.connect(str(folder / "state.duckdb")).close()
    runner = CliRunner()
    added = runner.invoke(app, ["-v", "--config", str(config), "platform", "add", "bank-a"])
    assert added.exit_code == 0, added.output
    assert "bank-a" in runner.invoke(app, ["--data", str(first), "platform", "list"]).output
    # The subcommand's own option wins over the one before it.
    listed = runner.invoke(app, ["--data", str(second), "platform", "list", "--data", str(first)])
    assert "bank-a" in listed.output
    # Every invocation sets the options anew: the earlier --config does not leak into this one.
    other = runner.invoke(app, ["--data", str(second), "platform", "list"])
    assert other.exit_code == 0 and "bank-a" not in other.output


def test_enum_options_refuse_other_words_before_doing_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", "--date", "2026-09-01", "--data", str(tmp_path), "--alerts", "maybe"]
    )
    assert result.exit_code == 2
    assert "maybe" in result.output and "raise" in result.output and "record" in result.output
    assert list(tmp_path.iterdir()) == []
    ack = CliRunner().invoke(
        app,
        [
            "alerts",
            "ack",
            "--number",
            "13800000001",
            "--date",
            "2026-09-01",
            "--reason",
            "x",
            "--kind",
            "oops",
        ],
    )
    assert ack.exit_code == 2 and "reissue_violation" in ack.output


def test_the_enums_are_the_packages_words() -> None:
    assert tuple(c.value for c in AlertsChoice) == ALERTS_MODES
    assert tuple(c.mode for c in AlertsChoice) == ALERTS_MODES
    assert tuple(k.value for k in AlertKind) == KINDS
