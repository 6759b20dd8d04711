"""`recycle`: the operator's command line. Thin: parses options, calls pipelines functions."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli.common import ConfigOpt, DataOpt, parse_number
from pipelines.cli.common import parse_date as _date
from pipelines.cli.common import settings_from as _settings
from pipelines.config import Settings
from pipelines.errors import RecycleError

app = typer.Typer(
    name="recycle",
    help="number-recycling: make recycled (reissued) mobile numbers safe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

console = Console(stderr=True)
out = Console()


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
    suspend_days: Annotated[int, typer.Option("--suspend-days", min=1)] = 60,
) -> None:
    """Write synthetic nightly drops that play out realistic lives (same seed, same bytes)."""
    from pipelines.dev.synth import generate

    summary = generate(
        out_dir,
        _date(start, "--start"),
        days,
        rows_per_day,
        seed,
        defect_rate,
        freeze_days=freeze_days,
        suspend_days=suspend_days,
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
    alerts: Annotated[
        str, typer.Option(help="raise: a compliance alert fails the night; record: log it and go on")
    ] = "raise",
) -> None:
    """Run the nightly pipeline for one logical date, or consecutive dates (backfill), in-process."""
    from rich.progress import Progress

    from pipelines.nightly.steps import ALERTS_MODES, RunContext, run_day, step_names

    settings = _settings(config, data)
    days = _days(date, start, end)
    if alerts not in ALERTS_MODES:
        raise typer.BadParameter(f"--alerts {alerts!r}: use raise or record")
    ctx = RunContext(simulate_gateways=simulate_gateways, alerts_mode=alerts)
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
    from pipelines.nightly.status import day_status

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
            f["file_name"],
            f["kind"],
            f["status"],
            str(f["rows_in"]),
            str(f["accepted"]),
            str(f["quarantined"]),
            reasons,
        )
    out.print(table)
    if "lifecycle" in report:
        from pipelines.nightly.status import render_lifecycle

        render_lifecycle(report["lifecycle"], out)
    out.print(f"outcome: {report['outcome']}")


def _e164(number: str, settings: Settings) -> str:
    return parse_number(number, settings)


@app.command()
def show(
    number: Annotated[str, typer.Argument(help="the number, national or E.164")],
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """A number's tenures, state history and reminders with their receipts (operators only)."""
    from pipelines.db import open_state
    from pipelines.layout import Layout
    from pipelines.lifecycle import number_history

    settings = _settings(config, data)
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        history = number_history(con, _e164(number, settings))
    if as_json:
        out.print_json(json.dumps(history, default=str, ensure_ascii=False))
    else:
        out.print(history)


