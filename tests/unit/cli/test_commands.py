"""`recycle`'s command tree: names, order, help texts and options as operators know them, every
command a module-level function of its group's module; the small parsing rules of the groups."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cli.ledger import _verifier_key
from pipelines.cli.nightly import _days

COMMANDS = [
    "gen",
    "run",
    "status",
    "show",
    "evidence",
    "statement",
    "verify",
    "audit-log",
    "erase",
    "serve",
    "pull",
    "check",
    "notifications",
    "new-owner",
    "unbind-token",
    "report",
    "export-fcc",
    "export-cn",
    "evidence-summary",
    "doctor",
    "platform",
    "acks",
    "root",
    "quarantine",
    "alerts",
    "events",
    "storage",
    "provinces",
]
SUBCOMMANDS = {
    "platform": ["add", "scopes", "named", "revoke", "list"],
    "acks": ["import"],
    "root": ["rotate"],
    "quarantine": ["list", "export"],
    "alerts": ["ack", "check", "list"],
    "events": ["deliver", "status", "log", "dead-letters", "replay"],
    "storage": ["pull", "status"],
    "provinces": ["split", "list"],
}
# Each command's options as scripts and the runbook type them (a rename breaks them).
OPTIONS = {
    "storage pull": {"--what", "--config", "--data", "--json"},
    "storage status": {"--config", "--data", "--json"},
    "provinces split": {"--date", "--config", "--data", "--json"},
    "provinces list": {"--config", "--data", "--json"},
    "gen": {
        "--out",
        "--start",
        "--days",
        "--rows-per-day",
        "--seed",
        "--defect-rate",
        "--freeze-days",
        "--suspend-days",
    },
    "run": {
        "--date",
        "--from",
        "--to",
        "--config",
        "--data",
        "--simulate-gateways",
        "--alerts",
        "--init",
        "--empty-night",
        "--wait",
    },
    "status": {"--date", "--config", "--data", "--json"},
    "show": {"--config", "--data", "--json"},
    "evidence": {"--number", "--out", "--config", "--data"},
    "statement": {"--number", "--tenure", "--at", "--out", "--config", "--data"},
    "verify": {"--vkey", "--origin"},
    "audit-log": {"--config", "--data", "--ledger", "--min"},
    "erase": {"--number", "--config", "--data", "--yes"},
    "serve": {"--host", "--port", "--config", "--data"},
    "pull": {"--from", "--state", "--token", "--root"},
    "check": {"--since", "--state", "--json"},
    "notifications": {"--json", "--config", "--data"},
    "new-owner": {"--as-of", "--json", "--config", "--data"},
    "unbind-token": {"--number", "--config", "--data"},
    "report": {"--from", "--to", "--out", "--config", "--data"},
    "export-fcc": {"--month", "--company-id", "--out", "--max-rows", "--config", "--data"},
    "export-cn": {"--month", "--out", "--config", "--data"},
    "evidence-summary": {"--number", "--out", "--config", "--data"},
    "doctor": {"--config", "--data"},
    "platform add": {"--scope", "--rate", "--burst", "--named", "--config", "--data"},
    "platform named": {"--yes", "--config", "--data"},  # and --no (a secondary flag)
    "platform scopes": {"--scope", "--config", "--data"},
    "platform revoke": {"--config", "--data"},
    "platform list": {"--config", "--data"},
    "acks import": {"--platform", "--config", "--data"},
    "root rotate": {"--date", "--keep-online-key", "--config", "--data"},
    "alerts ack": {"--number", "--date", "--reason", "--kind", "--by", "--config", "--data"},
    "alerts check": {"--date", "--window-days", "--config", "--data", "--json"},
    "alerts list": {"--config", "--data"},
    "quarantine list": {"--date", "--file", "--config", "--data", "--json"},
    "quarantine export": {"--date", "--out", "--file", "--config", "--data"},
}


# Typer 0.29 vendors click (typer._click): commands are checked by what they have, not their class.


def _group() -> Any:
    return get_command(app)


def _commands() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, cmd in _group().commands.items():
        if hasattr(cmd, "commands"):
            found.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            found[name] = cmd
    return found


def test_top_level_lists_the_commands_then_the_groups_in_order() -> None:
    result = CliRunner().invoke(app, ["--help"], prog_name="recycle")
    assert result.exit_code == 0, result.output
    assert "number-recycling: make recycled (reissued) mobile numbers safe." in result.output
    assert list(_group().commands) == COMMANDS
    # A command's name starts its row; wrapped help continues on indented rows.
    rows = [
        line[2:].split() for line in result.output.splitlines() if line.startswith("│ ") and line[2] != " "
    ]
    listed = [row[0] for row in rows if row[0] in COMMANDS]
    assert listed == COMMANDS


def test_groups_hold_their_subcommands() -> None:
    group = _group()
    for name, subs in SUBCOMMANDS.items():
        sub = group.commands[name]
        assert list(sub.commands) == subs


@pytest.mark.parametrize("path", sorted(OPTIONS))
def test_every_command_keeps_its_options_and_help(path: str) -> None:
    cmd = _commands()[path]
    options = {opt for p in cmd.params if p.param_type_name == "option" for opt in p.opts}
    assert options == OPTIONS[path] | ({"--verbose", "-v"} & options)
    result = CliRunner().invoke(app, [*path.split(), "--help"], prog_name="recycle")
    assert result.exit_code == 0, result.output
    # Rich wraps the help in a box at its own width: compare the words.
    shown = " ".join(result.output.replace("│", " ").split())
    assert cmd.help and " ".join(cmd.help.splitlines()[0].split()) in shown


def test_every_command_is_a_module_level_function_of_a_group_module() -> None:
    for path, cmd in _commands().items():
        func = cmd.callback
        assert func is not None, path
        # Typer wraps the function; the original is kept in __wrapped__.
        func = getattr(func, "__wrapped__", func)
        assert func.__qualname__ == func.__name__, f"{path} is a closure: {func.__qualname__}"
        assert func.__module__ in {
            "pipelines.cli.nightly",
            "pipelines.cli.ledger",
            "pipelines.cli.audit",
            "pipelines.cli.platform",
            "pipelines.cli.doctor",
            "pipelines.cli.quarantine",
            "pipelines.cli.events",
            "pipelines.cli.storage",
            "pipelines.cli.provinces",
        }, path


def test_days_is_one_date_or_a_closed_range() -> None:
    assert _days("2026-03-02", None, None) == [dt.date(2026, 3, 2)]
    assert _days(None, "2026-02-27", "2026-03-01") == [
        dt.date(2026, 2, 27),
        dt.date(2026, 2, 28),
        dt.date(2026, 3, 1),
    ]
    for bad in (
        ("2026-03-02", "2026-03-01", None),
        (None, "2026-03-01", None),
        (None, "2026-03-02", "2026-03-01"),
    ):
        with pytest.raises(typer.BadParameter):
            _days(*bad)


def test_verifier_key_prefers_the_option_then_the_folder(tmp_path: Path) -> None:
    (tmp_path / "vkey").write_text("folder-key\n")
    key_file = tmp_path / "given"
    key_file.write_text("file-key\n")
    assert _verifier_key(tmp_path, "inline-key") == "inline-key"
    assert _verifier_key(tmp_path, str(key_file)) == "file-key"
    assert _verifier_key(tmp_path, None) == "folder-key"
    with pytest.raises(typer.BadParameter, match="no --vkey given"):
        _verifier_key(tmp_path / "missing", None)
