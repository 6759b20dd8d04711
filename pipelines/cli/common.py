"""Options, consoles and argument parsing shared by every `recycle` command module (one place for
each rule)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
import typer
from rich.console import Console

from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.db.locks import reader_wait_seconds
from pipelines.errors import ConfigError, TransientError
from pipelines.layout import Layout
from pipelines.numbers import normalise

CONFIG_HELP = "TOML config file (default: $RECYCLE_CONFIG or built-in)"
DATA_HELP = "data directory (overrides data_dir)"
ConfigOpt = Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)]
DataOpt = Annotated[Path | None, typer.Option("--data", help=DATA_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
LogicalDateOpt = Annotated[str, typer.Option("--date", help="logical date YYYY-MM-DD")]
NumberArg = Annotated[str, typer.Argument(help="the number, national or E.164")]
NumberOpt = Annotated[str, typer.Option("--number", help="the number, national or E.164")]

# Messages and progress go to stderr, results to stdout: `recycle ... --json | jq` stays clean.
err = Console(stderr=True)
out = Console()


@dataclass(frozen=True)
class GlobalOptions:
    """``--config`` and ``--data`` given before the subcommand (``recycle --config F run ...``)."""

    config: Path | None = None
    data: Path | None = None


# Set by the app's callback on every invocation; a subcommand's own option wins over it.
_NO_GLOBAL_OPTIONS = GlobalOptions()
_global_options: ContextVar[GlobalOptions] = ContextVar("recycle_global_options", default=_NO_GLOBAL_OPTIONS)


def set_global_options(options: GlobalOptions) -> None:
    _global_options.set(options)


# What a command needs of its data directory (``settings_from(..., needs=...)``):
# "state": it reads one, so the directory and its state file must exist (every command but two);
# "dir": `recycle run` without --init: the directory must exist (`recycle gen` writes the drops
#   into it first; the first night creates the state file);
# "nothing": `recycle run --init` creates it; `audit-log --ledger F` does not read it.
DataDirNeeds = Literal["state", "dir", "nothing"]

# A data directory that is not one is a usage error, like an unknown option: exit 2 (click's own
# code for usage errors, and `main`'s for a RecycleError) for every command, so a script can tell
# "wrong --data" from a command's own rc 1 ("checked, and it failed" / "that night never ran").
DATA_DIR_EXIT = 2


def settings_from(config: Path | None, data: Path | None, *, needs: DataDirNeeds = "state") -> Settings:
    """The settings of a command: config file (or $RECYCLE_CONFIG), env, then ``--data``.

    Each of ``--config``/``--data`` is the subcommand's when given there, else the one given
    before the subcommand. The data directory is checked here, before the command touches
    anything: a typo in ``--data`` is refused with one line naming the directory and the
    command that creates one, never silently created (see :data:`DataDirNeeds`)."""
    given = _global_options.get()
    config = config if config is not None else given.config
    data = data if data is not None else given.data
    overrides: dict[str, Any] = {} if data is None else {"data_dir": data}
    settings = _province_of_command(load_settings(config, **overrides), needs)
    problem = data_dir_problem(settings.data_dir, needs)
    if problem is not None:
        err.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(DATA_DIR_EXIT)
    return settings


ENV_PROVINCE = "RECYCLE_PROVINCE"


def _province_of_command(settings: Settings, needs: DataDirNeeds) -> Settings:
    """In a data directory split by province, ``RECYCLE_PROVINCE=CODE`` points a command at that
    province's data directory (its state file holds the number's tenures: show, statement,
    status, quarantine ...); without it a command works on the nation's (run, serve, pull)."""
    code = os.environ.get(ENV_PROVINCE, "")
    if not code:
        return settings
    if not settings.provinces:
        raise ConfigError(
            f"{ENV_PROVINCE}={code}: this data directory is not split by province (config `provinces`)"
        )
    return settings.for_province(code)


def data_dir_problem(data_dir: Path, needs: DataDirNeeds) -> str | None:
    """Why ``data_dir`` cannot serve a command that ``needs`` it so (one line), or None."""
    if needs == "nothing":
        return None
    create = (
        f"check --data / data_dir, or create it: recycle gen --out {data_dir} --start D ..., "
        f"or recycle run --init --date D --data {data_dir}"
    )
    if not data_dir.exists():
        return f"no data directory {data_dir}; {create}"
    if not data_dir.is_dir():
        return f"data directory {data_dir} is not a directory; check --data / data_dir"
    if needs == "state" and not _has_state(data_dir):
        return (
            f"{data_dir} holds no state file ({Layout(data_dir).state_db.name}): no night has run in it; "
            f"check --data / data_dir, or run the first night: recycle run --date D --data {data_dir}"
        )
    return None


def _has_state(data_dir: Path) -> bool:
    """A state file here, or (split by province) in any province's directory: a night ran."""
    if Layout(data_dir).state_db.is_file():
        return True
    provinces = data_dir / "provinces"
    return provinces.is_dir() and any(Layout(p).state_db.is_file() for p in provinces.iterdir())


def parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from None


def parse_number(number: str, settings: Settings, param_hint: str = "NUMBER") -> str:
    """E.164 of a number typed national or international (region: ``settings.default_region``)."""
    e164 = normalise(number, settings.default_region)
    if e164 is None:
        raise typer.BadParameter(
            f"not a valid phone number for region {settings.default_region}", param_hint=param_hint
        )
    return e164


@contextmanager
def state_connection(settings: Settings, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """The state file of ``settings`` for an operator's command, under the state lock.

    While a night's step writes the file, the command waits up to ``$RECYCLE_STATE_WAIT_SECONDS``
    (one line on stderr says for whom), then stops with a BusyError naming the writer and the
    next command (:mod:`pipelines.db.locks`). A command that writes (``alerts ack``, ``erase``)
    waits the same bounded time: an operator is at the terminal."""
    path = Layout(settings.data_dir).state_db
    if read_only and not path.exists():
        raise typer.BadParameter(f"no state file at {path}; check --data / data_dir")
    try:
        with open_state(path, read_only=read_only, wait=reader_wait_seconds()) as con:
            yield con
    except duckdb.IOException as exc:
        # A process that opened the file without the lock (a plain duckdb.connect, an older version).
        raise TransientError(
            f"cannot open {path}: {exc}. Another process holds the state file outside the lock "
            "(DuckDB allows one); stop it, or retry when it has finished"
        ) from exc
