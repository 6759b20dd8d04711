"""Platforms close the loop: acknowledgements, proof of notification, and the new holder's view.

A platform reports per number what it did about accounts bound to it: ``unbound``,
``no_account`` or ``step_up_enabled``. Reports arrive through ``POST
/number-recycling/v0.2/acknowledgements`` (JSON or CSV) or as a CSV file the operator imports
(``recycle acks import``); both go through :func:`read_acknowledgements` and
:func:`validate_acknowledgements` (all or nothing) and are kept by :class:`AckStore` in
``<data>/server/acknowledgements.sqlite``, beside the token store and never in the nightly
state file.

:func:`notification_evidence` answers the court's questions about one number from three
records: the published daily feed files (which feed days listed it), the server's audit log
(which platform downloaded a file that listed it, when, and the file's SHA-256), and the
stored acknowledgements (what each platform said it did, and when). :func:`platform_outcomes`
is the one rule for what a number's new holder is told — platforms named only when they agreed
to be, the others counted, nothing about the prior holder — read by the holder's notice at sale
(:mod:`pipelines.reminders.holder_notice`) and by :func:`new_owner_view` (``recycle new-owner``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import sqlite3
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from number_recycling_client.wire import Envelope, Manifest, sha256_hex

from pipelines.config import Settings
from pipelines.errors import DataContractError, TerminalError, TransientError
from pipelines.feeds.publish import DAILY_CSV, DAILY_PARQUET, SNAPSHOT_DAYS, FeedPaths
from pipelines.feeds.query_snapshot import TENURES, current_snapshot_dir
from pipelines.layout import create_private_file, private_dir
from pipelines.numbers import mask
from pipelines.server.platforms import FEED_DOWNLOADS, PHONE_PATTERN, TokenStore, server_dir

STATUSES = ("unbound", "no_account", "step_up_enabled")
MAX_ACK_ITEMS = 100_000  # per HTTP request; an operator import has no limit
CSV_HEADER = ("phone_number", "status", "feed_date", "observed_at")
JSON_FIELDS = ("phoneNumber", "status", "feedDate", "observedAt")
# A platform's clock may run a little ahead of ours; more than this is a wrong observedAt.
CLOCK_SKEW = dt.timedelta(minutes=5)
ACK_DB = "acknowledgements.sqlite"

_RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
_RFC3339_RE = re.compile(_RFC3339)
_PHONE_RE = re.compile(PHONE_PATTERN)
_DAY_FILE = re.compile(r"\d{4}-\d{2}-\d{2}\.jsonl")
_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_BOM = b"\xef\xbb\xbf"
_STRING_STRUCT = pa.struct([(name, pa.string()) for name in JSON_FIELDS])


def utc_text(at: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds (``2026-11-28T09:30:00.000000Z``): sorts as text."""
    return at.astimezone(dt.UTC).strftime(_UTC_FORMAT)


# --------------------------------------------------------------------------- reading and validation


@dataclass(frozen=True)
class AckUpload:
    """Acknowledgements as uploaded, before validation: four nullable string columns
    (``CSV_HEADER``), and the form they came in, which decides how an item is named in errors."""

    rows: pa.Table
    form: Literal["json", "csv"]

    def where(self, i: int) -> str:
        """Item ``i`` (0-based) as the uploader counts: ``item 17`` (JSON) or ``line 18`` (CSV)."""
        return f"item {i + 1}" if self.form == "json" else f"line {i + 2}"

    def field(self, column: str) -> str:
        return JSON_FIELDS[CSV_HEADER.index(column)] if self.form == "json" else column


def read_acknowledgements(body: bytes, content_type: str) -> AckUpload:
    """Parse an upload: ``text/csv`` with the header ``phone_number,status,feed_date,observed_at``,
    otherwise JSON ``{"acknowledgements": [{"phoneNumber", "status", "feedDate"?, "observedAt"?}]}``.

    Raises :class:`DataContractError` naming the item or line that breaks the shape.
    """
    if content_type.split(";")[0].strip().lower() == "text/csv":
        return AckUpload(_read_csv(body), "csv")
    return AckUpload(_read_json(body), "json")


def _read_json(body: bytes) -> pa.Table:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise DataContractError("the request body is not valid JSON") from None
    if (
        not isinstance(doc, dict)
        or set(doc) != {"acknowledgements"}
        or not isinstance(doc["acknowledgements"], list)
    ):
        raise DataContractError(
            'the body must be {"acknowledgements": [{"phoneNumber", "status", '
            '"feedDate", "observedAt"}, ...]}'
        )
    items: list[Any] = doc["acknowledgements"]
    not_object = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None)
    if not_object is not None:
        raise DataContractError(f"item {not_object + 1}: each acknowledgement must be a JSON object")
    unknown = set().union(*items) - set(JSON_FIELDS)
    if unknown:
        i = next(i for i, item in enumerate(items) if set(item) - set(JSON_FIELDS))
        names = ", ".join(sorted(str(k) for k in set(items[i]) - set(JSON_FIELDS)))
        raise DataContractError(f"item {i + 1}: unknown field(s) {names}; allowed: {', '.join(JSON_FIELDS)}")
    try:
        array = pa.array(items, type=_STRING_STRUCT)
    except UnicodeEncodeError:  # a "\ud800" escape: a lone surrogate is no UTF-8 text
        i = next(i for i, item in enumerate(items) if not _is_utf8(item))
        raise DataContractError(f"item {i + 1}: a field holds a lone UTF-16 surrogate, not text") from None
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        i, name = next(
            (
                (i, k)
                for i, item in enumerate(items)
                for k, v in item.items()
                if v is not None and not isinstance(v, str)
            ),
            (0, "every field"),
        )
        raise DataContractError(f"item {i + 1}: {name} must be a string") from None
    return pa.Table.from_struct_array(array).rename_columns(list(CSV_HEADER))


