"""Drop-file ingestion: every row of every file in a day's inbox ends accepted or in quarantine.

``ingest_day`` takes the files of ``<data>/inbox/<D>/`` in name order; the kind comes from
the name prefix (``schemas/drops/<kind>.json``). Per file, in one DuckDB transaction: the
accepted rows into the kind's table, the refused ones into ``quarantine`` (stage ``ingest``,
reason code, masked detail, the original line sealed) and the file into the ``files`` registry — so a crash
leaves nothing of the file and a rerun ingests it; a file already ingested (same SHA-256) is
skipped, which makes rerunning a day a no-op. ``rows_in == accepted + quarantined`` is checked
for every file before it is committed.

A CSV file goes through DuckDB as: its lines (``pipelines/ingest/read.py``) -> one scan for
repeated lines -> the **fast path**: the plain lines (no quote, no space, the header's number
of fields, not repeated) are split, typed and judged by the set-based rules
(``pipelines/ingest/spec.py``) and those that pass every rule with no warning are inserted
straight into the kind's table, nothing materialised on the way -> the **full checks** judge
the rest (the file's lines missing from the table, a few per cent) into a small temp table,
with the reason of every refusal -> their accepted rows are inserted. Both paths are the same
SQL judgement over differently prepared lines (``checked_select``); a test holds the tables
and reports equal with the fast path on and off. A Parquet drop takes the full checks only.
Numbers: every phone-number class is decided once (``pipelines/ingest/phone_classes.py``, cached
in ``<data>/cache``), odd values one by one. The file is hashed in a helper thread while
DuckDB reads its lines. The Great Expectations suite (``pipelines/ingest/gx.py``, a second
judge) then sees an even sample of the stored rows.
Logs carry counts, never a number or contact.
"""

from __future__ import annotations

import datetime as dt
import logging
import stat
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from pipelines import db
from pipelines.config import Settings
from pipelines.db import open_state, sql_str
from pipelines.errors import DataContractError, DuplicateFileNameError, TerminalError
from pipelines.ingest import gx as gx_gate
from pipelines.ingest import phone_classes, read
from pipelines.ingest.phone_classes import NumberLookup
from pipelines.ingest.spec import (
    CHECKED_TABLE,
    DUPLICATES_TABLE,
    GX_REASON,
    DropSpec,
    checks_sql,
    day_param,
    drop_specs,
    duplicates_sql,
    fast_insert_sql,
    insert_accepted_sql,
    number_columns,
    province_codes,
    spec_for_file,
    staged_select,
    warnings_sql,
)
from pipelines.layout import Layout

log = logging.getLogger(__name__)

