"""The columns of the feed's files and how the light client reads them: the CSV beside each
Parquet file (``docs/feeds.md`` §1), with the stdlib's ``csv``.

One list of columns: ``pipelines.feeds.publish`` builds its Arrow schemas from
:data:`FEED_COLUMNS` and :data:`NOTICE_COLUMNS`, so the publisher and every client read the same
names, types and order. The CSV is hashed and counted in the signed manifest like the Parquet
file, so reading it instead costs no trust; Parquet would need pyarrow (≈ 40 MB), which a
platform's light client must not pull in.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from typing import NamedTuple

from number_recycling_client.errors import TamperedFileError

Value = str | int | bool | dt.date | None


class Column(NamedTuple):
    name: str
    kind: str  # string | date | int64 | int8 | bool
    required: bool  # never empty
    optional: bool = False  # an earlier 1.x publisher's file may lack it (read as empty)


FEED_COLUMNS: tuple[Column, ...] = (
    Column("msisdn", "string", True),
    Column("event", "string", True),  # released | reissued
    Column("disconnected_on", "date", False),
    Column("released_on", "date", False),
    Column("reissued_on", "date", False),
    Column("region", "string", False),
    Column("seq", "int64", True),
    # How the prior tenure ended: cancel | suspend (双停) | reissue (sold while still held: a
    # violation) | port_out (the number came back from another carrier and was sold).
    # Last, so readers by position of the first seven columns are unaffected.
    Column("prior_end", "string", False, optional=True),
    # The risk grade of the row (pipelines.feeds.grade): added after prior_end, so older
    # clients, which keep the columns they know and drop the rest, read these files too.
    Column("reminders_reached", "int8", False, optional=True),  # 0, 1, 2 (= 2 or more)
    Column("release_exception", "bool", False, optional=True),
    Column("violation", "bool", False, optional=True),
    Column("risk", "string", False, optional=True),  # low | medium | high
)
GRADE_COLUMNS = ("reminders_reached", "release_exception", "violation", "risk")
# The pending list (pipelines.lifecycle.notices): one row per notice listed or withdrawn on the
# night, in its own file so that a client that knows only recycled.* is unaffected; its seq is
# the notice_events seq, contiguous over the nights.
NOTICE_COLUMNS: tuple[Column, ...] = (
    Column("msisdn", "string", True),
    Column("event", "string", True),  # pending | withdrawn
    Column("disconnected_on", "date", True),
    Column("earliest_release_on", "date", True),
    Column("cause", "string", False),  # cancel | suspend
    Column("region", "string", False),
    Column("seq", "int64", True),
)
FEED_EVENTS = frozenset({"released", "reissued"})
NOTICE_EVENTS = frozenset({"pending", "withdrawn"})


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"not a boolean: {text[:16]!r}")
    return text == "true"


_PARSE: dict[str, Callable[[str], Value]] = {
    "string": str,
    "date": dt.date.fromisoformat,
    "int64": int,
    "int8": int,
    "bool": _bool,
}


def read_csv(data: bytes, columns: Sequence[Column], what: str) -> list[tuple[Value, ...]]:
    """The rows of a feed CSV as tuples in ``columns``' order. Columns a later publisher added
    are left out (the signed SHA-256 still covers them); an optional one an earlier publisher
    lacked is None; an empty cell is None (the publisher writes nulls as empty cells)."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True)
        header = next(reader, [])
        where = {name: i for i, name in enumerate(header)}
        missing = [c.name for c in columns if c.name not in where and not c.optional]
        if missing:
            raise TamperedFileError(f"{what}: columns {missing} are missing (header {header})")
        picks = [(where.get(c.name), _PARSE[c.kind], c) for c in columns]
        return [_row(cells, picks, what, n) for n, cells in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TamperedFileError(f"{what}: the CSV does not parse ({exc})") from None


def _row(
    cells: list[str], picks: list[tuple[int | None, Callable[[str], Value], Column]], what: str, line: int
) -> tuple[Value, ...]:
    out: list[Value] = []
    for at, parse, column in picks:
        text = "" if at is None or at >= len(cells) else cells[at]
        if not text:
            if column.required:
                raise TamperedFileError(f"{what}, line {line}: {column.name} is empty")
            out.append(None)
            continue
        try:
            out.append(parse(text))
        except ValueError:
            raise TamperedFileError(f"{what}, line {line}: {column.name} is not a {column.kind}") from None
    return tuple(out)