def _is_utf8(item: dict[str, Any]) -> bool:
    try:
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_csv(body: bytes) -> pa.Table:
    data = body.removeprefix(_BOM)
    header = data.split(b"\n", 1)[0].rstrip(b"\r").replace(b" ", b"")
    if header != ",".join(CSV_HEADER).encode():
        raise DataContractError(f"the CSV must start with the header line {','.join(CSV_HEADER)}")
    if not data.split(b"\n", 1)[1:] or not data.split(b"\n", 1)[1].strip():
        return pa.table({name: pa.array([], pa.string()) for name in CSV_HEADER})
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(CSV_HEADER)),
            # Blank lines are kept (and refused) so that row i is always line i + 2.
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(CSV_HEADER, pa.string()),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataContractError(_first_bad_csv_line(data) or f"the CSV cannot be read: {exc}") from None
    columns = {}
    for name in CSV_HEADER:
        trimmed = pc.utf8_trim_whitespace(table.column(name))
        columns[name] = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    return pa.table(columns)


def _first_bad_csv_line(data: bytes) -> str | None:
    """Only on the error path: the first line Arrow refused, told the way an operator fixes it."""
    lines = data.split(b"\n")
    for n, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip(b"\r")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return f"line {n}: not UTF-8"
        if not text.strip():
            if n == len(lines):
                continue  # after the newline that ends the last line
            return f"line {n}: blank line; remove it"
        try:
            fields = next(csv.reader([text]))
        except csv.Error as exc:  # a field over csv's 128 KiB limit, a lone carriage return
            return f"line {n}: {exc}"
        if len(fields) != len(CSV_HEADER):
            return f"line {n}: expected {len(CSV_HEADER)} fields ({','.join(CSV_HEADER)}), got {len(fields)}"
    return None


def validate_acknowledgements(
    upload: AckUpload, *, published: Collection[dt.date], now: dt.datetime
) -> pa.Table:
    """Check every item; return the acknowledgements normalised, or raise for the first bad one.

    Rules: the number is E.164 (``PHONE_PATTERN``); status is one of :data:`STATUSES`;
    feed date, when given, is a published feed day; observed at, when given, is an RFC 3339
    date-time with a zone offset, not later than ``now`` (+ :data:`CLOCK_SKEW`). The result has
    columns ``msisdn, status, feed_date`` (``YYYY-MM-DD`` or null) ``, observed_at`` (UTC text
    or null). Raises :class:`DataContractError` naming the item (JSON: ``item N``, 1-based) or
    line (CSV: ``line N``, header = line 1), what is wrong, and how many items are bad.
    """
    rows = upload.rows
    if rows.num_rows == 0:
        raise DataContractError("the upload holds no acknowledgements")
    phone, status, feed, observed = (rows.column(name) for name in CSV_HEADER)
    days = pa.array(sorted(d.isoformat() for d in published), pa.string())
    ok_phone = pc.fill_null(pc.match_substring_regex(phone, PHONE_PATTERN), False)
    ok_status = pc.fill_null(pc.is_in(status, value_set=pa.array(STATUSES)), False)
    ok_feed = pc.or_kleene(pc.is_null(feed), pc.fill_null(pc.is_in(feed, value_set=days), False))
    shaped = pc.fill_null(pc.match_substring_regex(observed, _RFC3339), False)
    utc = pa.timestamp("us", tz="UTC")
    try:
        # upper case: Arrow reads only 'T' and 'Z', RFC 3339 allows 't' and 'z' too
        stamps = pc.utf8_upper(pc.if_else(shaped, observed, pa.scalar(None, pa.string()))).cast(utc)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # a calendar-impossible value (2026-02-30T…) somewhere: the error path, row by row
        stamps = pa.array([None if v is None else _parse_observed(v) for v in observed.to_pylist()], utc)
    ok_observed = pc.or_kleene(
        pc.is_null(observed),
        pc.fill_null(pc.less_equal(stamps, pa.scalar(now + CLOCK_SKEW, utc)), False),
    )
    ok = pc.and_(pc.and_(ok_phone, ok_status), pc.and_(ok_feed, ok_observed))
    if not pc.all(ok).as_py():
        bad = pc.invert(ok)
        first = pc.index(bad, True).as_py()
        count = pc.sum(bad).as_py()
        item = {name: rows.column(name)[first].as_py() for name in CSV_HEADER}
        problems = _problems(upload, item, set(days.to_pylist()), now)
        others = f"; {count} item(s) in all are invalid" if count > 1 else ""
        raise DataContractError(
            f"{upload.where(first)}: {'; '.join(problems)}{others}; "
            "nothing was stored, fix and resend the whole upload"
        )
    return pa.table(
        {
            "msisdn": phone,
            "status": status,
            "feed_date": feed,
            "observed_at": pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ"),  # %S carries the microseconds
        }
    )


