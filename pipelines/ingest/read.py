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
``csv`` module (strict). A quoted field may span lines (RFC 4180): a line whose quote is still
open at its end is joined with the following ones, at most MAX_RECORD_LINES of them, into one
record numbered by its first line; a quote that does not close in time is that line's error
alone, so it never swallows its neighbours.

Encoding, decided per file from its lines (no declaration travels with a BSS export): UTF-8
(BOM allowed) when every line is UTF-8; GBK when the lines that are not ASCII are GBK and none
is UTF-8. Strict UTF-8 almost never accepts GBK text, while GBK accepts most UTF-8 Chinese
as mojibake: so a file holding both kinds is read line by line, its encoding is the kind more
of its lines have (UTF-8 on a tie), and the lines of the other kind, or of neither, are
quarantined naming the problem rather than silently garbled.

Bounded: no reader holds more than MAX_LINE_BYTES of one line. DuckDB is told so
(``max_line_size``); Arrow reads blocks of _CHUNK bytes; the line-by-line reader streams and
keeps the first bytes of a longer line only. A line over the limit is quarantined.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.db import duckdb_options, sql_str
from pipelines.errors import DataContractError, TerminalError
from pipelines.ingest import records
from pipelines.ingest.spec import DropSpec, raw_col

_CHUNK = 16 << 20
# A BSS export's line is under 1 KiB; 1 MiB per line (and per record joined across lines) keeps
# DuckDB's reader (which holds a buffer of this size per thread) well inside its memory limit.
# A 200 MiB line took 2 GiB of RSS outside that limit before (benchmarks/bench_long_line.py).
MAX_LINE_BYTES = 1 << 20
MAX_RECORD_LINES = 64  # physical lines one quoted record may span (an address: a few)
SHOWN_CHARS = 4096  # of a line over the limit, the quarantine keeps this much
_BOM = codecs.BOM_UTF8
_UNIT_SEP = b"\x1f"  # the field delimiter while reading whole lines; must not occur in the file
LINES_VIEW = "_ingest_lines"  # line_no, line, err: one row per record (per physical line, mostly)
LINES_TABLE = "_ingest_line_text"  # what DuckDB read
ARROW_LINES = "_ingest_arrow_lines"  # what Arrow or the line-by-line reader read
RECORDS_TABLE = "_ingest_records"  # the lines with records that span lines joined, when a file has any
QUOTED_VIEW = "_ingest_quoted"
_SPANS = "_ingest_spans"


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
    ignored_columns: tuple[str, ...] = ()  # header columns no contract names: read by name, not used

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
                "quote = '', escape = '', auto_detect = false, compression = 'none', "
                f"max_line_size = {MAX_LINE_BYTES + 2})"  # + the line end: a refusal is a longer line
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
    _lines_view(con, _DUCKDB_SOURCE, nul=False, length=False)
    return True


_DUCKDB_SOURCE = (
    f"SELECT rowid + 1 AS line_no, coalesce(line, '') AS line, NULL::VARCHAR AS err FROM {LINES_TABLE}"
)


