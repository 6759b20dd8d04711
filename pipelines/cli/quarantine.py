"""`recycle quarantine list | export`: a night's refused lines, masked on screen or in clear to a
0600 file on request (:mod:`pipelines.ingest.quarantine` says why there is no other copy)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

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
    state_connection,
)
from pipelines.numbers import mask_text

__all__ = ["quarantine_export", "quarantine_list"]

FileOpt = Annotated[str | None, typer.Option("--file", help="one drop file of the night (its name)")]


def quarantine_list(
    date: LogicalDateOpt,
    file: FileOpt = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The quarantined rows of a night with their reasons; numbers and contacts masked."""
    from pipelines.ingest.quarantine import read_quarantine

    settings = settings_from(config, data)
    day = parse_date(date, "--date")
    with state_connection(settings, read_only=True) as con:
        lines = read_quarantine(con, day, file)
    # Opened to be masked: a line shows its shape (which field is wrong), never a full value.
    rows = [r | {"original_line": _masked(r["original_line"])} for r in lines.rows]
    if as_json:
        out.print_json(json.dumps(rows, default=str))
    else:
        # Lines, not a table: a drop line is wider than any terminal, and grep finds a file:line.
        out.print(f"quarantine {day}: {len(rows)} row(s)", highlight=False)
        for r in rows:
            out.print(
                f"{r['file_name']}:{r['line_no']} {r['stage']} {r['reason']}: {r['detail'] or ''}",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
            if r["original_line"] is not None:
                out.print(f"    {r['original_line']}", highlight=False, soft_wrap=True, markup=False)
    _say_erased(lines.erased)
    if rows:
        err.print(
            f"to fix and resubmit them: recycle quarantine export --date {day} --out FILE.parquet "
            "(a clear copy: personal data)",
            highlight=False,
            soft_wrap=True,
        )


def quarantine_export(
    date: LogicalDateOpt,
    out_file: Annotated[Path, typer.Option("--out", help="new Parquet file (never overwritten), made 0600")],
    file: FileOpt = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Write a night's quarantined lines, in clear, to a new 0600 Parquet file to fix and resubmit.

    The file holds personal data (full numbers, e-mails): keep it private and delete it once the
    corrected drop is in the inbox."""
    from pipelines.ingest.quarantine import export_quarantine

    settings = settings_from(config, data)
    day = parse_date(date, "--date")
    with state_connection(settings, read_only=True) as con:
        lines = export_quarantine(con, day, out_file, file)
    n = sum(1 for r in lines.rows if r["stage"] == "ingest" and r["original_line"] is not None)
    out.print(f"{out_file}: {n} quarantined line(s) of {day}, in clear (mode 0600)", highlight=False)
    err.print(
        f"{out_file} holds personal data (full numbers, contacts): fix the lines, put the corrected drop "
        f"in the inbox under a new name, run: recycle run --date {day}; then delete {out_file}",
        highlight=False,
        soft_wrap=True,
    )
    _say_erased(lines.erased)


def _masked(line: object) -> str | None:
    return None if line is None else mask_text(str(line))


def _say_erased(erased: Mapping[str, tuple[int, object]]) -> None:
    """Lines whose key is gone are said, never silently missing."""
    for epoch, (n, on) in sorted(erased.items()):
        when = f"on {on}" if on is not None else "(its key file is missing)"
        err.print(
            f"{n} line(s) can no longer be opened: key {epoch} was erased {when}, "
            "contact_retention_days after their night (docs/drops.md, 'Quarantine at rest')",
            highlight=False,
            soft_wrap=True,
        )