def _parse_observed(value: str) -> dt.datetime | None:
    if not _RFC3339_RE.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value.upper())
    except ValueError:
        return None


def _observed_problem(value: str, now: dt.datetime) -> str | None:
    if not _RFC3339_RE.match(value):
        return "must be an RFC 3339 date-time with a time zone, e.g. 2026-11-27T10:00:00+08:00"
    at = _parse_observed(value)
    if at is None:
        return "is not a real date and time"
    if at > now + CLOCK_SKEW:
        return "is in the future"
    return None


def _problems(upload: AckUpload, item: dict[str, Any], days: set[str], now: dt.datetime) -> list[str]:
    """What is wrong with one item, in words (the error path only)."""
    out = []
    phone, status, feed, observed = (item[name] for name in CSV_HEADER)
    if phone is None:
        out.append(f"{upload.field('phone_number')} is missing")
    elif not _PHONE_RE.fullmatch(phone):
        # the number is not echoed: error messages end up in logs
        out.append(f"{upload.field('phone_number')} must be E.164 matching {PHONE_PATTERN}")
    if status is None:
        out.append(f"status is missing (one of {', '.join(STATUSES)})")
    elif status not in STATUSES:
        out.append(f"status {status[:40]!r} is not one of {', '.join(STATUSES)}")
    if feed is not None and feed not in days:
        out.append(f"{upload.field('feed_date')} {feed[:40]!r} is not a published feed day (YYYY-MM-DD)")
    if observed is not None:
        problem = _observed_problem(observed, now)
        if problem is not None:
            out.append(f"{upload.field('observed_at')} {observed[:40]!r} {problem}")
    return out


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class AckReceipt:
    """What one upload did: items accepted, how many were new, when, and which batch holds them."""

    accepted: int
    stored: int  # new rows; accepted - stored were already stored (an identical resubmission)
    received_at: dt.datetime
    batch_id: int
    request_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "alreadyStored": self.accepted - self.stored,
            "receivedAt": utc_text(self.received_at),
        }


def acknowledgements_digest(acks: pa.Table) -> str:
    """SHA-256 of ``msisdn,status,feed_date,observed_at\\n`` per normalised item, in upload order
    (empty for a missing value): the same for a JSON upload and its CSV twin."""
    cols = [pc.fill_null(acks.column(name), "") for name in ("msisdn", "status", "feed_date", "observed_at")]
    lines = pc.binary_join_element_wise(*cols, ",")
    return sha256_hex("".join(f"{line}\n" for line in lines.to_pylist()).encode("utf-8"))


