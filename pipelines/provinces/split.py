"""A national drop, split into the provinces' inboxes by its ``region`` column.

A carrier whose BSS exports one file per kind for the whole nation (the embedded default's
``inbox/<D>/``) routes it here into ``provinces/<code>/inbox/<D>/`` before a split night
(``recycle provinces split --date D``; the demo and the equivalence test do the same). Lines
are copied as bytes, never re-encoded, so ingest sees exactly what the BSS wrote and quarantines
exactly what it would have: a line whose region names no configured province (a bad code, a
malformed line) goes to the first province in sorted order, where ingest quarantines it with
its reason — no line is lost or duplicated. Every province gets every file, header-only when
none of its lines is in it (the BSS's own convention for an empty night; preflight requires
the lifecycle and reissue drops in every province). Receipts name reminders, not regions:
they arrive per province from the province's own gateways, so a national receipts file is
refused here. Files are written 0600 (they hold numbers and contacts).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import Settings
from pipelines.errors import ConfigError, DataContractError
from pipelines.ingest.read import MAX_RECORD_LINES, read_header
from pipelines.ingest.spec import spec_for_file
from pipelines.layout import Layout, write_private

REGION = "region"


@dataclass(frozen=True)
class SplitReport:
    day: dt.date
    files: int
    lines: dict[str, int]  # province code -> data lines written
    unrouted: int  # lines sent to the first province for ingest to quarantine


def split_drops(settings: Settings, day: dt.date, source: Path | None = None) -> SplitReport:
    """Split every drop file of ``source`` (default: the national ``inbox/<D>/``) into the
    provinces' inboxes of ``day``. Idempotent: the same input writes the same bytes."""
    if not settings.provinces:
        raise ConfigError("no provinces configured: set `provinces` in the config file to split drops")
    source = source or Layout(settings.data_dir).inbox(day)
    if not source.is_dir():
        raise DataContractError(f"no drops to split: {source} does not exist")
    codes = sorted(settings.provinces)
    lines = dict.fromkeys(codes, 0)
    unrouted = files = 0
    for path in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
        parts, lost = _split_file(path, codes)
        for code, rows in parts.items():
            write_private(Layout(settings.for_province(code).data_dir).inbox(day) / path.name, b"".join(rows))
            lines[code] += len(rows) - 1  # physical lines but the header
        unrouted += lost
        files += 1
    return SplitReport(day, files, lines, unrouted)


def _split_file(path: Path, codes: list[str]) -> tuple[dict[str, list[bytes]], int]:
    spec = spec_for_file(path.name)
    if spec is None or REGION not in spec.names:
        raise DataContractError(
            f"{path}: not a drop with a {REGION!r} column, so its lines cannot be routed to a "
            "province; drops that name reminders (receipts) come per province from its gateways"
        )
    rows = path.read_bytes().splitlines(keepends=True)
    if not rows:
        raise DataContractError(f"{path}: empty file, not even a header; ask the BSS to export it again")
    # The header as ingest reads it (comma or |, BOM, case): the region's place in a line.
    delim, names, _ = read_header(_text(rows[0]), spec, path.name)
    at = names.index(REGION)
    out = {code: [_ending(rows[0])] for code in codes}
    unrouted = 0
    for record in _records(rows[1:]):
        code = _region(b"".join(record), delim, at)
        if code not in out:
            code, unrouted = codes[0], unrouted + 1
        out[code].extend(record)
    return out, unrouted


def _records(lines: list[bytes]) -> Iterator[list[bytes]]:
    """Physical lines grouped into records as ingest joins them: a line whose quote is still
    open continues on the next ones, at most MAX_RECORD_LINES in all (else it stands alone)."""
    i = 0
    while i < len(lines):
        quotes, j = lines[i].count(b'"'), i + 1
        while quotes % 2 and j < len(lines) and j - i < MAX_RECORD_LINES:
            quotes, j = quotes + lines[j].count(b'"'), j + 1
        if quotes % 2:
            j = i + 1  # never closes in time: ingest quarantines the line alone
        yield lines[i:j]
        i = j


def _region(record: bytes, delim: str, at: int) -> str:
    try:
        fields = next(csv.reader([_text(record).rstrip("\r\n")], delimiter=delim), [])
    except csv.Error:
        return ""  # ingest quarantines it as malformed
    return fields[at].strip() if len(fields) > at else ""


def _text(raw: bytes) -> str:
    """A line's text for routing: region codes are ASCII in UTF-8 and GBK alike."""
    return raw.decode("utf-8", errors="replace")


def _ending(header: bytes) -> bytes:
    """The header line, ending in a newline even when it was the file's last line."""
    return header if header.endswith((b"\n", b"\r")) else header + b"\n"