def _lines_view(con: duckdb.DuckDBPyConnection, source: str, *, nul: bool, length: bool) -> None:
    """LINES_VIEW over ``source`` (line_no, line, err), refusing a line with a NUL or over the limit.

    A NUL byte (binary in a field) or an over-long line is the error of that line alone. The
    checks are only made where needed: a NUL when the bytes hold one; the length when the reader
    did not enforce it (DuckDB does, with ``max_line_size``). Checking every line of a clean file
    cost about 7% more CPU in the fast insert (1.21-1.27 s against 1.13-1.17 s, bench_ingest, 500,000
    rows, a loaded machine).
    """
    if not (nul or length):
        con.execute(f"CREATE OR REPLACE TEMP VIEW {LINES_VIEW} AS {source}")
        return
    long_line = f"strlen(line) > {MAX_LINE_BYTES}" if length else "false"
    has_nul = "contains(line, chr(0))" if nul else "false"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW {LINES_VIEW} AS
        SELECT line_no,
            CASE WHEN {long_line} THEN left(line, {SHOWN_CHARS}) ELSE line END AS line,
            CASE
                WHEN err IS NOT NULL THEN err
                WHEN {long_line}
                    THEN 'line of ' || strlen(line) || ' bytes is over the limit of {MAX_LINE_BYTES} bytes '
                         || '(only its first {SHOWN_CHARS} characters are kept); cut the field or split the record'
                WHEN {has_nul}
                    THEN 'NUL byte in the line (binary data in a field); fix the field in the export'
            END AS err
        FROM ({source})
    """)


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


def _physical_lines(path: Path) -> Iterator[tuple[bytes, int]]:
    """Every physical line's bytes (at most MAX_LINE_BYTES + 1 of them) and full length, streaming.

    Line ends as :func:`sniff` counts them (\\n, \\r\\n, \\r), also when split across chunks.
    """
    head, length, pending_cr = b"", 0, False
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if pending_cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]  # the \n of a \r\n split across two chunks
            pending_cr = chunk.endswith(b"\r")
            for piece in chunk.splitlines(keepends=True):
                body = piece.rstrip(b"\r\n")  # one line end per piece
                length += len(body)
                if len(head) <= MAX_LINE_BYTES:
                    head += body[: MAX_LINE_BYTES + 1 - len(head)]
                if len(body) < len(piece):
                    yield head, length
                    head, length = b"", 0
    if length:
        yield head, length  # a last line without a line end


def _line_kind(raw: bytes) -> str | None:
    """ascii | utf-8 | gbk: the encoding a line's bytes are in; None when neither."""
    if raw.isascii():
        return "ascii"
    for enc in ("utf-8", "gbk"):
        try:
            raw.decode(enc)
        except UnicodeDecodeError:
            continue
        return enc
    return None


def _python_lines(path: Path, strip_bom: bool) -> tuple[pa.Table, str]:
    """Slow path for broken files: each line decoded on its own; (lines with ``err``, encoding).

    A Python step per line: 3.2 s for a million GBK lines where the streaming transcoder takes
    0.3 s, so it reads only files no bulk reader can (mixed encodings, undecodable bytes, a line
    over a block, mixed line ends Arrow refuses). Memory: the file's lines, a long one cut short.
    """
    raws: list[tuple[bytes, int]] = []
    kinds: list[str | None] = []
    for raw, length in _physical_lines(path):
        if strip_bom and not raws and raw.startswith(_BOM):
            raw, length = raw[len(_BOM) :], length - len(_BOM)
        raws.append((raw, length))
        kinds.append(_line_kind(raw) if length <= MAX_LINE_BYTES else "long")
    encoding = "gbk" if kinds.count("gbk") > kinds.count("utf-8") else "utf-8"
    lines: list[str] = []
    errors: list[str | None] = []
    for (raw, length), kind in zip(raws, kinds, strict=True):
        text, err = _decode_line(raw, length, kind, encoding)
        lines.append(text)
        errors.append(err)
    return pa.table({"line": pa.array(lines, pa.string()), "err": pa.array(errors, pa.string())}), encoding


def _decode_line(raw: bytes, length: int, kind: str | None, encoding: str) -> tuple[str, str | None]:
    """The text of one line for the quarantine or the reader, and why it is refused (None: it is not)."""
    if kind == "long":
        shown = raw[: SHOWN_CHARS * 4].decode("utf-8", "backslashreplace")[:SHOWN_CHARS]
        return shown, (
            f"line of {length:,} bytes is over the limit of {MAX_LINE_BYTES:,} bytes (only its first "
            f"{SHOWN_CHARS} characters are kept); cut the field or split the record"
        )
    if kind in ("ascii", encoding):
        return raw.decode(encoding), None
    if kind is not None:
        return raw.decode(kind), (
            f"a {kind.upper()} line in a {encoding.upper()} file (mixed encodings: most of its lines are "
            f"{encoding.upper()}); re-export the file in one encoding"
        )
    return raw.decode("utf-8", "backslashreplace"), (
        f"undecodable bytes (neither UTF-8 nor GBK; the file is {encoding.upper()}; shown backslash-escaped)"
    )