class AckStore:
    """Acknowledgements in SQLite, one row per (number, platform, status, feed date).

    A resubmission of the same (platform, number, status, feed date) is stored once, keeping
    the first ``observed_at`` and ``received_at``. Each upload is also a row of ``ack_batches``
    (platform, source, time, item count, new rows, digest), so what arrived in which call is
    on record even when everything in it was already known. Its own file, not the token
    store's: a write there would drop the server's token cache on every upload.
    """

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        create_private_file(path)  # numbers: 0600, and SQLite gives its -wal/-shm the same mode
        self.path = path
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA busy_timeout = 10000")
        self._con.execute("PRAGMA journal_mode = WAL")  # readers (evidence) never wait for an upload
        self._con.execute(
            """
            CREATE TABLE IF NOT EXISTS ack_batches (
                batch_id INTEGER PRIMARY KEY,
                platform TEXT NOT NULL,
                source TEXT NOT NULL,               -- api | import:<file name>
                received_at TEXT NOT NULL,
                items INTEGER NOT NULL,
                stored INTEGER NOT NULL,
                request_sha256 TEXT NOT NULL
            )
            """
        )
        self._con.execute(
            """
            CREATE TABLE IF NOT EXISTS acknowledgements (
                msisdn TEXT NOT NULL,
                platform TEXT NOT NULL,
                status TEXT NOT NULL,
                feed_date TEXT NOT NULL,            -- '' when the platform did not name the feed
                observed_at TEXT,
                received_at TEXT NOT NULL,
                batch_id INTEGER NOT NULL,
                PRIMARY KEY (msisdn, platform, status, feed_date)
            ) WITHOUT ROWID
            """
        )

    @classmethod
    def open(cls, data_dir: Path) -> AckStore:
        return cls(server_dir(data_dir) / ACK_DB)

    def close(self) -> None:
        self._con.close()

    def add(self, platform: str, acks: pa.Table, received_at: dt.datetime, source: str) -> AckReceipt:
        """Store validated acknowledgements (:func:`validate_acknowledgements`) in one transaction."""
        digest = acknowledgements_digest(acks)
        received = utc_text(received_at)
        values = zip(
            acks.column("msisdn").to_pylist(),
            acks.column("status").to_pylist(),
            pc.fill_null(acks.column("feed_date"), "").to_pylist(),
            acks.column("observed_at").to_pylist(),
            strict=True,
        )
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise TransientError(f"{self.path} is busy ({exc}); retry the upload") from exc
            try:
                cur = self._con.execute(
                    "INSERT INTO ack_batches (platform, source, received_at, items, stored, request_sha256)"
                    " VALUES (?, ?, ?, ?, 0, ?)",
                    (platform, source, received, acks.num_rows, digest),
                )
                batch = int(cur.lastrowid or 0)
                before = self._con.total_changes
                self._con.executemany(
                    "INSERT INTO acknowledgements VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    ((m, platform, s, f, o, received, batch) for m, s, f, o in values),
                )
                stored = self._con.total_changes - before
                self._con.execute("UPDATE ack_batches SET stored = ? WHERE batch_id = ?", (stored, batch))
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return AckReceipt(acks.num_rows, stored, received_at, batch, digest)

    def for_number(self, msisdn: str) -> list[StoredAck]:
        """Every acknowledgement about ``msisdn``, ordered by platform, time received, status, feed date."""
        with self._lock:
            rows = self._con.execute(
                "SELECT a.platform, a.status, a.feed_date, a.observed_at, a.received_at, a.batch_id,"
                " b.source FROM acknowledgements a JOIN ack_batches b USING (batch_id)"
                " WHERE a.msisdn = ? ORDER BY a.platform, a.received_at, a.status, a.feed_date",
                (msisdn,),
            ).fetchall()
        return [
            StoredAck(
                platform=p,
                status=s,
                feed_date=f or None,
                observed_at=o,
                received_at=r,
                batch=b,
                source=src,
            )
            for p, s, f, o, r, b, src in rows
        ]

    def count(self) -> int:
        with self._lock:
            row = self._con.execute("SELECT count(*) FROM acknowledgements").fetchone()
        return int(row[0])


# --------------------------------------------------------------------------- evidence


class StoredAck(TypedDict):
    """One stored acknowledgement (:meth:`AckStore.for_number`); times are UTC RFC 3339 text."""

    platform: str
    status: str  # one of STATUSES
    feed_date: str | None  # YYYY-MM-DD
    observed_at: str | None
    received_at: str
    batch: int
    source: str  # "http" or "import:<file name>"


class Acknowledgement(TypedDict):
    """A platform's acknowledgement as :func:`notification_evidence` lists it under the platform."""

    status: str
    feed_date: str | None
    observed_at: str | None
    received_at: str
    batch: int
    source: str


class Listing(TypedDict):
    """A published feed row about the number; dates are ``YYYY-MM-DD``."""

    feed_date: str
    event: str
    disconnected_on: str | None
    released_on: str | None
    reissued_on: str | None
    region: str | None
    seq: int


class Download(TypedDict):
    at: str  # UTC RFC 3339 text
    path: str
    status: int  # 200, or 304: the platform proved it holds the file
    sha256: str | None
    snapshot_of: str | None  # the feed day of the rolling snapshot version downloaded
    lists: list[str]  # the listing days this download put in the platform's hands


class Notified(TypedDict):
    feed_date: str  # a listing day
    first_at: str  # the first download that put a file listing the number in the platform's hands
    path: str


class PlatformEvidence(TypedDict):
    platform: str
    notified: list[Notified]
    downloads: list[Download]
    acknowledgements: list[Acknowledgement]


class NotificationEvidence(TypedDict):
    """:func:`notification_evidence`: JSON-serialisable, keys in this order."""

    msisdn: str  # E.164, in full: mask it for display
    listings: list[Listing]
    platforms: list[PlatformEvidence]


class NewOwnerView(TypedDict):
    """:func:`new_owner_view`: counts only, nothing about the prior holder; keys in this order."""

    number: str  # masked
    as_of: str
    holder_since: str
    recycled: bool
    platforms_notified: int
    platforms_acknowledged: int
    unbound: int  # distinct platforms per status (STATUSES)
    no_account: int
    step_up_enabled: int
    named: list[PlatformAnswer]  # platforms that agreed to be named, with their answers
    others: OtherPlatforms  # the rest, counted


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _listings(
    con: duckdb.DuckDBPyConnection, paths: FeedPaths, msisdn: str, since: dt.date | None
) -> list[dict[str, Any]]:
    """The feed rows about ``msisdn`` on every published day (from ``since``), in seq order."""
    days = [d for d in paths.published_days() if since is None or d >= since]
    if not days:
        return []
    files = [str(paths.day_dir(d) / DAILY_PARQUET) for d in days]
    # Within a day rows are sorted by number, so Parquet row-group statistics skip most of each file.
    rows = con.execute(
        r"""
        SELECT CAST(regexp_extract(filename, '(\d{4}-\d{2}-\d{2})[/\\]recycled\.parquet$', 1) AS DATE)
                   AS feed_date,
               event, disconnected_on, released_on, reissued_on, region, seq
        FROM read_parquet($files, filename = true)
        WHERE msisdn = $msisdn
        ORDER BY seq
        """,
        {"files": files, "msisdn": msisdn},
    ).fetchall()
    keys = ("feed_date", "event", "disconnected_on", "released_on", "reissued_on", "region", "seq")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _daily_paths(day: dt.date) -> list[str]:
    return [f"/feeds/daily/{day.isoformat()}/{name}" for name in (DAILY_PARQUET, DAILY_CSV)]


