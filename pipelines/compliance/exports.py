"""Monthly regulator exports: the FCC Reassigned Numbers Database disconnect report (US) and
the 二次号码焕新 (refresh before reissue) list of released numbers (China).

Formats are documented in ``schemas/exports/``. Both are built set-based in DuckDB and
written with Arrow; neither reads the wall clock, so the same state gives the same bytes.

FCC RND reports are *incremental*: a disconnection is reported once, in the first monthly
report whose cutoff falls on or after the day it became permanent (its freeze ended without a
restore, or the number was sold again: :func:`permanent_disconnections_sql`). What was
reported is kept in the state file (``fcc_reported``, one row per disconnection, and
``fcc_reports``, one row per month), so a disconnection learnt late goes into the next month's
report with its own date, and exporting a month again rewrites the same files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.db import Con, transaction
from pipelines.errors import TerminalError
from pipelines.layout import atomic_write_bytes

__all__ = [
    "CN_COLUMNS",
    "FCC_COLUMNS",
    "PERMANENT_END_REASONS",
    "CnExport",
    "ExportFile",
    "FccExport",
    "export_cn_renewal",
    "export_fcc_disconnects",
    "month_bounds",
    "parse_month",
    "permanent_disconnections_sql",
    "state_through",
]

# How a tenure that may end for good ended: cancelled, a 双停 suspension that ran its course, or
# closed by a reissue (even an illegal one: the number did change hands). Ports are not
# disconnections. A cancel or suspension is permanent only once no restore can undo it
# (permanent_disconnections_sql).
PERMANENT_END_REASONS = ("cancel", "suspend", "reissue")
END_REASONS_SQL = "(" + ", ".join(f"'{r}'" for r in PERMANENT_END_REASONS) + ")"

FCC_MAX_ROWS = 1_000_000  # RND: a file of more than a million rows is split into batches
FCC_COLUMNS = ("company_id", "batch_id", "telephone_number", "disconnect_date")
CN_COLUMNS = (
    "msisdn",
    "region",
    "disconnected_on",
    "released_on",
    "effective_reminders",
    "exception",
    "reissued_on",
)
_COMPANY_ID = re.compile(r"[A-Za-z0-9]{3,10}")  # RND: 3 to 10 letters or digits
# US NANP in E.164: +1, NPA [2-9]XX, NXX [2-9]XX, line XXXX.
_NANP_SQL = r"regexp_full_match(msisdn, '\+1[2-9][0-9]{2}[2-9][0-9]{6}')"


def parse_month(text: str) -> dt.date:
    """``YYYY-MM`` -> the first day of that month."""
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise TerminalError(f"{text!r} is not a month YYYY-MM") from None


def month_bounds(month: dt.date) -> tuple[dt.date, dt.date]:
    """(first day, last day) of the month of ``month``."""
    first = month.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return first, following - dt.timedelta(days=1)


def state_through(con: Con) -> dt.date | None:
    """The last logical date the nightly run has processed into this state file (or None)."""
    row = con.execute(
        """
        SELECT greatest((SELECT max(logical_date) FROM files),
                        (SELECT max(logical_date) FROM state_history),
                        (SELECT max(scheduled_logical) FROM reminders),
                        (SELECT max(logical_date) FROM ledger_events))
        """
    ).fetchone()
    return row[0] if row else None


def arrow_query(con: Con, sql: str, params: Any = None) -> pa.Table:
    """The result of ``sql`` as an Arrow table (columnar: no per-row Python objects)."""
    # DuckDB 2 refuses con.sql() while an execute() result is unread (a fetchone() leaves it
    # open); run that to its end first, rather than paying an extra copy of the rows.
    con.complete()
    return con.sql(sql, params=params).to_arrow_table()


@dataclass(frozen=True)
class ExportFile:
    name: str
    rows: int
    sha256: str
    bytes: int
    batch_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "rows": self.rows,
            "sha256": self.sha256,
            "bytes": self.bytes,
        }
        if self.batch_id is not None:
            body["batch_id"] = self.batch_id
        return body


def _csv(table: pa.Table, header: tuple[str, ...]) -> bytes:
    # Values are digits, dates, codes and booleans: nothing needs quoting, so none is used
    # (pyarrow would refuse a value that did). Header written by hand: pyarrow quotes it.
    # Not neutralised against CSV injection (pipelines.spreadsheet), on purpose: both files are
    # machine formats - the FCC RND upload and the CN industry platform's import - whose
    # parsers would take a leading ' as part of the value, and the CN file's E.164 numbers all
    # start with "+". No free text reaches them: numbers are validated E.164, regions are
    # configured province codes, the rest dates, counts and booleans.
    buf = io.BytesIO()
    buf.write((",".join(header) + "\n").encode())
    if table.num_rows:
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return buf.getvalue()


def _write(out_dir: Path, name: str, data: bytes, rows: int, batch_id: str | None = None) -> ExportFile:
    atomic_write_bytes(out_dir / name, data)
    return ExportFile(name, rows, hashlib.sha256(data).hexdigest(), len(data), batch_id)


def _json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --------------------------------------------------------------------------- FCC RND


@dataclass(frozen=True)
class FccExport:
    company_id: str
    month: dt.date  # first day of the report month
    cutoff: dt.date
    numbers: int  # rows reported (one per 10-digit number)
    disconnections: int  # US disconnections covered (a number disconnected twice is one row)
    skipped_non_nanp: int
    files: tuple[ExportFile, ...]  # data files, or the single no-disconnects confirmation
    manifest: Path
    new: bool  # False: the month had been exported before and was rewritten unchanged

    @property
    def no_disconnects(self) -> bool:
        return self.numbers == 0


def permanent_disconnections_sql(unreported: bool = False) -> str:
    """SQL (a SELECT): every permanent disconnection on record, as ``tenure_id, msisdn,
    disconnected_on`` (the tenure's end: the cancel date, or the first day of a 双停
    suspension) and ``permanent_on``, the first day no restore could undo it.

    A restore is refused from the day the freeze ends (DESIGN "Lifecycle"), so a disconnection
    is permanent from the earliest of: the freeze end of the number's current episode
    (``number_state``, frozen/held/available, the tenure still ended), the day the release
    gate took the number out of its freeze (``state_history``: frozen → held/available; the
    number may have been sold since), the day it was sold again (``reissues``; a tenure closed
    by a reissue is permanent that day). A cancel or 双停 restored within its freeze reopened
    its tenure (no end): it never appears. ``unreported``: only those not in ``fcc_reported``.
    """
    skip = "ANTI JOIN fcc_reported r ON r.tenure_id = t.tenure_id" if unreported else ""
    return f"""
        WITH ended AS (
            SELECT t.tenure_id, t.msisdn, t.tenure_end FROM tenures t {skip}
            WHERE t.tenure_end IS NOT NULL AND t.end_reason IN {END_REASONS_SQL}
        ), past AS (
            SELECT s.tenure_id, s.freeze_ends AS on_date FROM number_state s
            WHERE s.state IN ('frozen', 'held', 'available') AND s.freeze_ends IS NOT NULL
            UNION ALL
            SELECT h.tenure_id, h.on_date FROM state_history h
            WHERE h.from_state = 'frozen' AND h.to_state IN ('held', 'available')
            UNION ALL
            SELECT i.prior_tenure_id, i.reissue_date FROM reissues i
            WHERE i.prior_tenure_id IS NOT NULL
        )
        SELECT e.tenure_id, e.msisdn, e.tenure_end AS disconnected_on,
               min(p.on_date) AS permanent_on
        FROM ended e JOIN past p ON p.tenure_id = e.tenure_id AND p.on_date >= e.tenure_end
        GROUP BY ALL
    """


def _record_fcc_month(con: Con, month: dt.date, company_id: str, cutoff: dt.date, max_rows: int) -> None:
    """Take every unreported disconnection that became permanent by ``cutoff`` into the
    report of ``month``."""
    p = {"m": month, "c": cutoff}
    with transaction(con):
        con.execute(
            f"""
            INSERT INTO fcc_reported
                (tenure_id, msisdn, disconnected_on, report_month, nanp, permanent_on)
            SELECT d.tenure_id, d.msisdn, d.disconnected_on, $m, {_NANP_SQL}, d.permanent_on
            FROM ({permanent_disconnections_sql(unreported=True)}) d
            WHERE d.permanent_on <= $c
            """,
            p,
        )
        row = con.execute(
            """
            SELECT count(DISTINCT msisdn) FILTER (WHERE nanp), count(*) FILTER (WHERE nanp),
                   count(*) FILTER (WHERE NOT nanp)
            FROM fcc_reported WHERE report_month = $m
            """,
            {"m": month},
        ).fetchone()
        numbers, disconnections, skipped = (int(v) for v in row) if row else (0, 0, 0)
        con.execute(
            "INSERT INTO fcc_reports VALUES (?, ?, ?, ?, ?, ?, ?)",
            [month, company_id, cutoff, max_rows, numbers, disconnections, skipped],
        )


def export_fcc_disconnects(
    con: Con,
    month: dt.date,
    out_dir: Path,
    company_id: str,
    *,
    max_rows: int = FCC_MAX_ROWS,
) -> FccExport:
    """Write the FCC RND monthly disconnect report of ``month`` into ``out_dir``.

    One row per US (NANP) number: the company id, the batch id of the file, the 10-digit
    number and its most recent permanent disconnection date, for every disconnection not
    reported before that became permanent (:func:`permanent_disconnections_sql`) by the
    cutoff (the month's last day, or the last night the state has processed if that is
    earlier: the rest goes into next month's report, as the RND allows). Nothing a restore
    can still undo is reported, so nothing reported ever needs retracting. Other numbers are skipped and counted. At most ``max_rows`` rows per
    file; each file is a batch ``<YYYYMM>-<NNN>``; a manifest lists them; a month without
    disconnections gets a confirmation file instead. Exporting a month again rewrites the
    same bytes. Call it outside a transaction (it commits what it takes into the report).
    """
    if not _COMPANY_ID.fullmatch(company_id):
        raise TerminalError(
            f"company id {company_id!r} is not 3-10 letters or digits; use the Company ID the "
            "RND Administrator registered for you (--company-id)"
        )
    if max_rows < 1:
        raise TerminalError(f"max_rows must be at least 1, got {max_rows}")
    first, last = month_bounds(month)
    known = con.execute(
        "SELECT company_id, cutoff, max_rows FROM fcc_reports WHERE report_month = ?", [first]
    ).fetchone()
    if known is None:
        _open_fcc_month(con, first, last, company_id, max_rows)
    else:
        max_rows = _known_fcc_max_rows(first, company_id, max_rows, str(known[0]), int(known[2]))
    head = con.execute(
        "SELECT cutoff, numbers, disconnections, skipped_non_nanp FROM fcc_reports WHERE report_month = ?",
        [first],
    ).fetchone()
    assert head is not None
    cutoff, numbers, disconnections, skipped = head[0], int(head[1]), int(head[2]), int(head[3])

    stem = f"rnd-disconnects_{company_id}_{first:%Y%m}"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _write_fcc_files(con, first, company_id, max_rows, out_dir, stem)
    if not files:
        confirmation = (
            "company_id,report_month,cutoff,confirmation\n"
            f"{company_id},{first:%Y-%m},{cutoff},no permanently disconnected numbers to report\n"
        ).encode()
        files.append(_write(out_dir, f"{stem}_no-disconnects.csv", confirmation, 0))
    manifest = out_dir / f"{stem}.manifest.json"
    result = FccExport(
        company_id, first, cutoff, numbers, disconnections, skipped, tuple(files), manifest, known is None
    )
    atomic_write_bytes(manifest, _json(_fcc_manifest(result, max_rows)))
    return result


def _open_fcc_month(con: Con, first: dt.date, last: dt.date, company_id: str, max_rows: int) -> None:
    """Record a month reported for the first time: it must follow every report made, and the
    state must have reached it."""
    later = con.execute(
        "SELECT max(report_month) FROM fcc_reports WHERE report_month > ?", [first]
    ).fetchone()
    if later and later[0] is not None:
        raise TerminalError(
            f"the RND report of {later[0]:%Y-%m} exists already; reports are incremental and "
            f"go forward, so {first:%Y-%m} cannot be reported after it (its disconnections "
            "are in the later report)"
        )
    through = state_through(con)
    if through is None or through < first:
        raise TerminalError(
            f"the state has processed nights only up to {through or 'none'}; run the nightly "
            f"pipeline into {first:%Y-%m} before exporting its RND report"
        )
    _record_fcc_month(con, first, company_id, min(last, through), max_rows)


def _known_fcc_max_rows(
    first: dt.date, company_id: str, max_rows: int, known_company: str, known_max_rows: int
) -> int:
    """The split of a month reported before: it is rewritten exactly as it was made."""
    if known_company != company_id:
        raise TerminalError(
            f"the RND report of {first:%Y-%m} was made for company id {known_company}, not "
            f"{company_id}; one state file reports for one company"
        )
    if known_max_rows != max_rows and max_rows != FCC_MAX_ROWS:
        raise TerminalError(
            f"the RND report of {first:%Y-%m} was split at {known_max_rows} rows per file; a "
            "report is rewritten exactly as it was made"
        )
    return known_max_rows


def _write_fcc_files(
    con: Con, first: dt.date, company_id: str, max_rows: int, out_dir: Path, stem: str
) -> list[ExportFile]:
    """The month's rows, ``max_rows`` per file, each file a batch ``<YYYYMM>-<NNN>``."""
    table = arrow_query(
        con,
        """
        SELECT substr(msisdn, 3) AS telephone_number,
               strftime(max(disconnected_on), '%Y-%m-%d') AS disconnect_date
        FROM fcc_reported WHERE report_month = ? AND nanp
        GROUP BY msisdn ORDER BY telephone_number
        """,
        [first],
    )
    files: list[ExportFile] = []
    for part, start in enumerate(range(0, table.num_rows, max_rows), start=1):
        chunk = table.slice(start, max_rows)
        batch_id = f"{first:%Y%m}-{part:03d}"
        body = pa.table(
            {
                "company_id": pa.repeat(pa.scalar(company_id, pa.string()), chunk.num_rows),
                "batch_id": pa.repeat(pa.scalar(batch_id, pa.string()), chunk.num_rows),
                "telephone_number": chunk.column("telephone_number"),
                "disconnect_date": chunk.column("disconnect_date"),
            }
        )
        files.append(
            _write(out_dir, f"{stem}_{batch_id}.csv", _csv(body, FCC_COLUMNS), chunk.num_rows, batch_id)
        )
    return files


def _fcc_manifest(result: FccExport, max_rows: int) -> dict[str, Any]:
    return {
        "format": "number-recycling/fcc-rnd-disconnects/v1",
        "company_id": result.company_id,
        "report_month": f"{result.month:%Y-%m}",
        "cutoff": result.cutoff.isoformat(),
        "columns": list(FCC_COLUMNS),
        "numbers": result.numbers,
        "disconnections": result.disconnections,
        "skipped_non_nanp": result.skipped_non_nanp,
        "max_rows_per_file": max_rows,
        "no_disconnects": result.numbers == 0,
        "files": [f.as_dict() for f in result.files],
    }


# --------------------------------------------------------------------------- China 二次号码焕新


@dataclass(frozen=True)
class CnExport:
    month: dt.date
    rows: int
    with_exception: int
    reissued: int
    state_through: dt.date | None
    complete: bool  # the state has processed every night of the month
    csv: ExportFile
    manifest: Path


def export_cn_renewal(con: Con, month: dt.date, out_dir: Path) -> CnExport:
    """Write ``cn-renewal_<YYYY-MM>.csv``: every number released in ``month``, for the
    二次号码焕新 process, with full E.164 numbers (the carrier submits it to the industry
    platform, which needs them), and a manifest.

    ``reissued_on`` is the first regular reissue after the release known to the state when
    exported; a month exported before the state covers all its nights is marked incomplete.
    """
    first, last = month_bounds(month)
    table = arrow_query(
        con,
        """
        SELECT r.msisdn, r.region, r.disconnected_on, r.released_on, r.effective_reminders,
               r.exception,
               (SELECT min(i.reissue_date) FROM reissues i
                WHERE i.prior_tenure_id = r.tenure_id AND NOT i.violation
                  AND i.reissue_date >= r.released_on) AS reissued_on
        FROM releases r
        WHERE r.released_on BETWEEN $f AND $l
        ORDER BY r.released_on, r.msisdn, r.tenure_id
        """,
        {"f": first, "l": last},
    )
    through = state_through(con)
    complete = through is not None and through >= last
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"cn-renewal_{first:%Y-%m}"
    csv_file = _write(out_dir, f"{stem}.csv", _csv(table, CN_COLUMNS), table.num_rows)
    with_exception = int(pc.sum(table.column("exception")).as_py() or 0)
    reissued = table.num_rows - table.column("reissued_on").null_count
    manifest = out_dir / f"{stem}.manifest.json"
    atomic_write_bytes(
        manifest,
        _json(
            {
                "format": "number-recycling/cn-renewal/v1",
                "month": f"{first:%Y-%m}",
                "state_through": through.isoformat() if through else None,
                "complete": complete,
                "columns": list(CN_COLUMNS),
                "rows": table.num_rows,
                "with_exception": with_exception,
                "reissued": reissued,
                "files": [csv_file.as_dict()],
            }
        ),
    )
    return CnExport(first, table.num_rows, with_exception, reissued, through, complete, csv_file, manifest)