_NOT_ASCII_NOR_ESCAPED = re.compile(r"[^\x00-\x7f\udc80-\udcff]")
_ESCAPED = re.compile(r"[\udc80-\udcff]")  # a byte that is not UTF-8, under surrogateescape


def _has_utf8_text_line(path: Path) -> bool:
    """Whether some line holds non-ASCII text and is valid UTF-8: then a GBK file is mixed.

    One pass at C speed: each chunk (whole lines) is decoded as UTF-8 with surrogateescape and
    only the lines holding a real non-ASCII character are looked at (0.33 s for a million GBK
    lines, against 3.2 s for a Python step per line).
    """
    tail = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            block = tail + chunk
            cut = max(block.rfind(b"\n"), block.rfind(b"\r")) + 1 if chunk else len(block)
            if _utf8_line_in(block[:cut].decode("utf-8", "surrogateescape")):
                return True
            if not chunk:
                return False
            tail = block[cut:]
            if len(tail) > MAX_LINE_BYTES:
                tail = b""  # a line over the limit: quarantined whatever its encoding


def _utf8_line_in(text: str) -> bool:
    pos = 0
    while found := _NOT_ASCII_NOR_ESCAPED.search(text, pos):
        at = found.start()
        start = max(text.rfind("\n", 0, at), text.rfind("\r", 0, at)) + 1
        ends = [e for e in (text.find("\n", at), text.find("\r", at)) if e >= 0]
        end = min(ends) if ends else len(text)
        if not _ESCAPED.search(text, start, end):
            return True
        pos = end
    return False


def read_header(text: str, spec: DropSpec, file_name: str) -> tuple[str, list[str], tuple[str, ...]]:
    """Delimiter, lower-cased column names and ignored (unknown) columns of the header.

    DataContractError if unusable."""
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
    return delim, names, check_columns(names, spec, file_name)


def check_columns(names: list[str], spec: DropSpec, file_name: str) -> tuple[str, ...]:
    """The unknown columns of a header, to ignore; DataContractError for missing or repeated ones.

    Fields are read by column name, so a column no contract names cannot be misread as another:
    it is ignored, and the file's report warns once naming it. A repeated known column is
    ambiguous and refused.
    """
    missing = [c for c in spec.required if c not in names]
    unknown = tuple(sorted({n for n in names if n not in spec.names}))
    repeated = sorted({n for n in names if names.count(n) > 1 and n in spec.names})
    problems = []
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems and unknown:  # a hint: a required column may have been renamed
        problems.append(f"unknown column(s) {', '.join(repr(n) for n in unknown)}")
    if problems:
        raise DataContractError(
            f"{file_name}: {'; '.join(problems)}. A {spec.kind} file has columns "
            f"{', '.join(spec.names)} (required: {', '.join(spec.required)}); fix the export "
            "and deliver it again under a new name"
        )
    return tuple(_shown_name(n) for n in unknown)


def _shown_name(name: str) -> str:
    """A header name as the report shows it: a stranger wrote it, so short and printable."""
    shown = name.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 40 else shown[:40] + "…"


def stage_csv(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    facts: FileFacts,
    spec: DropSpec,
    work_dir: Path,
    ahead: ReadAhead | None = None,
) -> Staged:
    """Register the records of a CSV drop and return the SELECT that splits them into fields.

    ``ahead`` is what :func:`read_ahead` made of ``path`` already, if it was called.
    """
    name = path.name
    if facts.size == 0:
        raise DataContractError(f"{name}: empty file (0 bytes); deliver the export again")
    reader, encoding = _register_lines(con, path, facts, work_dir, ahead)
    delim, names, ignored = _read_header(con, spec, name, facts)
    dialect = records.Dialect(delim, len(names), MAX_RECORD_LINES, MAX_LINE_BYTES)
    quoted, taken, last = _quoted_records(con, dialect, facts.lines)
    template = _split_template(con, spec, names, delim, quoted, facts.ends_with_newline, last)
    return Staged(
        select_sql=template.format(lines=LINES_VIEW),
        lines_sql=f"SELECT line_no, line AS original_line FROM {LINES_VIEW} WHERE line_no > 1",
        rows_in=facts.lines - 1 - taken,
        encoding=encoding,
        delimiter=delim,
        reader=reader,
        subset_template=template,
        fast_template=_fast_template(spec, names, delim),
        ignored_columns=ignored,
    )