_SNAPSHOT_PATHS = [f"/feeds/snapshot/{name}" for name in (DAILY_PARQUET, DAILY_CSV)]


def _downloads(
    con: duckdb.DuckDBPyConnection, audit_dir: Path, wanted: list[str], since: dt.date, until: dt.date | None
) -> list[tuple[str, dt.datetime, str, int, str | None]]:
    """Successful feed downloads (200, or 304: the platform proved it holds the file) of the
    ``wanted`` paths, from the audit of UTC days ``since - 1`` .. ``until + 1``: each day's
    feed-download copy where the audit log kept one, else the whole day's file."""
    if not audit_dir.is_dir():
        return []
    lo = (since - dt.timedelta(days=1)).isoformat()
    hi = None if until is None else (until + dt.timedelta(days=1)).isoformat()
    files = []
    for p in sorted(audit_dir.iterdir()):
        if _DAY_FILE.fullmatch(p.name) and p.stem >= lo and (hi is None or p.stem <= hi):
            copy = audit_dir / FEED_DOWNLOADS / p.name
            files.append(str(copy if copy.exists() else p))
    if not files:
        return []
    # ignore_errors: the server may be half-way through appending the last line of today's file
    rows = con.execute(
        """
        SELECT platform, CAST("at" AS TIMESTAMPTZ) AS at_utc, path, status, sha256
        FROM read_json($files, format = 'newline_delimited', ignore_errors = true,
                       columns = {'at': 'VARCHAR', 'platform': 'VARCHAR', 'action': 'VARCHAR',
                                  'path': 'VARCHAR', 'status': 'INTEGER', 'sha256': 'VARCHAR'})
        WHERE action = 'download' AND status IN (200, 304) AND platform IS NOT NULL
          AND list_contains($wanted, path)
        ORDER BY at_utc, platform, path, status
        """,
        {"files": files, "wanted": wanted},
    ).fetchall()
    return [(p, at, path, int(status), sha) for p, at, path, status, sha in rows]


def _snapshot_versions(paths: FeedPaths, listed: list[dt.date], shas: set[str]) -> dict[str, dt.date]:
    """Snapshot file SHA-256 -> the feed day whose manifest names it, for the snapshots that can
    hold a listed day (published on a listed day or up to 399 days after it)."""
    if not shas or not listed:
        return {}
    lo, hi = min(listed), max(listed) + dt.timedelta(days=SNAPSHOT_DAYS - 1)
    versions: dict[str, dt.date] = {}
    for day in paths.published_days():
        if lo <= day <= hi:
            path = paths.manifest(day)
            manifest = Envelope.from_bytes(path.read_bytes(), Manifest, str(path)).signed
            for meta in manifest.snapshot:
                if meta.sha256 in shas:
                    versions[meta.sha256] = manifest.feed_date
    return versions


@dataclass(frozen=True)
class _Notice:
    platform: str
    at: dt.datetime
    path: str
    status: int
    sha256: str | None
    snapshot_of: dt.date | None
    lists: tuple[dt.date, ...]  # the listing days this download put in the platform's hands


def _notices(
    settings: Settings, con: duckdb.DuckDBPyConnection, listings: list[dict[str, Any]], until: dt.date | None
) -> list[_Notice]:
    listed = sorted({row["feed_date"] for row in listings})
    if not listed:
        return []
    paths = FeedPaths.of(settings)
    wanted = [p for day in listed for p in _daily_paths(day)] + _SNAPSHOT_PATHS
    rows = _downloads(con, server_dir(settings.data_dir) / "audit", wanted, listed[0], until)
    shas = {sha for _, _, path, _, sha in rows if path in _SNAPSHOT_PATHS and sha is not None}
    versions = _snapshot_versions(paths, listed, shas)
    notices = []
    for platform, at, path, status, sha in rows:
        if path in _SNAPSHOT_PATHS:
            # The rolling snapshot is rewritten daily: only its SHA-256 tells which days it held.
            of = versions.get(sha) if sha is not None else None
            if of is None:
                continue
            lists = tuple(d for d in listed if of - dt.timedelta(days=SNAPSHOT_DAYS - 1) <= d <= of)
        else:
            # daily files never change once published: the path alone names the content
            of = None
            lists = (dt.date.fromisoformat(path.split("/")[3]),)
        if lists:
            notices.append(_Notice(platform, at, path, status, sha, of, lists))
    return notices


