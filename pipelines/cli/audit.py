"""`recycle report | export-fcc | export-cn | evidence-summary | alerts ack/check/list`:
the auditing commands. ``pipelines.cli.app`` calls :func:`register` to add them to ``recycle``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli.common import ConfigOpt, DataOpt, parse_number
from pipelines.cli.common import parse_date as _date
from pipelines.cli.common import settings_from as _settings
from pipelines.config import Settings
from pipelines.errors import TransientError
from pipelines.layout import Layout
from pipelines.numbers import mask

_err = Console(stderr=True)
_out = Console()

MonthOpt = Annotated[str, typer.Option("--month", help="report month YYYY-MM")]


@contextmanager
def _state(settings: Settings, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    # Importing the table owners first: open_state creates the tables they register.
    import pipelines.compliance.alerts
    import pipelines.compliance.exports  # noqa: F401
    from pipelines.db import open_state

    path = Layout(settings.data_dir).state_db
    if read_only and not path.exists():
        raise typer.BadParameter(f"no state file at {path}; check --data / data_dir")
    try:
        with open_state(path, read_only=read_only) as con:
            yield con
    except duckdb.IOException as exc:
        raise TransientError(
            f"cannot open {path}: {exc}. The nightly run holds the state file while it writes "
            "(DuckDB allows one process); retry when it has finished"
        ) from exc


def register(app: typer.Typer) -> None:
    """Add ``report``, ``export-fcc``, ``export-cn``, ``evidence-summary`` and ``alerts`` to ``app``."""
    alerts_app = typer.Typer(
        help="Compliance alerts: check a night, acknowledge known items.", no_args_is_help=True
    )
    app.add_typer(alerts_app, name="alerts")

    @app.command("report")
    def report_cmd(
        start: Annotated[str, typer.Option("--from", help="first day of the period YYYY-MM-DD")],
        end: Annotated[str, typer.Option("--to", help="last day of the period YYYY-MM-DD")],
        out_dir: Annotated[Path, typer.Option("--out", help="folder for report.html and the CSVs")],
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Compliance report for auditors: self-contained HTML with charts, plus CSV tables."""
        from pipelines.compliance.report import HEADLINE, build_report

        settings = _settings(config, data)
        first, last = _date(start, "--from"), _date(end, "--to")
        with _state(settings, read_only=True) as con:
            summary = build_report(con, settings, first, last, out_dir)
        table = Table(title=f"compliance {first} .. {last} (state through {summary.state_through})")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, label, _ in HEADLINE:
            table.add_row(label, f"{summary.headline[key]:,}")
        _out.print(table)
        _err.print(f"wrote {summary.html} and {len(summary.csv_files)} CSV files")

    @app.command("export-fcc")
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

        settings = _settings(config, data)
        with _state(settings) as con:
            result = export_fcc_disconnects(con, parse_month(month), out_dir, company_id, max_rows=max_rows)
        verb = "wrote" if result.new else "rewrote (already reported)"
        _out.print(
            f"{verb} RND report {result.month:%Y-%m} cutoff {result.cutoff}: {result.numbers:,} "
            f"numbers in {len(result.files)} file(s); {result.skipped_non_nanp:,} non-US "
            f"disconnection(s) skipped; manifest {result.manifest}"
        )
        if result.no_disconnects:
            _out.print("no disconnects this month: confirm it in the RND web upload area")

    @app.command("export-cn")
    def export_cn_cmd(
        month: MonthOpt,
        out_dir: Annotated[Path, typer.Option("--out", help="folder for the CSV and its manifest")],
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Numbers released in a month, for the 二次号码焕新 (refresh before reissue) platform."""
        from pipelines.compliance.exports import export_cn_renewal, parse_month

        settings = _settings(config, data)
        with _state(settings, read_only=True) as con:
            result = export_cn_renewal(con, parse_month(month), out_dir)
        _out.print(
            f"wrote {out_dir / result.csv.name}: {result.rows:,} released numbers "
            f"({result.with_exception:,} with exception, {result.reissued:,} reissued since)"
        )
        if not result.complete:
            _err.print(
                f"[yellow]the state covers nights only up to {result.state_through}: the month "
                "is incomplete (the manifest says so); export it again after its last night[/yellow]"
            )

    @app.command("evidence-summary")
    def evidence_summary_cmd(
        number: Annotated[str, typer.Option("--number", help="the number, national or E.164")],
        out_dir: Annotated[Path, typer.Option("--out", help="folder for the bundle and summary.html")],
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """A number's evidence bundle plus a one-page human summary (summary.html) for a dispute."""
        from pipelines.compliance.evidence_summary import render_evidence_summary
        from pipelines.ledger.nightly import open_ledger

        settings = _settings(config, data)
        e164 = _e164(number, settings)
        with _state(settings) as con, open_ledger(settings) as ledger:
            try:
                path = render_evidence_summary(con, ledger, e164, out_dir)
            except LookupError as exc:
                _err.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from None
        _out.print(f"wrote {path}; check the proofs with: recycle verify {out_dir}")

    @alerts_app.command("ack")
    def ack_cmd(
        number: Annotated[str, typer.Option("--number", help="the number, national or E.164")],
        date: Annotated[
            str, typer.Option("--date", help="reissue date (violation) or release date (exception)")
        ],
        reason: Annotated[str, typer.Option("--reason", help="why it is known and acceptable")],
        kind: Annotated[
            str | None, typer.Option("--kind", help="reissue_violation or release_exception (default: both)")
        ] = None,
        by: Annotated[str | None, typer.Option("--by", help="who acknowledges (default: login name)")] = None,
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Acknowledge a known violation or exception so the nightly check passes; kept with who and why."""
        from pipelines.compliance.alerts import acknowledge

        settings = _settings(config, data)
        e164 = _e164(number, settings)
        who = by or getpass.getuser()
        with _state(settings) as con:
            # The time a person acted is an audit fact, not business time: the wall clock is right.
            acks = acknowledge(con, e164, _date(date, "--date"), reason, who, dt.datetime.now(dt.UTC), kind)
        for a in acks:
            _out.print(f"acknowledged {a.kind} of {mask(a.msisdn)} on {a.on_date} by {a.acked_by}")

    @alerts_app.command("check")
    def check_cmd(
        date: Annotated[str, typer.Option("--date", help="logical date YYYY-MM-DD")],
        window_days: Annotated[
            int, typer.Option("--window-days", min=1, help="trailing days of the exception rate")
        ] = 30,
        config: ConfigOpt = None,
        data: DataOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    ) -> None:
        """Run the nightly compliance check for one date; exit 1 when it fails."""
        from pipelines.compliance.alerts import evaluate_compliance

        settings = _settings(config, data)
        with _state(settings) as con:
            report = evaluate_compliance(con, settings, _date(date, "--date"), window_days=window_days)
        if as_json:
            _out.print_json(json.dumps(report.as_dict()))
        else:
            _out.print(
                f"{report.day}: {report.released} releases in {report.window_start}..{report.day}, "
                f"{report.with_exception} with exception ({report.acknowledged_exceptions} "
                f"acknowledged), rate {report.exception_rate:.2%} vs {report.threshold:.2%}; "
                f"{report.violations} reissue violation(s), {report.acknowledged_violations} acknowledged"
            )
        if not report.passed:
            _err.print(f"[red]{report.message()}[/red]")
            raise typer.Exit(1)

    @alerts_app.command("list")
    def list_cmd(config: ConfigOpt = None, data: DataOpt = None) -> None:
        """Every acknowledgement on record (numbers masked)."""
        from pipelines.compliance.alerts import list_acks

        settings = _settings(config, data)
        with _state(settings, read_only=True) as con:
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
        _out.print(table)


def _e164(number: str, settings: Settings) -> str:
    return parse_number(number, settings, "--number")
