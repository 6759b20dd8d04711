"""`recycle gen | run | status`: synthetic drops, the nightly run, and a night's outcome."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.cli.common import (
    ConfigOpt,
    DataOpt,
    JsonOpt,
    LogicalDateOpt,
    err,
    out,
    parse_date,
    settings_from,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from pipelines.config import Settings
    from pipelines.nightly.steps import AlertsMode, RunContext

__all__ = ["AlertsChoice", "gen", "run", "status"]


class AlertsChoice(StrEnum):
    """``--alerts``: typer refuses any other word (the modes of :data:`~pipelines.nightly.steps.ALERTS_MODES`)."""

    RAISE = "raise"
    RECORD = "record"

    @property
    def mode(self) -> AlertsMode:
        return "raise" if self is AlertsChoice.RAISE else "record"


def _days(date: str | None, start: str | None, end: str | None) -> list[dt.date]:
    if date and (start or end):
        raise typer.BadParameter("give either --date or --from/--to, not both")
    if date:
        return [parse_date(date, "--date")]
    if not (start and end):
        raise typer.BadParameter("give --date D, or --from D1 --to D2")
    first, last = parse_date(start, "--from"), parse_date(end, "--to")
    if last < first:
        raise typer.BadParameter("--to is before --from")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def gen(
    out_dir: Annotated[Path, typer.Option("--out", help="data directory to write inbox/<date>/ into")],
    start: Annotated[str, typer.Option("--start", help="first logical date YYYY-MM-DD")],
    days: Annotated[int, typer.Option("--days", min=1, help="number of consecutive nights")] = 28,
    rows_per_day: Annotated[
        int, typer.Option("--rows-per-day", min=1, help="lifecycle rows per night (about)")
    ] = 200,
    seed: Annotated[int, typer.Option("--seed", help="random seed: the same seed writes the same bytes")] = 1,
    defect_rate: Annotated[
        float,
        typer.Option("--defect-rate", min=0.0, max=1.0, help="share of rows given a defect to quarantine"),
    ] = 0.02,
    freeze_days: Annotated[
        int, typer.Option("--freeze-days", min=1, help="freeze the lives are played with (match the policy)")
    ] = 90,
    suspend_days: Annotated[
        int,
        typer.Option("--suspend-days", min=1, help="suspension the lives are played with (match the policy)"),
    ] = 60,
) -> None:
    """Write synthetic nightly drops that play out realistic lives (same seed, same bytes)."""
    from pipelines.dev.synth import generate

    summary = generate(
        out_dir,
        parse_date(start, "--start"),
        days,
        rows_per_day,
        seed,
        defect_rate,
        freeze_days=freeze_days,
        suspend_days=suspend_days,
    )
    err.print(f"wrote {summary}")


def run(
    date: Annotated[str | None, typer.Option("--date", help="logical date YYYY-MM-DD")] = None,
    start: Annotated[str | None, typer.Option("--from", help="first date of a backfill")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last date of a backfill")] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    simulate_gateways: Annotated[
        bool,
        typer.Option(help="start loopback SMTP/SMS simulators and write the next day's receipts"),
    ] = False,
    alerts: Annotated[
        AlertsChoice,
        typer.Option(help="raise: a compliance alert fails the night; record: log it and go on"),
    ] = AlertsChoice.RAISE,
    init: Annotated[
        bool,
        typer.Option(
            "--init", help="create the data directory when it does not exist (else a missing one is refused)"
        ),
    ] = False,
    empty_night: Annotated[
        bool,
        typer.Option(
            "--empty-night",
            help="run without a lifecycle or reissue drop, on purpose (the waiver is recorded)",
        ),
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0.0,
            help="seconds to wait for another run on the same data directory (default: refuse at once)",
        ),
    ] = 0.0,
) -> None:
    """Run the nightly pipeline for one logical date, or consecutive dates (backfill), in-process.

    One run at a time per data directory: the run holds its night lock for all its dates, and a
    second run refuses at once (exit 75) naming the holder, or waits up to --wait seconds."""
    from rich.progress import Progress

    from pipelines.db import night_lock
    from pipelines.db.locks import night_holder
    from pipelines.nightly.preflight import check_nights
    from pipelines.nightly.steps import RunContext, night_plan

    days = _days(date, start, end)
    settings = settings_from(config, data, needs="nothing" if init else "dir")
    # Every night of the command is checked before anything is written, the lock file included
    # (run_day checks each again under the lock). While another run is at work its night is half
    # done: the lock answers first (busy, or --wait), not a misleading "previous night incomplete".
    if night_holder(settings.data_dir) is None:
        check_nights(settings, days, now=dt.datetime.now(dt.UTC), empty_night=empty_night)
    if init:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(simulate_gateways=simulate_gateways, alerts_mode=alerts.mode, empty_night=empty_night)
    # Refusing is the default, not waiting: a second run is most often a mistake (a cron
    # entry beside the Airflow DAG, a backfill typed twice); queueing is asked for with --wait.
    with night_lock(settings.data_dir, days, wait=wait, on_wait=_say):
        if not err.is_terminal:
            # Logs, CI and tests: one plain line per night, no bar redrawn into the file.
            for day in days:
                err.print(_night(settings, day, ctx, lambda _step: None), highlight=False)
        else:
            with Progress(console=err, transient=True) as progress:
                task = progress.add_task("nightly run", total=len(days) * len(night_plan(settings)))
                for day in days:
                    line = _night(settings, day, ctx, partial(_advance, progress, task, day))
                    progress.console.print(line, highlight=False)
    err.print(f"ran {len(days)} day(s): {days[0]} .. {days[-1]} in {settings.data_dir}", highlight=False)


def _say(line: str) -> None:
    err.print(line, highlight=False, markup=False, soft_wrap=True)


def _advance(progress: Progress, task: TaskID, day: dt.date, name: str) -> None:
    """The ``on_step`` callback of ``day`` (bound with ``partial``): name the step, advance the bar."""
    progress.update(task, description=f"{day} {name}")
    progress.advance(task)


def _night(settings: Settings, day: dt.date, ctx: RunContext, on_step: Callable[[str], None]) -> str:
    """Run ``day``; its line: date, outcome (as ``recycle status`` says it) and seconds.

    A step that raises gets its line printed here, naming the step, before the error goes on
    to the caller (which says why and what to do)."""
    from pipelines.nightly.status import day_status
    from pipelines.nightly.steps import run_day

    started = time.monotonic()
    current: list[str] = []

    def step_started(name: str) -> None:
        current[:] = [name]
        on_step(name)

    try:
        run_day(settings, day, ctx, on_step=step_started)
    except Exception:
        step = current[0] if current else "?"
        err.print(f"{day} failed at step {step} {time.monotonic() - started:.1f}s", highlight=False)
        raise
    return f"{day} {day_status(settings, day)['outcome']} {time.monotonic() - started:.1f}s"


def status(
    date: LogicalDateOpt,
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per-file counts and the run's outcome for one logical date; exit 1 when it never ran."""
    from pipelines.db.locks import describe_night, night_holder
    from pipelines.nightly.status import day_status, render_files, render_lifecycle

    settings = settings_from(config, data)
    day = parse_date(date, "--date")
    report = day_status(settings, day)
    if as_json:
        out.print_json(json.dumps(report, default=str))
    elif report["steps_done"]:
        render_files(report, out)
        if "lifecycle" in report:
            render_lifecycle(report["lifecycle"], out)
        out.print(f"outcome: {report['outcome']}", highlight=False)
        waived = report.get("preflight", {}).get("waived_drops")
        if waived:
            out.print(f"empty night: ran without {', '.join(waived)} drops (--empty-night)", highlight=False)
    # A night at work has its steps half done: say who runs it, not "it stopped" or "never ran".
    running = night_holder(settings.data_dir)
    if running is not None:
        err.print(f"a nightly run is at work: {describe_night(running)}", highlight=False, soft_wrap=True)
    if not report["steps_done"]:
        if running is None:
            err.print(
                f"no run for {day} in {settings.data_dir}; run: recycle run --date {day}",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(1)
    if running is None and report["outcome"].startswith("incomplete"):
        err.print(
            f"once the stopped step's cause is fixed, finish the night: recycle run --date {day}",
            highlight=False,
        )