def notification_evidence(settings: Settings, msisdn: str) -> NotificationEvidence:
    """Was each platform told about ``msisdn`` (E.164), when, and what did it say it did?

    Returns a JSON-serialisable dict in a deterministic order:

    - ``listings``: the feed rows about the number (feed day, event, disconnected_on,
      released_on, reissued_on, region, seq), from the published daily Parquet files;
    - ``platforms``: per platform (by name) ``notified`` (per listing day, the first download
      that put a file listing the number in its hands: a daily file of that day, or a rolling
      snapshot whose SHA-256 a manifest ties to a day within 400 days after it),
      ``downloads`` (every such download: time, path, status 200/304, SHA-256, the listing
      days it covers) and ``acknowledgements`` (status, feed day, observed_at, received_at,
      batch and source). A platform that acknowledged without a recorded download is listed
      too, with no downloads.

    Snapshot downloads logged before the audit log carried SHA-256s prove nothing and are left
    out. The number is in the result in full (the evidence is about it): mask it for display.
    """
    paths = FeedPaths.of(settings)
    with _connect() as con:
        listings = _listings(con, paths, msisdn, None)
        notices = _notices(settings, con, listings, None)
    return NotificationEvidence(
        msisdn=msisdn,
        listings=[_listing(row) for row in listings],
        platforms=_platform_evidence(notices, _acks(settings, msisdn)),
    )


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def _listing(row: dict[str, Any]) -> Listing:
    return Listing(
        feed_date=_iso(row["feed_date"]),
        event=_iso(row["event"]),
        disconnected_on=_iso(row["disconnected_on"]),
        released_on=_iso(row["released_on"]),
        reissued_on=_iso(row["reissued_on"]),
        region=_iso(row["region"]),
        seq=_iso(row["seq"]),
    )


def _platform_evidence(notices: Sequence[_Notice], acks: Sequence[StoredAck]) -> list[PlatformEvidence]:
    """Per platform, by name: first notice per listing day, every download, every acknowledgement."""
    by_platform: dict[str, PlatformEvidence] = {}
    notified: dict[str, dict[str, Notified]] = {}
    for n in notices:
        e = by_platform.setdefault(n.platform, _no_evidence(n.platform))
        at = utc_text(n.at)
        e["downloads"].append(
            Download(
                at=at,
                path=n.path,
                status=n.status,
                sha256=n.sha256,
                snapshot_of=None if n.snapshot_of is None else n.snapshot_of.isoformat(),
                lists=[d.isoformat() for d in n.lists],
            )
        )
        first = notified.setdefault(n.platform, {})
        for day in n.lists:
            first.setdefault(day.isoformat(), Notified(feed_date=day.isoformat(), first_at=at, path=n.path))
    for ack in acks:
        by_platform.setdefault(ack["platform"], _no_evidence(ack["platform"]))["acknowledgements"].append(
            Acknowledgement(
                status=ack["status"],
                feed_date=ack["feed_date"],
                observed_at=ack["observed_at"],
                received_at=ack["received_at"],
                batch=ack["batch"],
                source=ack["source"],
            )
        )
    platforms = []
    for name in sorted(by_platform):
        e = by_platform[name]
        days = notified.get(name, {})
        e["notified"] = [days[d] for d in sorted(days)]
        platforms.append(e)
    return platforms


def _no_evidence(platform: str) -> PlatformEvidence:
    return PlatformEvidence(platform=platform, notified=[], downloads=[], acknowledgements=[])


def _acks(settings: Settings, msisdn: str) -> list[StoredAck]:
    return _acks_of(settings, [msisdn]).get(msisdn, [])


# --------------------------------------------------------------------------- the new holder's view


def _tenures(settings: Settings, msisdn: str) -> list[tuple[dt.date, dt.date | None, bool]]:
    """The number's tenures in the latest snapshot: (start, end, began by a reissue)."""
    directory = current_snapshot_dir(settings)
    if directory is None:
        raise TerminalError(
            "no query snapshot is published yet; the nightly run publishes one "
            "(recycle run) before a holder's view can be given"
        )
    with _connect() as con:
        rows = con.execute(
            "SELECT tenure_start, tenure_end, opened_by = 'reissue' FROM read_parquet($file)"
            " WHERE msisdn_key = $key ORDER BY tenure_start",
            {"file": str(directory / TENURES), "key": int(msisdn[1:])},
        ).fetchall()
    return [(start, end, bool(reissued)) for start, end, reissued in rows]


