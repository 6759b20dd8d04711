"""Reading a drop file into a staged DuckDB table, one row per physical line, nothing lost.

CSV files are split into lines first (header = line 1; lines end at ``\\n``, ``\\r\\n`` or
``\\r`` as in every CSV reader) and only then into fields, so a broken line (wrong field
count, unterminated quote, cut-off last line, undecodable bytes) is one quarantine row with
its exact text and line number and never swallows its neighbours. DuckDB's own ``read_csv``
rejects do not give that: it silently skips blank lines, numbers records rather than physical
lines, an unterminated quote eats the rest of the file as one rejected "line", and it takes a
line with one delimiter too many at the end for a good one.

Lines are read by DuckDB's parallel CSV reader as ONE column (quoting off, a delimiter that
cannot occur): then every physical line is one record, a blank one included (as NULL), in
file order, so line_no is the row's position. The count is held to the physical lines counted
from the bytes; when DuckDB refuses the file (mixed line ends, a line over its size limit,
not UTF-8) or counts otherwise, Arrow's reader and then a line-by-line Python reader take
over. Lines are then split in SQL; the rare lines holding a quote are parsed with Python's
``csv`` module (strict: an unterminated quote is an error, not a join with the next line).
Encoding: strict UTF-8 (BOM allowed), else GBK, transcoded to UTF-8 in a streaming pass; a
file that is neither is read line by line and its undecodable lines quarantined.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.db import duckdb_options, sql_str
from pipelines.errors import DataContractError, TerminalError
from pipelines.ingest.spec import DropSpec, raw_col

_CHUNK = 16 << 20
_BOM = codecs.BOM_UTF8
_UNIT_SEP = b"\x1f"  # the field delimiter while reading whole lines; must not occur in the file
LINES_VIEW = "_ingest_lines"  # line_no, line, err: a view over LINES_TABLE or an Arrow table
LINES_TABLE = "_ingest_line_text"
QUOTED_VIEW = "_ingest_quoted"


@dataclass(frozen=True)
class FileFacts:
    """What one streaming pass over the bytes learns: identity, line count, what can read it."""

    sha256: str
    size: int
    lines: int  # physical lines (\n, \r\n or \r ends one; a last line without an end counts)
    bom: bool
    has_nul: bool
    has_unit_sep: bool
    ends_with_newline: bool


def sniff(path: Path) -> FileFacts:
    """Hash the file, count its lines and look for bytes that decide how to read it.

    Line ends are ASCII bytes that never occur inside a UTF-8 or GBK character, so the count
    holds whatever the encoding. OSError propagates.
    """
    digest = hashlib.sha256()
    size = breaks = 0
    has_nul = has_unit_sep = bom = False
    last = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if size == 0:
                bom = chunk.startswith(_BOM)
            size += len(chunk)
            digest.update(chunk)
            has_nul = has_nul or b"\x00" in chunk
            has_unit_sep = has_unit_sep or _UNIT_SEP in chunk
            breaks += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            if last == b"\r" and chunk.startswith(b"\n"):
                breaks -= 1  # a \r\n split across two chunks
            last = chunk[-1:]
    ends_with_newline = last in (b"\n", b"\r")
    return FileFacts(
        sha256=digest.hexdigest(),
        size=size,
        lines=breaks + (0 if ends_with_newline or size == 0 else 1),
        bom=bom,
        has_nul=has_nul,
        has_unit_sep=has_unit_sep,
        ends_with_newline=ends_with_newline,
    )


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class Staged:
    """A drop file made readable: ``select_sql`` yields line_no, original_line, malformed, v_*.

    ``lines_sql`` yields only line_no and original_line of the same rows, cheaply.
    ``subset_sql(table)`` is ``select_sql`` for the lines copied to ``table``, and
    ``fast_sql(table)`` (CSV only) the same columns for the plain lines not in ``table``: no
    quote, no space, no undecodable bytes and the header's number of fields, so they are split
    without trimming or quote parsing; None for a Parquet drop.
    """

    select_sql: str
    lines_sql: str
    rows_in: int
    encoding: str | None
    delimiter: str | None
    reader: str  # duckdb | arrow | python (line by line) | parquet: for the logs
    subset_template: str | None = None  # CSV: select_sql with {lines} for the lines relation
    fast_template: str | None = None  # CSV: the fast path's SELECT, with {lines}

    def subset_sql(self, table: str) -> str:
        """``select_sql`` for the lines held in ``table`` (line_no, line, err: a part of LINES_VIEW).

        CSV only: the part of a file left by :meth:`fast_sql`, which a Parquet drop has not.
        """
        if self.subset_template is None:
            raise TerminalError("subset_sql of a drop without a fast path; this is a bug")
        return self.subset_template.format(lines=table)

    def fast_sql(self, exclude: str) -> str | None:
        if self.fast_template is None:
            return None
        return self.fast_template.format(
            lines=f"(SELECT * FROM {LINES_VIEW} WHERE line_no NOT IN (SELECT line_no FROM {exclude}))"
        )


def _transcode_gbk(path: Path, out: Path) -> bool:
    """Write ``path`` (GBK) as UTF-8 to ``out``, streaming; False if it is not GBK either."""
    decoder = codecs.getincrementaldecoder("gbk")("strict")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(decoder.decode(chunk).encode("utf-8"))
            dst.write(decoder.decode(b"", final=True).encode("utf-8"))
    except UnicodeDecodeError:
        out.unlink(missing_ok=True)
        return False
    return True


@dataclass(frozen=True)
class ReadAhead:
    """The lines of a CSV drop as DuckDB read them into LINES_TABLE, before the facts were known."""

    path: Path
    rows: int | None  # None: DuckDB refused the file and LINES_TABLE does not exist


def read_ahead(con: duckdb.DuckDBPyConnection, path: Path) -> ReadAhead:
    """Read every line of a UTF-8 file into LINES_TABLE (BOM dropped) as far as DuckDB can.

    One VARCHAR column and no quoting make each physical line one record (a blank one NULL);
    insertion order is kept, so ``rowid + 1`` is the line number. :func:`stage_csv` uses the
    table only if the row count equals the physical lines counted from the bytes.
    """
    try:
        with duckdb_options(con, preserve_insertion_order=True):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {LINES_TABLE} AS SELECT line FROM read_csv({sql_str(str(path))}, "
                f"header = false, columns = {{'line': 'VARCHAR'}}, delim = {sql_str(_UNIT_SEP.decode())}, "
                "quote = '', escape = '', auto_detect = false, compression = 'none')"
            )
        rows = con.execute(f"SELECT count(*) FROM {LINES_TABLE}").fetchall()
    except duckdb.Error:  # not UTF-8, mixed line ends, a line over DuckDB's size limit...
        con.execute(f"DROP TABLE IF EXISTS {LINES_TABLE}")
        return ReadAhead(path=path, rows=None)
    return ReadAhead(path=path, rows=int(rows[0][0]))


def _duckdb_lines(con: duckdb.DuckDBPyConnection, ahead: ReadAhead, lines: int) -> bool:
    """Make LINES_VIEW over what DuckDB read, if it holds exactly the ``lines`` of the file."""
    if ahead.rows != lines:  # DuckDB saw other line ends than the bytes have (or none)
        con.execute(f"DROP TABLE IF EXISTS {LINES_TABLE}")
        return False
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {LINES_VIEW} AS "
        f"SELECT rowid + 1 AS line_no, coalesce(line, '') AS line, NULL::VARCHAR AS err FROM {LINES_TABLE}"
    )
    return True


def _arrow_lines(path: Path) -> pa.Table | None:
    """Every physical line of a UTF-8 file as one string (BOM dropped); None if Arrow cannot."""
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=["line"], block_size=_CHUNK),
            parse_options=pacsv.ParseOptions(
                delimiter="\x1f",
                quote_char=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={"line": pa.string()},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. a line longer than a block
        return None


def _python_lines(path: Path, strip_bom: bool) -> tuple[pa.Table, str]:
    """Slow path for broken files: decode each line on its own, flag the undecodable ones."""
    data = path.read_bytes()
    if strip_bom and data.startswith(_BOM):
        data = data[len(_BOM) :]
    lines: list[str] = []
    errors: list[str | None] = []
    seen: set[str] = set()
    for raw in data.splitlines():  # bytes.splitlines: \n, \r\n, \r — as the CSV reader
        for enc in ("utf-8", "gbk"):
            try:
                lines.append(raw.decode(enc))
                errors.append(None)
                seen.add(enc)
                break
            except UnicodeDecodeError:
                continue
        else:
            lines.append(raw.decode("utf-8", "backslashreplace"))
            errors.append("undecodable bytes (neither UTF-8 nor GBK; shown backslash-escaped)")
            seen.add("undecodable")
    encoding = "utf-8" if seen <= {"utf-8"} else "gbk" if seen == {"gbk"} else "mixed"
    return pa.table({"line": pa.array(lines, pa.string()), "err": pa.array(errors, pa.string())}), encoding


def _header(text: str, spec: DropSpec, file_name: str) -> tuple[str, list[str]]:
    """Delimiter and lower-cased column names of the header; DataContractError if unusable."""
    text = text.lstrip("\ufeff")
    known = set(spec.names)
    best: tuple[int, str, list[str]] | None = None
    for delim in (",", "|"):
        try:
            names = next(csv.reader([text], delimiter=delim, strict=True), [])
        except csv.Error:
            continue
        names = [n.strip().lower() for n in names]
        score = sum(n in known for n in names)
        if best is None or score > best[0]:
            best = (score, delim, names)
    if best is None or best[0] == 0:
        raise DataContractError(
            f"{file_name}: the first line is not a {spec.kind} header (expected columns "
            f"{', '.join(spec.names)}, comma or | separated); re-export the file with its header"
        )
    _, delim, names = best
    check_columns(names, spec, file_name)
    return delim, names


def check_columns(names: list[str], spec: DropSpec, file_name: str) -> None:
    """Refuse a header with missing required, unknown or repeated columns (DataContractError)."""
    missing = [c for c in spec.required if c not in names]
    unknown = sorted({n for n in names if n not in spec.names})
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems = []
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(repr(n) for n in unknown)}")
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        raise DataContractError(
            f"{file_name}: {'; '.join(problems)}. A {spec.kind} file has columns "
            f"{', '.join(spec.names)} (required: {', '.join(spec.required)}); fix the export "
            "and deliver it again under a new name"
        )


def _parse_quoted(rows: list[tuple[int, str]], delim: str) -> pa.Table:
    line_nos: list[int] = []
    fields: list[list[str] | None] = []
    errors: list[str | None] = []
    for line_no, line in rows:
        line_nos.append(line_no)
        try:
            parsed = next(csv.reader([line], delimiter=delim, strict=True), [])
            fields.append(parsed)
            errors.append(None)
        except csv.Error as exc:
            fields.append(None)
            errors.append(f"bad quoting: {exc}")
    return pa.table(
        {
            "line_no": pa.array(line_nos, pa.int64()),
            "f": pa.array(fields, pa.list_(pa.string())),
            "err": pa.array(errors, pa.string()),
        }
    )


def stage_csv(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    facts: FileFacts,
    spec: DropSpec,
    work_dir: Path,
    ahead: ReadAhead | None = None,
) -> Staged:
    """Register the lines of a CSV drop and return the SELECT that splits them into fields.

    ``ahead`` is what :func:`read_ahead` made of ``path`` already, if it was called.
    """
    name = path.name
    _refuse_unreadable(name, facts)
    reader, encoding = _register_lines(con, path, facts, work_dir, ahead)
    n = facts.lines
    if n == 0:
        raise DataContractError(f"{name}: no header line; deliver the export again")
    header = con.execute(f"SELECT line FROM {LINES_VIEW} WHERE line_no = 1").fetchall()[0][0]
    delim, names = _header(str(header), spec, name)
    template = _split_template(con, spec, names, delim, facts)
    return Staged(
        select_sql=template.format(lines=LINES_VIEW),
        lines_sql=f"SELECT line_no, line AS original_line FROM {LINES_VIEW} WHERE line_no > 1",
        rows_in=n - 1,
        encoding=encoding,
        delimiter=delim,
        reader=reader,
        subset_template=template,
        fast_template=_fast_template(spec, names, delim),
    )


def _refuse_unreadable(name: str, facts: FileFacts) -> None:
    """DataContractError for a file no reader should try: empty, or binary."""
    if facts.size == 0:
        raise DataContractError(f"{name}: empty file (0 bytes); deliver the export again")
    if facts.has_nul:
        raise DataContractError(
            f"{name}: binary content (NUL bytes), not a CSV drop (UTF-16 exports look like this "
            "too); re-export as UTF-8 or GBK CSV"
        )


def _register_lines(
    con: duckdb.DuckDBPyConnection, path: Path, facts: FileFacts, work_dir: Path, ahead: ReadAhead | None
) -> tuple[str, str]:
    """Make LINES_VIEW hold every physical line of the file; (reader, encoding) for the logs.

    DuckDB's reader first, then Arrow's, on the file or its UTF-8 transcoding when it is GBK;
    a reader counting other lines than the bytes hold is not trusted, and the line-by-line
    Python reader takes what none of them read.
    """
    utf8_name = "utf-8-sig" if facts.bom else "utf-8"
    encoding = utf8_name
    in_duckdb = False
    lines: pa.Table | None = None
    if not facts.has_unit_sep:
        in_duckdb, lines, gbk = _read_whole_lines(con, path, facts, work_dir, ahead)
        encoding = "gbk" if gbk else encoding
    if lines is not None and lines.num_rows != facts.lines:
        lines = None  # Arrow saw other line ends than the byte count: take the line-by-line reader
    reader = "duckdb" if in_duckdb else "arrow"
    if not in_duckdb and lines is None:
        reader = "python"
        lines, encoding = _python_lines(path, strip_bom=facts.bom)
        if encoding == "utf-8":
            encoding = utf8_name
    if lines is not None:
        _register_arrow_lines(con, lines, facts, path.name)
    return reader, encoding


def _read_whole_lines(
    con: duckdb.DuckDBPyConnection, path: Path, facts: FileFacts, work_dir: Path, ahead: ReadAhead | None
) -> tuple[bool, pa.Table | None, bool]:
    """(LINES_VIEW made over DuckDB's lines, else Arrow's lines or None, transcoded from GBK)."""
    gbk = False
    in_duckdb = _duckdb_lines(
        con, ahead if ahead and ahead.path == path else read_ahead(con, path), facts.lines
    )
    lines = None
    if not in_duckdb:
        # Arrow checks UTF-8 itself; only when it refuses the file is the encoding examined.
        lines = _arrow_lines(path)
    if not in_duckdb and lines is None and not _is_utf8(path):
        tmp = work_dir / f"{path.name}.utf8"
        try:
            if _transcode_gbk(path, tmp):
                gbk = True
                in_duckdb = _duckdb_lines(con, read_ahead(con, tmp), facts.lines)
                lines = None if in_duckdb else _arrow_lines(tmp)
        finally:
            tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                work_dir.rmdir()  # only if empty: another file may be using it
    return in_duckdb, lines, gbk


def _register_arrow_lines(
    con: duckdb.DuckDBPyConnection, lines: pa.Table, facts: FileFacts, name: str
) -> None:
    """LINES_VIEW over lines read by Arrow or Python, numbered from 1, ``err`` NULL unless set."""
    if lines.num_rows != facts.lines:
        raise TerminalError(
            f"{name}: read {lines.num_rows} lines but the file has {facts.lines}; this is a bug, keep the file "
            "and report it"
        )
    if "err" not in lines.column_names:
        lines = lines.append_column("err", pa.nulls(lines.num_rows, pa.string()))
    lines = lines.append_column("line_no", pa.array(np.arange(1, lines.num_rows + 1, dtype=np.int64)))
    con.register(LINES_VIEW, lines)


def _field_values(spec: DropSpec, names: list[str], fields: str, trim: bool) -> list[str]:
    """SELECT items ``v_<column>`` of the split ``fields`` (NULL for a column the header lacks)."""
    values = []
    for col in spec.columns:
        if col.name in names:
            field = f"{fields}[{names.index(col.name) + 1}]"
            # trim() is costly on a million rows; only lines holding a space can need it.
            value = f"CASE WHEN l.spaced THEN trim({field}) ELSE {field} END" if trim else field
            values.append(f"nullif({value}, '') AS {raw_col(col.name)}")
        else:
            values.append(f"NULL::VARCHAR AS {raw_col(col.name)}")
    return values


def _split_template(
    con: duckdb.DuckDBPyConnection, spec: DropSpec, names: list[str], delim: str, facts: FileFacts
) -> str:
    """The SELECT splitting every data line into fields and saying why a line is malformed.

    ``{lines}`` stands for the lines relation (LINES_VIEW or a part of it). Registers
    QUOTED_VIEW when some lines hold a quote.
    """
    quoted = con.execute(
        f"SELECT line_no, line FROM {LINES_VIEW} WHERE line_no > 1 AND err IS NULL AND contains(line, '\"') "
        "ORDER BY line_no"
    ).fetchall()
    fields, quote_err, join = "l.f", "NULL", ""  # the usual case: no quoted line, no join
    if quoted:
        con.register(QUOTED_VIEW, _parse_quoted(quoted, delim))
        fields, quote_err = "coalesce(q.f, l.f)", "q.err"
        join = f"LEFT JOIN {QUOTED_VIEW} q ON q.line_no = l.line_no"

    width = len(names)
    last_cut = (
        ""
        if facts.ends_with_newline
        else (
            f" || CASE WHEN l.line_no = {facts.lines} THEN ' (truncated last line: the file does not end with a newline)' ELSE '' END"
        )
    )
    # {lines} is the lines relation (LINES_VIEW or a part of it); braces of the SQL are doubled.
    return f"""
        SELECT l.line_no, l.line AS original_line,
            CASE
                WHEN l.err IS NOT NULL THEN l.err
                WHEN {quote_err} IS NOT NULL THEN {quote_err}
                WHEN l.line = '' THEN 'empty line'
                WHEN len({fields}) <> {width}
                    THEN 'expected {width} fields, found ' || len({fields}){last_cut}
            END AS malformed,
            {", ".join(_field_values(spec, names, fields, trim=True))}
        FROM (
            SELECT line_no, line, err, contains(line, ' ') AS spaced,
                CASE WHEN contains(line, '"') THEN NULL ELSE string_split(line, {sql_str(delim)}) END AS f
            FROM {{lines}} WHERE line_no > 1
        ) l
        {join}
    """


def _fast_template(spec: DropSpec, names: list[str], delim: str) -> str:
    """The plain lines: what :func:`_split_template` would make of them, without its costly branches."""
    return f"""
        SELECT l.line_no, l.line AS original_line, NULL::VARCHAR AS malformed, {", ".join(_field_values(spec, names, "l.f", trim=False))}
        FROM (
            SELECT line_no, line, string_split(line, {sql_str(delim)}) AS f
            FROM {{lines}}
            WHERE line_no > 1 AND err IS NULL AND NOT contains(line, '"') AND NOT contains(line, ' ')
        ) l
        WHERE len(l.f) = {len(names)}
    """


def stage_parquet(con: duckdb.DuckDBPyConnection, path: Path, spec: DropSpec) -> Staged:
    """The SELECT over a Parquet drop: line_no is the 1-based row, the line a JSON rendering."""
    src = f"read_parquet({sql_str(str(path))}, file_row_number = true)"
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_str(str(path))})").fetchall()
        rows_in = int(
            con.execute(f"SELECT count(*) FROM read_parquet({sql_str(str(path))})").fetchall()[0][0]
        )
    except duckdb.Error as exc:
        raise DataContractError(
            f"{path.name}: not a readable Parquet file ({exc}); deliver the export again"
        ) from exc
    actual = [str(r[0]) for r in described]
    names = [a.strip().lower() for a in actual]
    check_columns(names, spec, path.name)
    quoted = {n: '"' + a.replace('"', '""') + '"' for n, a in zip(names, actual, strict=True)}
    line = "to_json(struct_pack(" + ", ".join(f"{quoted[n]} := {quoted[n]}" for n in names) + "))::VARCHAR"
    values = []
    for col in spec.columns:
        if col.name in quoted:
            values.append(f"nullif(trim(CAST({quoted[col.name]} AS VARCHAR)), '') AS {raw_col(col.name)}")
        else:
            values.append(f"NULL::VARCHAR AS {raw_col(col.name)}")
    select = f"""
        SELECT file_row_number + 1 AS line_no, {line} AS original_line, NULL::VARCHAR AS malformed,
            {", ".join(values)}
        FROM {src}
    """
    lines = f"SELECT file_row_number + 1 AS line_no, {line} AS original_line FROM {src}"
    return Staged(
        select_sql=select, lines_sql=lines, rows_in=rows_in, encoding=None, delimiter=None, reader="parquet"
    )


def release(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the views and tables a staging made (safe to call when there are none)."""
    for view in (LINES_VIEW, QUOTED_VIEW):
        with contextlib.suppress(duckdb.Error):
            con.unregister(view)
    con.execute(f"DROP VIEW IF EXISTS {LINES_VIEW}")
    con.execute(f"DROP TABLE IF EXISTS {LINES_TABLE}")
