"""`recycle report | export-fcc | export-cn | alerts ack/check/list`: the auditing commands
(:mod:`pipelines.compliance`)."""

from __future__ import annotations

import datetime as dt
import getpass
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import (
    ConfigOpt,
    DataOpt,
    JsonOpt,
    LogicalDateOpt,
    NumberOpt,
    err,
    out,
    parse_date,
    parse_number,
    settings_from,
    state_connection,
)
from pipelines.numbers import mask

__all__ = ["ack_cmd", "check_cmd", "export_cn_cmd", "export_fcc_cmd", "list_cmd", "report_cmd"]

MonthOpt = Annotated[str, typer.Option("--month", help="report month YYYY-MM")]


class AlertKind(StrEnum):
    """``alerts ack --kind``: the kinds of :data:`pipelines.compliance.alerts.KINDS`."""

    REISSUE_VIOLATION = "reissue_violation"
    RELEASE_EXCEPTION = "release_exception"


def report_cmd(
    start: Annotated[str, typer.Option("--from", help="first day of the period YYYY-MM-DD")],
    end: Annotated[str, typer.Option("--to", help="last day of the period YYYY-MM-DD")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for report.html and the CSVs")],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Compliance report for auditors: self-contained HTML with charts, plus CSV tables."""
    from pipelines.compliance.report import HEADLINE, build_report

    settings = settings_from(config, data)
    first, last = parse_date(start, "--from"), parse_date(end, "--to")
    with state_connection(settings, read_only=True) as con:
        summary = build_report(con, settings, first, last, out_dir)
    table = Table(title=f"compliance {first} .. {last} (state through {summary.state_through})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, label, _ in HEADLINE:
        table.add_row(label, f"{summary.headline[key]:,}")
    out.print(table)
    err.print(f"wrote {summary.html} and {len(summary.csv_files)} CSV files")


def export_fcc_cmd(
    month: MonthOpt,
    company_id: Annotated[
        str, typer.Option("--company-id", help="your RND Company ID (3-10 letters/digits)")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the report files")],
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="rows per file (RND: 1,000,000)")
    ] = 1_000_000,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """FCC Reassigned Numbers Database monthly disconnect report (US numbers; incremental)."""
    from pipelines.compliance.exports import export_fcc_disconnects, parse_month

    settings = settings_from(config, data)
    with state_connection(settings) as con:
        result = export_fcc_disconnects(con, parse_month(month), out_dir, company_id, max_rows=max_rows)
    verb = "wrote" if result.new else "rewrote (already reported)"
    out.print(
        f"{verb} RND report {result.month:%Y-%m} cutoff {result.cutoff}: {result.numbers:,} "
        f"numbers in {len(result.files)} file(s); {result.skipped_non_nanp:,} non-US "
        f"disconnection(s) skipped; manifest {result.manifest}"
    )
    if result.no_disconnects:
        out.print("no disconnects this month: confirm it in the RND web upload area")


def export_cn_cmd(
    month: MonthOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the CSV and its manifest")],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Numbers released in a month, for the 二次号码焕新 (refresh before reissue) platform."""
    from pipelines.compliance.exports import export_cn_renewal, parse_month

    settings = settings_from(config, data)
    with state_connection(settings, read_only=True) as con:
        result = export_cn_renewal(con, parse_month(month), out_dir)
    out.print(
        f"wrote {out_dir / result.csv.name}: {result.rows:,} released numbers "
        f"({result.with_exception:,} with exception, {result.reissued:,} reissued since)"
    )
    if not result.complete:
        err.print(
            f"[yellow]the state covers nights only up to {result.state_through}: the month "
            "is incomplete (the manifest says so); export it again after its last night[/yellow]"
        )


def ack_cmd(
    number: NumberOpt,
    date: Annotated[str, typer.Option("--date", help="reissue date (violation) or release date (exception)")],
    reason: Annotated[str, typer.Option("--reason", help="why it is known and acceptable")],
    kind: Annotated[
        AlertKind | None,
        typer.Option("--kind", help="reissue_violation or release_exception (default: both)"),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="who acknowledges (default: login name)")] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Acknowledge a known violation or exception so the nightly check passes; kept with who and why."""
    from pipelines.compliance.alerts import acknowledge

    settings = settings_from(config, data)
    e164 = parse_number(number, settings, "--number")
    who = by or getpass.getuser()
    with state_connection(settings) as con:
        # The time a person acted is an audit fact, not business time: the wall clock is right.
        acks = acknowledge(
            con,
            e164,
            parse_date(date, "--date"),
            reason,
            who,
            dt.datetime.now(dt.UTC),
            None if kind is None else kind.value,
        )
    for a in acks:
        out.print(f"acknowledged {a.kind} of {mask(a.msisdn)} on {a.on_date} by {a.acked_by}")


def check_cmd(
    date: LogicalDateOpt,
    window_days: Annotated[
        int, typer.Option("--window-days", min=1, help="trailing days of the exception rate")
    ] = 30,
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly compliance check for one date; exit 1 when it fails."""
    from pipelines.compliance.alerts import evaluate_compliance

    settings = settings_from(config, data)
    err.print(
        "covers: the night's compliance alerts: unacknowledged reissue violations and releases with an "
        f"exception, and the {window_days}-day exception rate overall, per province and per week "
        "(the public ledger: recycle audit-log; everything: recycle doctor)",
        highlight=False,
        soft_wrap=True,
    )
    with state_connection(settings) as con:
        report = evaluate_compliance(con, settings, parse_date(date, "--date"), window_days=window_days)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        out.print(
            f"{report.day}: {report.released} releases in {report.window_start}..{report.day}, "
            f"{report.with_exception} with exception ({report.acknowledged_exceptions} "
            f"acknowledged), rate {report.exception_rate:.2%} vs {report.threshold:.2%}; "
            f"{report.violations} reissue violation(s), {report.acknowledged_violations} acknowledged; "
            f"{report.unacknowledged_exceptions} release exception(s) on record not acknowledged"
        )
    if not report.passed:
        err.print(f"[red]{report.message()}[/red]")
        raise typer.Exit(1)


def list_cmd(config: ConfigOpt = None, data: DataOpt = None) -> None:
    """Every acknowledgement on record (numbers masked)."""
    from pipelines.compliance.alerts import list_acks

    settings = settings_from(config, data)
    with state_connection(settings, read_only=True) as con:
        acks = list_acks(con)
    table = Table(title=f"{len(acks)} acknowledgement(s)")
    for col in ("number", "kind", "date", "reason", "by", "at (UTC)"):
        table.add_column(col)
    for a in acks:
        table.add_row(
            mask(a.msisdn),
            a.kind,
            str(a.on_date),
            a.reason,
            a.acked_by,
            f"{a.acked_at:%Y-%m-%d %H:%M:%S}",
        )
    out.print(table)