def new_owner_view(settings: Settings, msisdn: str, as_of: dt.date) -> NewOwnerView:
    """The current holder's view of ``msisdn`` on ``as_of`` (二次号码焕新).

    The holder's tenure is the one open on ``as_of`` in the latest query snapshot. When it
    began by a reissue (the number was recycled to this holder: pipelines.feeds.answer), what
    platforms did about it is :func:`platform_outcomes` from the end of the tenure before it up
    to ``as_of`` — the same function the new holder's notice at sale reads, so the notice and
    this view never disagree. Nothing about the prior holder is returned (no dates of the prior
    tenure); platforms are named only when they agreed to be, the others counted.
    Raises :class:`TerminalError` when nobody holds the number on ``as_of``.
    """
    if not _PHONE_RE.fullmatch(msisdn):
        raise TerminalError("the number must be E.164 (+86...); normalise it first")
    tenures = _tenures(settings, msisdn)
    holder = [
        i for i, (start, end, _) in enumerate(tenures) if start <= as_of and (end is None or end > as_of)
    ]
    if not holder:
        raise TerminalError(
            f"{mask(msisdn)} has no holder on {as_of} in the latest snapshot; "
            "the view is for the number's current subscriber"
        )
    i = holder[-1]
    prior_end = tenures[i - 1][1] if i > 0 else None
    # Recycled for this holder exactly when their tenure began by a reissue (pipelines.feeds.answer).
    recycled = prior_end is not None and tenures[i][2]
    outcomes = (
        platform_outcomes(settings, {msisdn: prior_end}, as_of)[msisdn]
        if recycled and prior_end is not None
        else _outcomes(as_of, set(), {}, frozenset())  # the first holder, or a port back in
    )
    return NewOwnerView(
        number=mask(msisdn),
        as_of=as_of.isoformat(),
        holder_since=tenures[i][0].isoformat(),
        recycled=recycled,
        platforms_notified=outcomes["notified"],
        platforms_acknowledged=outcomes["acknowledged"],
        unbound=outcomes["unbound"],
        no_account=outcomes["no_account"],
        step_up_enabled=outcomes["step_up_enabled"],
        named=outcomes["named"],
        others=outcomes["others"],
    )


# --------------------------------------------------------------------------- what platforms did


class PlatformAnswer(TypedDict):
    """A platform that agreed to be named, and what it reported (in :data:`STATUSES` order)."""

    platform: str
    answers: list[str]  # empty: notified, has not answered yet


class OtherPlatforms(TypedDict):
    """The platforms that did not agree to be named: counted, never named."""

    platforms: int
    unbound: int
    no_account: int
    step_up_enabled: int
    not_answered: int


class PlatformOutcomes(TypedDict):
    """:func:`platform_outcomes` for one number: the one rule behind the new holder's notice and
    ``recycle new-owner``. ``unbound`` etc. count every platform (named or not) per status."""

    as_of: str
    notified: int  # distinct platforms that downloaded a feed file listing the number since
    acknowledged: int  # distinct platforms that reported anything since
    unbound: int
    no_account: int
    step_up_enabled: int
    named: list[PlatformAnswer]
    others: OtherPlatforms


def platform_outcomes(
    settings: Settings, since: Mapping[str, dt.date], as_of: dt.date
) -> dict[str, PlatformOutcomes]:
    """What platforms did about each number of ``since`` (E.164 → the end of its prior tenure),
    as of the carrier day ``as_of``, all numbers in one pass over the feed, audit and store.

    A platform counts for a number when it downloaded, on or before ``as_of``, a feed file
    listing the number on a feed day from ``since`` on (:func:`_notices`), or when it reported a
    status received from ``since`` to ``as_of`` naming no feed day or one from ``since`` on (an
    earlier one belongs to an earlier recycling). Platforms that agreed to be named
    (:meth:`TokenStore.named_platforms`) are listed with their answers; the others are counted.
    Only what was received by the end of ``as_of`` is read, so the answer for a past day does
    not change when later acknowledgements arrive: the nightly notice of day D is reproducible.
    """
    if not since:
        return {}
    paths = FeedPaths.of(settings)
    with _connect() as con:
        listed = _listed_days(con, paths, since)
        rows = [{"feed_date": d} for d in sorted(set().union(set(), *listed.values()))]
        notices = _notices(settings, con, rows, as_of)
    told: dict[dt.date, set[str]] = {}  # listing day -> platforms a download put it before
    for n in notices:
        if settings.carrier_day(n.at) <= as_of:
            for d in n.lists:
                told.setdefault(d, set()).add(n.platform)
    named = _named_platforms(settings)
    acks = _acks_of(settings, list(since))
    out = {}
    for msisdn, end in since.items():
        notified = set().union(set(), *(told.get(d, set()) for d in listed.get(msisdn, ())))
        answers = _answers(settings, acks.get(msisdn, []), end, as_of)
        out[msisdn] = _outcomes(as_of, notified, answers, named)
    return out


def _listed_days(
    con: duckdb.DuckDBPyConnection, paths: FeedPaths, since: Mapping[str, dt.date]
) -> dict[str, set[dt.date]]:
    """Per number, the published feed days from its ``since`` on that list it."""
    first = min(since.values())
    days = [d for d in paths.published_days() if d >= first]
    if not days:
        return {}
    con.register("_wanted", pa.table({"msisdn": list(since), "since": list(since.values())}))
    rows = con.execute(
        r"""
        SELECT f.msisdn, f.feed_date FROM (
            SELECT msisdn, CAST(regexp_extract(filename, '(\d{4}-\d{2}-\d{2})[/\\]recycled\.parquet$', 1)
                                AS DATE) AS feed_date
            FROM read_parquet($files, filename = true)
            WHERE msisdn IN (SELECT msisdn FROM _wanted)) f
        JOIN _wanted w ON w.msisdn = f.msisdn AND f.feed_date >= w.since
        """,
        {"files": [str(paths.day_dir(d) / DAILY_PARQUET) for d in days]},
    ).fetchall()
    con.unregister("_wanted")
    listed: dict[str, set[dt.date]] = {}
    for msisdn, feed_date in rows:
        listed.setdefault(msisdn, set()).add(feed_date)
    return listed


