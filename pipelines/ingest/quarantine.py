"""What an operator reads of the quarantine: a night's refused lines, listed masked or exported
in clear on request.

A refused line holds whatever its drop held (full numbers, e-mails, contact phones), so the
``quarantine`` table keeps it sealed like every contact (``contact_seal``, the live generation
of its night; :mod:`pipelines.contacts`) and it goes with that key, at most
``contact_retention_days`` (+1 night) after its night. The table is its only copy.

Why no quarantine file per drop any more (it was ``<data>/quarantine/<D>/<file>.parquet``, in
clear): a sealed copy is no use to the operator without this module's opening anyway, and a
clear one outlives the retention wherever it is copied (a backup, a ticket). So the clear
copy is written only when asked for, by :func:`export_quarantine` (``recycle quarantine export``),
0600, to a path the operator names and then deletes once the fixed drop is resubmitted; the
listing (:func:`read_quarantine`, ``recycle quarantine list``) shows it masked.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.db import Con
from pipelines.errors import QuarantineExportError
from pipelines.layout import create_private

# The export's columns: the quarantine file each line used to have, plus the file it came from.
EXPORT_SCHEMA = pa.schema(
    [
        ("file_name", pa.string()),
        ("line_no", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("original_line", pa.string()),  # NULL: its key was erased (retention)
    ]
)


@dataclass(frozen=True)
class QuarantinedLines:
    """A night's quarantine rows (every stage), the lines opened; ``erased`` names the keys gone."""

    rows: list[dict[str, object]]  # file_name, stage, line_no, reason, detail, original_line
    erased: dict[str, tuple[int, dt.date | None]]  # epoch -> (lines it sealed, night it was erased)


def read_quarantine(con: Con, day: dt.date, file_name: str | None = None) -> QuarantinedLines:
    """The quarantine rows of ``day`` (of one drop file if named), in file and line order.

    A line whose key was erased (retention) opens to None and is counted under its epoch."""
    cursor = con.execute(
        """
        SELECT file_name, stage, line_no, reason, detail, contact_open(original_line) AS original_line,
               CASE WHEN original_line IS NOT NULL THEN contact_epoch(original_line) END AS epoch
        FROM quarantine
        WHERE logical_date = $d AND ($f IS NULL OR file_name = $f)
        ORDER BY file_name, line_no, stage
        """,
        {"d": day, "f": file_name},
    )
    names = [d[0] for d in cursor.description or ()]
    listed = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    gone: dict[str, int] = {}
    for row in listed:
        epoch = row.pop("epoch")
        if epoch is not None and row["original_line"] is None:
            gone[str(epoch)] = gone.get(str(epoch), 0) + 1
    return QuarantinedLines(listed, {e: (n, _erased_on(con, e)) for e, n in gone.items()})


def _erased_on(con: Con, epoch: str) -> dt.date | None:
    row = con.execute("SELECT erased_logical FROM contact_keys WHERE epoch = $e", {"e": epoch}).fetchone()
    return row[0] if row else None


def export_quarantine(con: Con, day: dt.date, out: Path, file_name: str | None = None) -> QuarantinedLines:
    """Write the refused lines of ``day``'s drops (ingest stage; one file if named) to ``out`` as
    Parquet (:data:`EXPORT_SCHEMA`), in clear, created 0600 and never over an existing file.

    The lines are exactly as read (records joined across lines with ``\\n``): fix them, put the
    corrected drop in the inbox under a new name and run the night again."""
    lines = read_quarantine(con, day, file_name)
    rows = [r for r in lines.rows if r["stage"] == "ingest"]
    which = f"{file_name} of {day}" if file_name else f"the drops of {day}"
    if not rows:
        raise QuarantineExportError(
            f"no line of {which} is quarantined at ingest; see the night's files: recycle status --date {day}"
        )
    if all(r["original_line"] is None for r in rows):
        raise QuarantineExportError(
            f"the {len(rows)} quarantined line(s) of {which} were erased with their key "
            f"({', '.join(sorted(lines.erased))}) after contact_retention_days; ask the BSS to export them again"
        )
    table = pa.Table.from_pylist(rows, schema=pa.schema([*EXPORT_SCHEMA, ("stage", pa.string())]))
    buf = io.BytesIO()
    pq.write_table(table.select(EXPORT_SCHEMA.names).cast(EXPORT_SCHEMA), buf, compression="zstd")
    try:
        create_private(out, buf.getvalue())
    except FileExistsError:
        raise QuarantineExportError(
            f"{out} exists; it is not overwritten (it may be another night's export): "
            f"name another file, e.g. recycle quarantine export --date {day} --out {out.with_suffix('')}-2.parquet"
        ) from None
    return lines