FileStatus = Literal["ingested", "skipped_duplicate", "failed"]
_GX_FAILED = "_ingest_gx_failed"
GX_SAMPLE_ROWS = 20_000  # a bigger file's stored rows meet GX as a sample first (_gx_validate)
FAST_PATH = True  # plain lines that pass every rule go straight to the table (tests switch it off)
_FAST_OFF = "filter_pushdown,build_side_probe_side"  # DuckDB optimisers that slow the fast insert
_REST = "_ingest_rest"  # the lines the fast path left to the full checks
_QUARANTINE_SCHEMA = pa.schema(
    [
        ("line_no", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("original_line", pa.string()),
    ]
)


class _Steps:
    """Wall and CPU time per step of one file, for the DEBUG log (where a slow night went)."""

    def __init__(self) -> None:
        self._last = (time.perf_counter(), time.process_time())
        self.spent: dict[str, tuple[float, float]] = {}

    def done(self, step: str) -> None:
        now = (time.perf_counter(), time.process_time())
        wall, cpu = self.spent.get(step, (0.0, 0.0))
        self.spent[step] = (wall + now[0] - self._last[0], cpu + now[1] - self._last[1])
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{k} {w:.2f}s (cpu {c:.2f}s)" for k, (w, c) in self.spent.items())


@dataclass(frozen=True)
class FileReport:
    """What became of one drop file."""

    name: str
    kind: str  # lifecycle | reissue | subscribers | receipts | unknown
    sha256: str
    status: FileStatus
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    quarantined_by_reason: Mapping[str, int] = field(default_factory=dict)
    encoding: str | None = None  # utf-8 | utf-8-sig | gbk (other lines quarantined); None: Parquet
    delimiter: str | None = None  # , or |; None for Parquet
    gx_success: bool | None = None  # None when GX did not run (file skipped or failed)
    gx_rows: int = 0  # accepted rows GX validated (a sample of a big file when it found nothing)
    warnings: Mapping[str, int] = field(default_factory=dict)  # e.g. contact_phone_dropped
    error: str | None = None  # why a failed file failed, and what to do
    ignored_columns: tuple[str, ...] = ()  # header columns no contract names (warned once per file)


@dataclass(frozen=True)
class IngestReport:
    day: dt.date
    files: tuple[FileReport, ...]

    @property
    def failed(self) -> tuple[FileReport, ...]:
        return tuple(f for f in self.files if f.status == "failed")

    @property
    def rows_in(self) -> int:
        return sum(f.rows_in for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)


def ingest_day(
    settings: Settings, day: dt.date, con: duckdb.DuckDBPyConnection | None = None
) -> IngestReport:
    """Ingest every file of ``Layout(settings.data_dir).inbox(day)``, in name order.

    Opens the state file itself when ``con`` is None. A file that breaks its contract is
    reported ``failed`` and the run goes on; any other error rolls that file back and
    propagates (rerunning the day is safe).
    """
    layout = Layout(settings.data_dir)
    if con is None:
        with open_state(layout.state_db) as own:
            return _ingest_inbox(settings, layout, day, own)
    return _ingest_inbox(settings, layout, day, con)


def _ingest_inbox(
    settings: Settings, layout: Layout, day: dt.date, con: duckdb.DuckDBPyConnection
) -> IngestReport:
    inbox = layout.inbox(day)
    if not inbox.is_dir():
        log.warning("ingest %s: no inbox folder %s; nothing to ingest", day, inbox)
        return IngestReport(day=day, files=())
    # Dot files are uploads still in flight (write to .name, then rename).
    paths = sorted(p for p in inbox.iterdir() if not p.name.startswith("."))
    regions = sorted(province_codes() | {k.upper() for k in settings.policies if k != "default"})
    reports = tuple(
        _refuse_entry(con, day, path) or _ingest_file(settings, layout, day, con, path, regions)
        for path in paths
    )
    report = IngestReport(day=day, files=reports)
    log.info(
        "ingest %s: %d file(s), %d failed; rows in %d, accepted %d, quarantined %d",
        day,
        len(reports),
        len(report.failed),
        report.rows_in,
        report.accepted,
        report.quarantined,
    )
    return report


def _ingest_file(
    settings: Settings,
    layout: Layout,
    day: dt.date,
    con: duckdb.DuckDBPyConnection,
    path: Path,
    regions: list[str],
) -> FileReport:
    name = path.name
    spec = spec_for_file(name)
    kind = spec.kind if spec else "unknown"
    steps = _Steps()
    # A helper thread hashes the file (hashlib lets go of the GIL) while DuckDB reads its lines.
    with _staging(con), ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest") as helper:
        sniffing = helper.submit(read.sniff, path)
        # The lines are read while the file is hashed; if the hash says "skip", they are dropped.
        ahead = read.read_ahead(con, path) if spec is not None and _is_csv(name) else None
        try:
            facts = sniffing.result()
        except OSError as exc:
            report = FileReport(
                name=name,
                kind=kind,
                sha256="",
                status="failed",
                error=f"{name}: cannot read the file ({exc.strerror or exc}); fix its permissions or deliver it again",
            )
            _log_file(day, report)
            return report
        if spec is None:
            prefixes = ", ".join(s.file_prefix for s in drop_specs().values())
            return _fail(
                con,
                day,
                name,
                kind,
                facts.sha256,
                DataContractError(
                    f"{name}: unknown kind of drop file; names start with {prefixes}. Rename it, or "
                    "remove it from the inbox if it is not a drop"
                ),
            )
        settled = _skip_if_ingested(con, day, name, kind, facts.sha256) or _refuse_name_clash(
            con, day, path, kind, facts.sha256
        )
        if settled is not None:
            return settled

        work_dir = layout.run_dir(day) / "ingest-tmp"
        try:
            if _is_csv(name):
                staged = read.stage_csv(con, path, facts, spec, work_dir, ahead)
            else:
                staged = read.stage_parquet(con, path, spec)
            steps.done("read")
            file = _FileLoad(con, settings, layout, day, name, spec, facts.sha256, staged, regions)
            return _load(file, steps)
        except DataContractError as exc:
            return _fail(con, day, name, kind, facts.sha256, exc)
        except duckdb.Error as exc:
            if _is_csv(name):
                raise  # DuckDB reads a CSV drop's lines only after checking them: a bug, not the file
            return _fail(con, day, name, kind, facts.sha256, _unreadable_parquet(name, exc))


def _unreadable_parquet(name: str, exc: duckdb.Error) -> DataContractError:
    """A Parquet drop DuckDB could not read to the end: its footer can be sound and a page broken,
    found only when the rows are read, inside the file's transaction (rolled back by then)."""
    reason = str(exc).splitlines()[0][:300]
    return DataContractError(f"{name}: not a readable Parquet file ({reason}); deliver the export again")


MAX_NAME_BYTES = 200  # the quarantine, GX result and transcoding files append up to 8 bytes; 255 is the limit


def _refuse_entry(con: duckdb.DuckDBPyConnection, day: dt.date, path: Path) -> FileReport | None:
    """The failed report of an inbox entry that is not read at all; None for a drop to read.

    A symbolic link (it may point anywhere: its target's content would land in the state and
    the quarantine), a fifo, a device or a directory is refused unread (``lstat``, never
    followed), and so is a name too long to derive the files a drop leaves behind.
    """
    name = path.name
    spec = spec_for_file(name)
    kind = spec.kind if spec else "unknown"
    try:
        what = _not_regular(path.lstat().st_mode)
    except OSError:
        return None  # gone meanwhile: reading it reports why
    if what is not None:
        error = (
            f"{path}: {what}, not a regular file; refused unread. Put the drop itself in the inbox "
            f"(not a link to it) and rerun the day (`recycle run --date {day}`)"
        )
    elif len(name.encode()) > MAX_NAME_BYTES:
        error = (
            f"{name[:60]}…: a file name of {len(name.encode())} bytes (more than {MAX_NAME_BYTES}); "
            f"refused unread. Rename it in {path.parent} and rerun the day (`recycle run --date {day}`)"
        )
    else:
        return None
    return _fail(con, day, name, kind, "", DataContractError(error))


def _not_regular(mode: int) -> str | None:
    """What an inbox entry is when it is not a regular file (by ``lstat``), else None."""
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISLNK: "a symbolic link",
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a fifo (named pipe)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return next((what for test, what in kinds.items() if test(mode)), "not a file")


def _skip_if_ingested(
    con: duckdb.DuckDBPyConnection, day: dt.date, name: str, kind: str, sha256: str
) -> FileReport | None:
    """The report of a file whose content was ingested before (under any name), else None."""
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open and blocks the connection.
    earlier = next(
        iter(
            con.execute(
                "SELECT file_name, logical_date FROM files WHERE sha256 = ? AND status = 'ingested' "
                "ORDER BY logical_date, file_name LIMIT 1",
                [sha256],
            ).fetchall()
        ),
        None,
    )
    if earlier is None:
        return None
    report = FileReport(name=name, kind=kind, sha256=sha256, status="skipped_duplicate")
    log.info(
        "ingest %s %s: skipped, same content already ingested as %s on %s",
        day,
        name,
        earlier[0],
        earlier[1],
    )
    return report


def _refuse_name_clash(
    con: duckdb.DuckDBPyConnection, day: dt.date, path: Path, kind: str, sha256: str
) -> FileReport | None:
    """Fail a file named like a different file ingested before; None when the name is new."""
    name = path.name
    clash = next(
        iter(
            con.execute(
                "SELECT sha256, logical_date FROM files WHERE file_name = ? AND status = 'ingested' LIMIT 1",
                [name],
            ).fetchall()
        ),
        None,
    )
    if clash is None:
        return None
    stem, dot, suffix = name.partition(".")
    return _fail(
        con,
        day,
        name,
        kind,
        sha256,
        DuplicateFileNameError(
            f"{name}: a different file of this name was already ingested (logical date {clash[1]}, "
            f"sha256 {clash[0][:12]}…, this one {sha256[:12]}…). An ingested file is never "
            f"replaced: the rows of the earlier file stay as ingested. To ingest this one as well, "
            f"rename it in {path.parent}, e.g. to {stem}_v2{dot}{suffix}, and rerun the "
            f"day (`recycle run --date {day}`)"
        ),
    )


def _is_csv(name: str) -> bool:
    return not name.lower().endswith(".parquet")


@contextmanager
def _staging(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Temp tables and Arrow views of one file, dropped whatever happens."""
    try:
        yield
    finally:
        read.release(con)
        for table in (CHECKED_TABLE, DUPLICATES_TABLE, _GX_FAILED, _REST):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        phone_classes.drop_tables(con)


@dataclass(frozen=True)
class _FileLoad:
    """One staged file on its way into the tables: what every phase of :func:`_load` reads."""

    con: duckdb.DuckDBPyConnection
    settings: Settings
    layout: Layout
    day: dt.date
    name: str
    spec: DropSpec
    sha256: str
    staged: read.Staged
    regions: list[str]

    @property
    def params(self) -> dict[str, Any]:
        return day_param(self.day)


@dataclass(frozen=True)
class _Stored:
    """What one file's transaction wrote."""

    fast: int  # rows the fast path inserted
    accepted: int
    quarantined: int
    by_reason: dict[str, int]
    warnings: dict[str, int]
    gx: gx_gate.GxOutcome
    numbers: NumberLookup


def _load(file: _FileLoad, steps: _Steps) -> FileReport:
    con, spec, staged = file.con, file.spec, file.staged
    numbers = NumberLookup(classes=0, singles=0, fallback_classes=())
    if spec.number_columns:
        classes = phone_classes.class_table(file.settings.default_region, file.layout.cache_dir)
        numbers = phone_classes.load_classes(con, classes)
    con.execute(duplicates_sql(staged.lines_sql))
    steps.done("duplicates")

    # Options are not transactional, and an aborted transaction refuses SET until the ROLLBACK:
    # what the fast insert changes is put back after it, or after the ROLLBACK if it fails.
    options = db.current_options(con, "preserve_insertion_order", "disabled_optimizers")
    try:
        with db.transaction(con):
            stored = _store(file, numbers, options, steps)
    except BaseException:
        db.set_options(con, options)
        raise
    steps.done("commit")
    log.debug("ingest %s %s: %s", file.day, file.name, steps)

    report = FileReport(
        name=file.name,
        kind=spec.kind,
        sha256=file.sha256,
        status="ingested",
        rows_in=staged.rows_in,
        accepted=stored.accepted,
        quarantined=stored.quarantined,
        quarantined_by_reason=stored.by_reason,
        encoding=staged.encoding,
        delimiter=staged.delimiter,
        gx_success=stored.gx.success,
        gx_rows=stored.gx.validated_rows,
        warnings=stored.warnings,
        ignored_columns=staged.ignored_columns,
    )
    if staged.ignored_columns:
        log.warning(
            "ingest %s %s: ignored column(s) no %s contract names: %s",
            file.day,
            file.name,
            spec.kind,
            ", ".join(staged.ignored_columns),
        )
    _log_file(
        file.day,
        report,
        f"read by {staged.reader}, {stored.fast} row(s) by the fast path, number classes "
        f"{stored.numbers.classes}, single numbers {stored.numbers.singles}",
    )
    return report


def _store(file: _FileLoad, numbers: NumberLookup, options: Mapping[str, object], steps: _Steps) -> _Stored:
    """Inside the file's transaction: accepted rows, quarantine, the registry entry."""
    con, staged = file.con, file.staged
    fast, rest_sql = _fast_insert(file, numbers, options)
    steps.done("fast insert")
    inserted, warnings, numbers = _check_rest(file, rest_sql, numbers, fast)
    accepted = fast + inserted
    steps.done("checks")
    gx = _gx_judge(file, accepted)
    steps.done("gx")
    if gx.failed_rows:
        accepted -= _remove_gx_failed(con, file.spec, file.sha256, gx)
    quarantine = _quarantine_rows(con, staged, file.params, bool(gx.failed_rows))
    quarantined = _insert_quarantine(file, quarantine)
    if staged.rows_in != accepted + quarantined:
        raise TerminalError(
            f"{file.name}: {staged.rows_in} rows in but {accepted} accepted + {quarantined} quarantined; "
            "nothing of the file was kept. This is a bug: keep the file and report it"
        )
    _register(
        con,
        file.day,
        file.name,
        file.spec.kind,
        file.sha256,
        "ingested",
        staged.rows_in,
        accepted,
        quarantined,
        staged.encoding,
        staged.delimiter,
        None,
    )
    return _Stored(fast, accepted, quarantined, _reason_counts(quarantine), warnings, gx, numbers)


def _fast_insert(file: _FileLoad, numbers: NumberLookup, options: Mapping[str, object]) -> tuple[int, str]:
    """Insert the plain lines that pass every rule; (rows inserted, the staged SELECT of the rest)."""
    con, spec, staged, region = file.con, file.spec, file.staged, file.settings.default_region
    fast_sql = staged.fast_sql(DUPLICATES_TABLE) if FAST_PATH else None
    if fast_sql is None:
        return 0, staged.select_sql
    # The plain lines that pass every rule go straight into the table; the full checks
    # then judge only the rest, found as the lines of the file missing from the table.
    db.set_options(
        con,
        {"preserve_insertion_order": False, "disabled_optimizers": _known_optimizers(con, _FAST_OFF)},
    )
    fast = _count(
        con,
        fast_insert_sql(
            spec,
            staged_select(spec, region, fast_sql),
            file.regions,
            region,
            numbers,
            file.sha256,
            file.settings.timezone,
        ),
        file.params,
    )
    db.set_options(con, options)
    # A copy of those lines (a few per cent), so that no filter of the checks is
    # pushed down onto a scan of every line.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_REST} AS
        SELECT line_no, line, err FROM {read.LINES_VIEW}
        WHERE line_no > 1
          AND line_no NOT IN (SELECT line_no FROM {spec.table} WHERE file_sha256 = {sql_str(file.sha256)})
    """)
    return fast, staged.subset_sql(_REST)


def _check_rest(
    file: _FileLoad, rest_sql: str, numbers: NumberLookup, fast: int
) -> tuple[int, dict[str, int], NumberLookup]:
    """Judge the rows the fast path left into CHECKED_TABLE and insert the accepted ones.

    Returns the rows inserted, the warning counts and ``numbers`` with the single numbers added.
    """
    con, spec, region = file.con, file.spec, file.settings.default_region
    rest = staged_select(spec, region, rest_sql)
    if spec.number_columns:
        numbers = phone_classes.add_singles(con, f"({rest})", number_columns(spec), numbers, region)
    _run(con, checks_sql(spec, rest, file.regions, region, numbers, file.settings.timezone), file.params)
    warn_names = [w for w, _ in warnings_sql(spec)]
    counts = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE reason_key IS NULL)"
        + "".join(f', count(*) FILTER (WHERE reason_key IS NULL AND "w_{w}")' for w in warn_names)
        + f" FROM {CHECKED_TABLE}"
    ).fetchall()[0]
    if fast + counts[0] != file.staged.rows_in:
        raise TerminalError(
            f"{file.name}: checked {fast} + {counts[0]} rows of {file.staged.rows_in} data lines; this is a bug, keep the file"
        )
    warnings = {w: int(n) for w, n in zip(warn_names, counts[2:], strict=True) if n}
    inserted = _count(
        con, insert_accepted_sql(spec, file.sha256, CHECKED_TABLE, "reason_key IS NULL"), file.params
    )
    return inserted, warnings, numbers


def _gx_judge(file: _FileLoad, accepted: int) -> gx_gate.GxOutcome:
    """The GX suite's verdict on the file's stored rows."""
    # GX judges what was stored: an even sample of a big file first, every row if it
    # finds a bad one; the rows it refuses are taken out again before the commit.
    con, spec, name = file.con, file.spec, file.name
    gx_note = {"file": name, "accepted_rows": accepted}
    every = max(1, -(-accepted // GX_SAMPLE_ROWS))  # ceil; 1 means every row
    result_path = file.layout.run_dir(file.day) / "gx" / f"{name}.json"
    gx = _gx_validate(
        spec.kind, _gx_rows(con, spec, file.sha256, every), every, file.regions, result_path, name, gx_note
    )
    if gx.failed_rows and every > 1:  # the sample found a bad row: GX judges every stored row
        gx = _gx_validate(
            spec.kind, _gx_rows(con, spec, file.sha256, 1), 1, file.regions, result_path, name, gx_note
        )
    return gx


def _insert_quarantine(file: _FileLoad, quarantine: pa.Table) -> int:
    """Write the refused lines into ``quarantine`` (stage ``ingest``); how many.

    A refused line holds whatever the drop held - full numbers, e-mails, contact phones - so it
    is sealed like every contact (``contact_seal``, the live generation) and goes with that
    key (docs/drops.md, "Quarantine at rest"). The detail stays readable for the reports: the
    raw values it quotes are masked where it is made (``spec._detail_sql``); the line keeps them.
    It is the only copy: no quarantine file is written beside it (``recycle quarantine export``
    writes one on request)."""
    con = file.con
    con.register("_ingest_quarantine_arrow", quarantine)
    try:
        return _count(
            con,
            f"""
            INSERT INTO quarantine (file_name, file_sha256, kind, logical_date, line_no, stage, reason, detail, original_line)
            SELECT {sql_str(file.name)}, {sql_str(file.sha256)}, {sql_str(file.spec.kind)}, $day::DATE, line_no, 'ingest',
                   reason, detail, contact_seal(original_line)
            FROM _ingest_quarantine_arrow ORDER BY line_no
        """,
            file.params,
        )
    finally:
        con.unregister("_ingest_quarantine_arrow")


def _known_optimizers(con: duckdb.DuckDBPyConnection, names: str) -> str:
    """``names`` (comma-separated) less those this DuckDB does not have: another version may rename one."""
    known = {str(r[0]) for r in con.execute("SELECT name FROM duckdb_optimizers()").fetchall()}
    return ",".join(n for n in names.split(",") if n in known)


def _gx_rows(con: duckdb.DuckDBPyConnection, spec: DropSpec, sha256: str, every: int) -> pa.Table:
    """The stored rows of the file GX is shown: every ``every``-th line, an even, deterministic sample."""
    # GX judges the values as stored, contacts opened (they are sealed at rest).
    cols = ", ".join(
        f'contact_open("{c.name}") AS "{c.name}"' if c.type in {"email", "phone"} else f'"{c.name}"'
        for c in spec.columns
    )
    return con.sql(
        f"SELECT line_no, {cols} FROM {spec.table} WHERE file_sha256 = {sql_str(sha256)} "
        f"AND line_no % {every} = 0 ORDER BY line_no"
    ).to_arrow_table()


def _gx_validate(
    kind: str,
    rows: pa.Table,
    every: int,
    regions: list[str],
    result_path: Path,
    name: str,
    note: Mapping[str, object],
) -> gx_gate.GxOutcome:
    """Run the GX suite on ``rows`` (line_no and the stored columns); safe off the main thread.

    GX costs seconds per million rows in pandas (and half a second to start); a big file
    shows it an evenly spread sample of about GX_SAMPLE_ROWS of its stored rows first, and
    only if the sample has a failing row does GX see every stored row, so that each failing
    row is quarantined.
    """
    frame = rows.to_pandas(date_as_object=False).set_index("line_no")
    frame.index.name = None  # GX then reports failing rows as bare index values
    note = {
        **note,
        "validated_rows": len(frame),
        "sample": f"line_no % {every} = 0" if every > 1 else "all accepted rows",
    }
    return gx_gate.run_gate(kind, frame, {"regions": regions}, result_path, name, note)


def _remove_gx_failed(
    con: duckdb.DuckDBPyConnection, spec: DropSpec, sha256: str, gx: gx_gate.GxOutcome
) -> int:
    """Take the rows GX refused out of the kind's table again (same transaction); how many."""
    con.register(
        f"{_GX_FAILED}_arrow",
        pa.table(
            {
                "line_no": pa.array(list(gx.failed_rows), pa.int64()),
                "detail": pa.array(list(gx.failed_rows.values()), pa.string()),
            }
        ),
    )
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_GX_FAILED} AS SELECT * FROM {_GX_FAILED}_arrow")
    finally:
        con.unregister(f"{_GX_FAILED}_arrow")
    return _count(
        con,
        f"DELETE FROM {spec.table} WHERE file_sha256 = {sql_str(sha256)} "
        f"AND line_no IN (SELECT line_no FROM {_GX_FAILED})",
    )


def _quarantine_rows(
    con: duckdb.DuckDBPyConnection, staged: read.Staged, params: Mapping[str, object], gx_failed: bool
) -> pa.Table:
    """Every refused line of the file, in line order: the SQL rules' and then GX's."""
    sql = f"""
        SELECT line_no, split_part(reason_key, ':', 1) AS reason, detail, original_line
        FROM {CHECKED_TABLE} WHERE reason_key IS NOT NULL
    """
    if gx_failed:
        sql += f"""
            UNION ALL
            SELECT g.line_no, '{GX_REASON}', g.detail, s.original_line
            FROM {_GX_FAILED} g JOIN ({staged.lines_sql}) s USING (line_no)
        """
    return _arrow(con, f"SELECT * FROM ({sql}) ORDER BY line_no", params).cast(_QUARANTINE_SCHEMA)


def _run(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object] | None = None
) -> duckdb.DuckDBPyConnection:
    # DuckDB refuses named parameters that a statement does not use.
    return con.execute(sql, params) if params and "$day" in sql else con.execute(sql)