def _read_header(
    con: duckdb.DuckDBPyConnection, spec: DropSpec, name: str, facts: FileFacts
) -> tuple[str, list[str], tuple[str, ...]]:
    """The header's delimiter, names and ignored columns; DataContractError for an unusable one."""
    line, err = con.execute(f"SELECT line, err FROM {LINES_VIEW} WHERE line_no = 1").fetchall()[0]
    try:
        if err is not None:
            raise DataContractError(f"{name}: the header line cannot be read ({err})")
        return read_header(str(line), spec, name)
    except DataContractError:
        if facts.has_nul:  # a NUL in a data line is that line's error; in the header, a binary file
            raise DataContractError(
                f"{name}: binary content (NUL bytes), not a CSV drop (UTF-16 exports look like this "
                "too); re-export as UTF-8 or GBK CSV"
            ) from None
        raise


def _quoted_records(
    con: duckdb.DuckDBPyConnection, dialect: records.Dialect, lines: int
) -> tuple[records.Parsed, int, int]:
    """Parse the data lines holding a quote, joining records whose quoted field spans lines.

    Returns the parsed records, how many lines records took from others, and the line_no of the
    record holding the file's last line. When a record spans lines, LINES_VIEW is rebuilt over
    RECORDS_TABLE: one row per record from then on.
    """
    # A line whose text is exact (no error, or only a NUL: refused, but it may still open a
    # record) is parsed; lines read in another encoding or cut short are not.
    rows = con.execute(
        f"SELECT line_no, line, err FROM {LINES_VIEW} WHERE line_no > 1 AND contains(line, '\"') "
        "AND (err IS NULL OR contains(line, chr(0))) ORDER BY line_no"
    ).fetchall()
    parsed = records.parse_quoted([(n, line) for n, line, _ in rows], dialect.delim)
    first_lines = records.openers(parsed)
    if not first_lines:
        return parsed, 0, lines
    following = _following_lines(con, first_lines)
    opened = {n: (line, err) for n, line, err in rows if n in set(first_lines)}
    joined = records.join_records(first_lines, opened, following, dialect)
    unclosed = records.unclosed_detail(dialect)
    for i, n in enumerate(parsed.line_nos):
        if n in joined.records:
            text, err = joined.records[n]
            reparsed = records.parse_quoted([(n, text)], dialect.delim)
            parsed.fields[i], parsed.errors[i] = reparsed.fields[0], err or reparsed.errors[0]
        elif n in first_lines:
            parsed.errors[i] = unclosed
    if joined.records:
        _rebuild_lines(con, joined)
    taken = set(joined.taken)
    keep = [i for i, n in enumerate(parsed.line_nos) if n not in taken]
    kept = records.Parsed(
        [parsed.line_nos[i] for i in keep], [parsed.fields[i] for i in keep], [parsed.errors[i] for i in keep]
    )
    last = max(joined.records) if lines in taken else lines
    return kept, len(taken), last


def _following_lines(
    con: duckdb.DuckDBPyConnection, first_lines: list[int]
) -> dict[int, tuple[str, str | None]]:
    """The lines a record opened at each of ``first_lines`` may take, by line_no."""
    con.register(
        _SPANS,
        pa.table(
            {
                "lo": pa.array([n + 1 for n in first_lines], pa.int64()),
                "hi": pa.array([n + MAX_RECORD_LINES - 1 for n in first_lines], pa.int64()),
            }
        ),
    )
    try:
        rows = con.execute(
            f"SELECT DISTINCT l.line_no, l.line, l.err FROM {LINES_VIEW} l "
            f"JOIN {_SPANS} s ON l.line_no BETWEEN s.lo AND s.hi"
        ).fetchall()
    finally:
        con.unregister(_SPANS)
    return {int(n): (str(line), err) for n, line, err in rows}


