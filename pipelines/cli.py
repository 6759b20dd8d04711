"""`recycle`: the operator's command line. Thin: parses options, calls pipelines functions."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import Settings, load_settings
from pipelines.errors import RecycleError

app = typer.Typer(
    name="recycle",
    help="number-recycling: make recycled (reissued) mobile numbers safe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (default: $RECYCLE_CONFIG or built-in)")
]
DataOpt = Annotated[Path | None, typer.Option("--data", help="data directory (overrides data_dir)")]


def _settings(config: Path | None, data: Path | None) -> Settings:
    overrides: dict[str, Any] = {}
    if data is not None:
        overrides["data_dir"] = data
    return load_settings(config, **overrides)


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from None


def _days(date: str | None, start: str | None, end: str | None) -> list[dt.date]:
    if date and (start or end):
        raise typer.BadParameter("give either --date or --from/--to, not both")
    if date:
        return [_date(date, "--date")]
    if not (start and end):
        raise typer.BadParameter("give --date D, or --from D1 --to D2")
    first, last = _date(start, "--from"), _date(end, "--to")
    if last < first:
        raise typer.BadParameter("--to is before --from")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every step")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Great Expectations logs every ephemeral context at INFO; it says nothing an operator needs.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


@app.command()
def gen(
    out_dir: Annotated[Path, typer.Option("--out", help="data directory to write inbox/<date>/ into")],
    start: Annotated[str, typer.Option("--start", help="first logical date YYYY-MM-DD")],
    days: Annotated[int, typer.Option("--days", min=1)] = 28,
    rows_per_day: Annotated[int, typer.Option("--rows-per-day", min=1)] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    defect_rate: Annotated[float, typer.Option("--defect-rate", min=0.0, max=1.0)] = 0.02,
    freeze_days: Annotated[int, typer.Option("--freeze-days", min=1)] = 90,
) -> None:
    """Write synthetic nightly drops that play out realistic lives (same seed, same bytes)."""
    from pipelines.synth import generate

    summary = generate(
        out_dir, _date(start, "--start"), days, rows_per_day, seed, defect_rate, freeze_days=freeze_days
    )
    console.print(f"wrote {summary}")


@app.command()
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
) -> None:
    """Run the nightly pipeline for one logical date, or consecutive dates (backfill), in-process."""
    from rich.progress import Progress

    from pipelines.run import RunContext, run_day, step_names

    settings = _settings(config, data)
    days = _days(date, start, end)
    ctx = RunContext(simulate_gateways=simulate_gateways)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("nightly run", total=len(days) * len(step_names()))
        for day in days:
            def on_step(name: str, day: dt.date = day) -> None:
                progress.update(task, description=f"{day} {name}")
                progress.advance(task)

            run_day(settings, day, ctx, on_step=on_step)
    console.print(f"ran {len(days)} day(s): {days[0]} .. {days[-1]} in {settings.data_dir}")


@app.command()
def status(
    date: Annotated[str, typer.Option("--date", help="logical date YYYY-MM-DD")],
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per-file counts and the run's outcome for one logical date."""
    from pipelines.status import day_status

    settings = _settings(config, data)
    report = day_status(settings, _date(date, "--date"))
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    table = Table(title=f"drop files {date}")
    for col in ("file", "kind", "status", "rows_in", "accepted", "quarantined", "reasons"):
        table.add_column(col)
    for f in report["files"]:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(f["quarantined_by_reason"].items()))
        table.add_row(
            f["file_name"], f["kind"], f["status"], str(f["rows_in"]), str(f["accepted"]),
            str(f["quarantined"]), reasons,
        )
    out.print(table)
    out.print(f"outcome: {report['outcome']}")


def main() -> None:
    try:
        app()
    except RecycleError as exc:
        console.print(f"[red]error:[/red] {exc.diagnostics()}")
        sys.exit(2)


if __name__ == "__main__":
    main()