@app.command()
def evidence(
    number: Annotated[str, typer.Option("--number", help="the number, national or E.164")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the bundle")],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Write the evidence bundle of a number: one C2SP tlog-proof per ledger entry + index.json."""
    from pipelines.db import open_state
    from pipelines.layout import Layout
    from pipelines.ledger.evidence import write_number_evidence
    from pipelines.ledger.nightly import open_ledger

    settings = _settings(config, data)
    e164 = _e164(number, settings)
    with open_state(Layout(settings.data_dir).state_db) as con, open_ledger(settings) as ledger:
        try:
            index_path, n = write_number_evidence(con, ledger, e164, out_dir)
        except LookupError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"wrote {n} proofs and {index_path}; check with: recycle verify {out_dir}")


@app.command()
def verify(
    path: Annotated[
        Path,
        typer.Argument(help="an evidence bundle folder, a .tlog-proof file, a ledger folder or a checkpoint"),
    ],
    vkey: Annotated[
        str | None,
        typer.Option("--vkey", help="verifier key string or file (default: the bundle's or ledger's vkey)"),
    ] = None,
    origin: Annotated[str | None, typer.Option("--origin", help="expected checkpoint origin")] = None,
) -> None:
    """Verify offline; exit 1 with the precise reason on any mismatch."""
    from pipelines.errors import VerificationError
    from pipelines.ledger import open_checkpoint, verify_log, verify_proof_file

    def key_for(folder: Path) -> str:
        if vkey is not None:
            return Path(vkey).read_text().strip() if Path(vkey).is_file() else vkey
        found = folder / "vkey"
        if not found.exists():
            raise typer.BadParameter(f"no --vkey given and no vkey file in {folder}")
        console.print(f"[yellow]using {found}; compare it with the carrier's published key[/yellow]")
        return found.read_text().strip()

    try:
        if path.is_dir() and (path / "index.json").exists():
            key = key_for(path)
            items = json.loads((path / "index.json").read_text())
            entries = items["entries"] if isinstance(items, dict) else items
            checked = 0
            for item in entries:
                if item.get("file"):
                    verify_proof_file((path / item["file"]).read_bytes(), key, origin)
                    checked += 1
            out.print(f"OK: {checked} proofs verified ({len(entries) - checked} erased)")
        elif path.is_dir():
            report = verify_log(path, key_for(path), origin)
            out.print(
                f"OK: ledger of {report.entries} entries, {report.tiles_checked} tiles and "
                f"{report.bundles_checked} entry bundles recomputed; root matches the signed checkpoint"
            )
        elif path.suffix == ".tlog-proof":
            verified = verify_proof_file(path.read_bytes(), key_for(path.parent), origin)
            out.print(f"OK: entry {verified.index} ({verified.entry.entry_type.label}) is in the log")
        else:
            cp = open_checkpoint(path.read_bytes(), key_for(path.parent), origin)
            out.print(f"OK: checkpoint {cp.origin} size {cp.size}")
    except VerificationError as exc:
        console.print(f"[red]FAILED:[/red] {exc.diagnostics()}")
        raise typer.Exit(1) from None


@app.command("audit-log")
def audit_log_cmd(
    config: ConfigOpt = None,
    data: DataOpt = None,
    ledger_dir: Annotated[
        Path | None, typer.Option("--ledger", help="a ledger folder (default: <data>/ledger)")
    ] = None,
    min_effective: Annotated[
        int | None, typer.Option("--min", help="required effective reminders (default: policy)")
    ] = None,
) -> None:
    """From the public log alone: no tenure released with fewer effective-reminder entries than required."""
    from pipelines.layout import Layout
    from pipelines.ledger import audit_log

    settings = _settings(config, data)
    folder = ledger_dir or Layout(settings.data_dir).ledger_dir
    need = min_effective if min_effective is not None else settings.policy("default").min_effective_reminders
    report = audit_log(folder, (folder / "vkey").read_text().strip(), need)
    out.print(
        f"checkpoint size {report.checkpoint.size}: {report.released} released, "
        f"{len(report.under_reminded)} under-reminded, {len(report.exceptions)} exceptions, "
        f"{len(report.violations)} reissue violations, {len(report.released_without_closure)} "
        "released without a closure"
    )
    if not report.passed:
        console.print("[red]AUDIT FAILED[/red]")
        raise typer.Exit(1)
    out.print("AUDIT PASSED")


@app.command()
def erase(
    number: Annotated[str, typer.Option("--number", help="the number whose ledger entries to crypto-shred")],
    config: ConfigOpt = None,
    data: DataOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="confirm: this cannot be undone")] = False,
) -> None:
    """Crypto-shred a number's ledger openings (erasure request); the log stays verifiable."""
    from pipelines.db import open_state
    from pipelines.layout import Layout
    from pipelines.ledger.evidence import erase_number
    from pipelines.ledger.nightly import open_ledger
    from pipelines.numbers import mask

    settings = _settings(config, data)
    e164 = _e164(number, settings)
    if not yes:
        raise typer.BadParameter("erasure cannot be undone; repeat with --yes")
    with open_state(Layout(settings.data_dir).state_db) as con, open_ledger(settings) as ledger:
        n = erase_number(con, ledger, e164)
    console.print(f"erased the openings of {n} entries about {mask(e164)}")


def _register_plugins() -> None:
    from pipelines.cli import audit, platform

    platform.register(app)
    audit.register(app)


_register_plugins()


def main() -> None:
    try:
        app()
    except RecycleError as exc:
        console.print(f"[red]error:[/red] {exc.diagnostics()}")
        sys.exit(2)


if __name__ == "__main__":
    main()
