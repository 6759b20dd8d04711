"""Quoted CSV lines into fields, and RFC 4180 records whose quoted field spans lines.

The lines holding a quote (a few per cent of a BSS export) are parsed with Python's ``csv``
module, strict. A line whose quote is still open at its end ("unexpected end of data") opens
a record that goes on over the following physical lines until ``csv`` closes it: that record
is one row, numbered by its first line, its text the lines joined with ``\\n``; the lines it
took are no rows of their own. Joining is trusted only when it gives a sound record: closed
within ``max_lines`` lines and ``max_bytes`` bytes, no quoting error, the header's number of
fields. Otherwise the quote is the error of its own line alone and the lines after it are
read as records of their own: a stray quote never swallows a good neighbour.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

UNCLOSED = "unexpected end of data"  # csv's message for a quote open at the end of the input


@dataclass(frozen=True)
class Parsed:
    """Quoted lines (or joined records) parsed: fields, or why not; aligned lists by line_no."""

    line_nos: list[int]
    fields: list[list[str] | None]
    errors: list[str | None]


@dataclass(frozen=True)
class Joined:
    """Records that span lines: their text and error by first line, and the lines they took."""

    records: dict[int, tuple[str, str | None]]
    taken: list[int]


def parse_quoted(rows: list[tuple[int, str]], delim: str) -> Parsed:
    """Every (line_no, text) split by ``csv`` (strict); an unclosed quote says so in its error."""
    out = Parsed([], [], [])
    for line_no, line in rows:
        out.line_nos.append(line_no)
        try:
            out.fields.append(next(csv.reader([line], delimiter=delim, strict=True), []))
            out.errors.append(None)
        except csv.Error as exc:
            out.fields.append(None)
            out.errors.append(f"bad quoting: {exc}")
    return out


def openers(parsed: Parsed) -> list[int]:
    """The lines whose quote is still open at their end: records that may go on."""
    return [n for n, e in zip(parsed.line_nos, parsed.errors, strict=True) if e and UNCLOSED in e]


@dataclass(frozen=True)
class Dialect:
    """What a sound record looks like: its delimiter, its width, and the caps of a join."""

    delim: str
    width: int
    max_lines: int
    max_bytes: int


def join_records(
    first_lines: list[int],
    opened: Mapping[int, tuple[str, str | None]],
    following: Mapping[int, tuple[str, str | None]],
    dialect: Dialect,
) -> Joined:
    """Join each opener in ``first_lines`` (ascending) with the lines that finish its record.

    ``opened`` holds the openers' (line, err), ``following`` (line_no -> (line, err)) the lines
    after them. An opener taken by an earlier record is skipped; one that gives no sound record joins
    nothing (its own error says why).
    """
    joined = Joined({}, [])
    taken: set[int] = set()
    for first in first_lines:
        if first in taken:
            continue
        span = _span(first, opened[first], following, dialect)
        if span is None:
            continue
        last, record, err = span
        joined.records[first] = (record, err)
        taken.update(range(first + 1, last + 1))
    joined.taken.extend(sorted(taken))
    return joined


def _span(
    first: int,
    opener: tuple[str, str | None],
    following: Mapping[int, tuple[str, str | None]],
    dialect: Dialect,
) -> tuple[int, str, str | None] | None:
    """(last line, joined text, error) of the record starting at ``first``; None if none is sound."""
    line = opener[0]
    parts = [line]
    errors = [f"line {first}: {opener[1]}"] if opener[1] else []

    def lines() -> Iterator[str]:
        yield line + "\n"
        size = len(line.encode())
        for n in range(first + 1, first + dialect.max_lines):
            if n not in following:
                return
            nxt, err = following[n]
            size += len(nxt.encode()) + 1
            if size > dialect.max_bytes:
                return
            parts.append(nxt)
            if err:
                errors.append(f"line {n}: {err}")
            yield nxt + "\n"

    try:
        fields = next(csv.reader(lines(), delimiter=dialect.delim, strict=True))
    except (csv.Error, StopIteration):
        return None
    if len(fields) != dialect.width:
        return None
    # A line taken whose bytes were refused (undecodable, NUL) makes the record refused, whole.
    return first + len(parts) - 1, "\n".join(parts), "; ".join(errors) or None


def unclosed_detail(dialect: Dialect) -> str:
    """What the error of an opener that joined nothing says."""
    return (
        f"bad quoting: unterminated quote (no sound record of {dialect.width} fields closes it within "
        f"{dialect.max_lines} lines or {dialect.max_bytes:,} bytes); fix the quoting in the export"
    )