def _arrow(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object]) -> pa.Table:
    relation = con.sql(sql, params=dict(params)) if "$day" in sql else con.sql(sql)
    return relation.to_arrow_table()


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object] | None = None) -> int:
    rows = _run(con, sql, params).fetchall()
    return int(rows[0][0]) if rows else 0


def _reason_counts(quarantine: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in quarantine.column("reason").to_pylist():
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def _register(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    name: str,
    kind: str,
    sha256: str,
    status: str,
    rows_in: int,
    accepted: int,
    quarantined: int,
    encoding: str | None,
    delimiter: str | None,
    error: str | None,
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO files (file_name, kind, sha256, logical_date, status, rows_in, accepted, "
        "quarantined, encoding, delimiter, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [name, kind, sha256, day, status, rows_in, accepted, quarantined, encoding, delimiter, error],
    )


def _fail(
    con: duckdb.DuckDBPyConnection, day: dt.date, name: str, kind: str, sha256: str, exc: DataContractError
) -> FileReport:
    message = exc.diagnostics()
    _register(con, day, name, kind, sha256, "failed", 0, 0, 0, None, None, message)
    report = FileReport(name=name, kind=kind, sha256=sha256, status="failed", error=message)
    _log_file(day, report)
    return report


def _log_file(day: dt.date, report: FileReport, extra: str = "") -> None:
    if report.status == "failed":
        log.error("ingest %s %s: failed: %s", day, report.name, report.error)
        return
    reasons = ", ".join(f"{k} {v}" for k, v in report.quarantined_by_reason.items()) or "none"
    warnings = ", ".join(f"{k} {v}" for k, v in report.warnings.items()) or "none"
    log.info(
        "ingest %s %s: %s %s, %s/%s, rows in %d, accepted %d, quarantined %d (%s), warnings (%s), GX %s%s",
        day,
        report.name,
        report.status,
        report.kind,
        report.encoding,
        report.delimiter,
        report.rows_in,
        report.accepted,
        report.quarantined,
        reasons,
        warnings,
        "passed" if report.gx_success else "refused rows",
        f"; {extra}" if extra else "",
    )