def _answers(
    settings: Settings, acks: Sequence[StoredAck], since: dt.date, as_of: dt.date
) -> dict[str, set[str]]:
    """Platform -> the statuses it reported for this recycling, received by the end of ``as_of``."""
    lo, hi = since.isoformat(), as_of.isoformat()
    answers: dict[str, set[str]] = {}
    for ack in acks:
        received = settings.carrier_day(dt.datetime.strptime(ack["received_at"], _UTC_FORMAT)).isoformat()
        if lo <= received <= hi and (ack["feed_date"] is None or ack["feed_date"] >= lo):
            answers.setdefault(ack["platform"], set()).add(ack["status"])
    return answers


def _outcomes(
    as_of: dt.date, notified: set[str], answers: Mapping[str, set[str]], named: frozenset[str]
) -> PlatformOutcomes:
    """The rule, in one place: named platforms listed with their answers, the others counted."""
    everyone = notified | set(answers)
    per_status = {s: sum(1 for p in everyone if s in answers.get(p, ())) for s in STATUSES}
    others = [p for p in everyone if p not in named]
    return PlatformOutcomes(
        as_of=as_of.isoformat(),
        notified=len(notified),
        acknowledged=len(answers),
        unbound=per_status["unbound"],
        no_account=per_status["no_account"],
        step_up_enabled=per_status["step_up_enabled"],
        named=[
            PlatformAnswer(platform=p, answers=[s for s in STATUSES if s in answers.get(p, ())])
            for p in sorted(everyone & named)
        ],
        others=OtherPlatforms(
            platforms=len(others),
            unbound=sum(1 for p in others if "unbound" in answers.get(p, ())),
            no_account=sum(1 for p in others if "no_account" in answers.get(p, ())),
            step_up_enabled=sum(1 for p in others if "step_up_enabled" in answers.get(p, ())),
            not_answered=sum(1 for p in others if not answers.get(p)),
        ),
    )


def _named_platforms(settings: Settings) -> frozenset[str]:
    """Platforms that agreed to be named; none when no platform was ever registered."""
    path = server_dir(settings.data_dir) / "platforms.sqlite"
    if not path.exists():
        return frozenset()
    store = TokenStore(path)
    try:
        return store.named_platforms()
    finally:
        store.close()


def _acks_of(settings: Settings, numbers: Sequence[str]) -> dict[str, list[StoredAck]]:
    """Every stored acknowledgement of each number (none before the server stored any)."""
    path = server_dir(settings.data_dir) / ACK_DB
    if not path.exists():
        return {}
    store = AckStore(path)
    try:
        return {m: store.for_number(m) for m in numbers}
    finally:
        store.close()


def evidence_lines(evidence: NotificationEvidence) -> Iterable[str]:
    """The evidence as short human lines, the number masked (``recycle notifications``)."""
    yield f"number {mask(evidence['msisdn'])}"
    if not evidence["listings"]:
        yield "  no published feed day lists this number"
    for row in evidence["listings"]:
        yield (
            f"  listed {row['feed_date']}: {row['event']} (seq {row['seq']}), disconnected_on "
            f"{row['disconnected_on']}, released_on {row['released_on'] or '-'}, reissued_on "
            f"{row['reissued_on'] or '-'}"
        )
    if not evidence["platforms"]:
        yield "  no platform downloaded a file listing it or acknowledged it"
    for p in evidence["platforms"]:
        yield f"platform {p['platform']}: {len(p['downloads'])} download(s)"
        for n in p["notified"]:
            yield f"  notified of {n['feed_date']} at {n['first_at']} ({n['path']})"
        for a in p["acknowledgements"]:
            feed = f" for feed {a['feed_date']}" if a["feed_date"] else ""
            seen = f", observed {a['observed_at']}" if a["observed_at"] else ""
            yield f"  acknowledged {a['status']}{feed} at {a['received_at']}{seen} ({a['source']})"


__all__ = [
    "CSV_HEADER",
    "JSON_FIELDS",
    "MAX_ACK_ITEMS",
    "STATUSES",
    "AckReceipt",
    "AckStore",
    "AckUpload",
    "Acknowledgement",
    "Download",
    "Listing",
    "NewOwnerView",
    "NotificationEvidence",
    "Notified",
    "OtherPlatforms",
    "PlatformAnswer",
    "PlatformEvidence",
    "PlatformOutcomes",
    "StoredAck",
    "acknowledgements_digest",
    "evidence_lines",
    "new_owner_view",
    "notification_evidence",
    "platform_outcomes",
    "read_acknowledgements",
    "utc_text",
    "validate_acknowledgements",
]