def _rebuild_lines(con: duckdb.DuckDBPyConnection, joined: records.Joined) -> None:
    """LINES_VIEW over RECORDS_TABLE: a joined record in place of its first line, its other lines gone."""
    firsts = sorted(joined.records)
    con.register(
        _SPANS,
        pa.table(
            {
                "line_no": pa.array(firsts, pa.int64()),
                "line": pa.array([joined.records[n][0] for n in firsts], pa.string()),
                "err": pa.array([joined.records[n][1] for n in firsts], pa.string()),
            }
        ),
    )
    con.register(f"{_SPANS}_taken", pa.table({"line_no": pa.array(joined.taken, pa.int64())}))
    try:
        with duckdb_options(con, preserve_insertion_order=True):
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE {RECORDS_TABLE} AS
                SELECT l.line_no, coalesce(j.line, l.line) AS line, coalesce(j.err, l.err) AS err
                FROM {LINES_VIEW} l LEFT JOIN {_SPANS} j USING (line_no)
                WHERE l.line_no NOT IN (SELECT line_no FROM {_SPANS}_taken)
                ORDER BY l.line_no
            """)
    finally:
        con.unregister(_SPANS)
        con.unregister(f"{_SPANS}_taken")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {LINES_VIEW} AS SELECT line_no, line, err FROM {RECORDS_TABLE}")


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
    elif facts.has_nul:  # DuckDB read the lines: only the NUL check is left to add
        _lines_view(con, _DUCKDB_SOURCE, nul=True, length=False)
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
    # A file that is not UTF-8 is GBK unless one of its lines is UTF-8 text: then it mixes the
    # two and the line-by-line reader (lines None) judges each line.
    if not in_duckdb and lines is None and not _is_utf8(path) and not _has_utf8_text_line(path):
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
    con.register(ARROW_LINES, lines)
    _lines_view(con, f"SELECT line_no, line, err FROM {ARROW_LINES}", nul=facts.has_nul, length=True)


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
    con: duckdb.DuckDBPyConnection,
    spec: DropSpec,
    names: list[str],
    delim: str,
    quoted: records.Parsed,
    ends_with_newline: bool,
    last: int,
) -> str:
    """The SELECT splitting every data record into fields and saying why one is malformed.

    ``{lines}`` stands for the lines relation (LINES_VIEW or a part of it). Registers
    QUOTED_VIEW with the ``quoted`` records' fields; ``last`` is the record holding the file's
    last line (truncated when the file does not end with a newline).
    """
    fields, quote_err, join = "l.f", "NULL", ""  # the usual case: no quoted line, no join
    if quoted.line_nos:
        con.register(
            QUOTED_VIEW,
            pa.table(
                {
                    "line_no": pa.array(quoted.line_nos, pa.int64()),
                    "f": pa.array(quoted.fields, pa.list_(pa.string())),
                    "err": pa.array(quoted.errors, pa.string()),
                }
            ),
        )
        fields, quote_err = "coalesce(q.f, l.f)", "q.err"
        join = f"LEFT JOIN {QUOTED_VIEW} q ON q.line_no = l.line_no"

    width = len(names)
    last_cut = (
        ""
        if ends_with_newline
        else (
            f" || CASE WHEN l.line_no = {last} THEN ' (truncated last line: the file does not end with a newline)' ELSE '' END"
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
    ignored = check_columns(names, spec, path.name)
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
        select_sql=select,
        lines_sql=lines,
        rows_in=rows_in,
        encoding=None,
        delimiter=None,
        reader="parquet",
        ignored_columns=ignored,
    )


def release(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the views and tables a staging made (safe to call when there are none)."""
    for view in (ARROW_LINES, QUOTED_VIEW, _SPANS, f"{_SPANS}_taken"):
        with contextlib.suppress(duckdb.Error):
            con.unregister(view)
    con.execute(f"DROP VIEW IF EXISTS {LINES_VIEW}")
    con.execute(f"DROP TABLE IF EXISTS {LINES_TABLE}")
    con.execute(f"DROP TABLE IF EXISTS {RECORDS_TABLE}")
