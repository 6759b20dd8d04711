"""The signed daily recycled-number feed for platforms, TUF-style.

Layout under ``<data>/feeds/`` (see ``docs/feeds.md``)::

    root.json                     current root (keys, roles, thresholds)
    roots/<N>.root.json           every root version, for clients that follow rotations
    timestamp.json                short-lived, re-signed each run, pins the newest manifest
    manifests/<seq>.json          every manifest by seq (same bytes as the daily copy)
    daily/<D>/recycled.parquet    one row per number released or reissued on logical day D
    daily/<D>/recycled.csv
    daily/<D>/notices.parquet     the pending list: notices listed or withdrawn on D (+ .csv)
    daily/<D>/manifest.json
    snapshot/recycled.parquet     the rows of the last 400 feed days (+ .csv)

Rows come only from the lifecycle's ``releases`` and ``reissues`` tables, so ports,
suspensions that never became final and restored numbers cannot appear. A day is built from
rows whose ``logical_date`` is D (a late release appears on the night it was decided, once).
Every time in the metadata derives from D, and Ed25519 signatures are deterministic, so
running a day twice gives byte-identical files; a day already published with different
content is refused (:class:`FeedConflictError`): published feeds never change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from number_recycling_client.feedfiles import FEED_COLUMNS, GRADE_COLUMNS, NOTICE_COLUMNS, Column
from number_recycling_client.ledger.entries import EntryType, PreparedEntry
from number_recycling_client.wire import (
    ROLE_MANIFEST,
    ROLE_RECEIPT,
    ROLE_ROOT,
    ROLE_TIMESTAMP,
    Envelope,
    Key,
    LedgerPointer,
    LedgerRef,
    Manifest,
    Role,
    Root,
    Timestamp,
    day_start,
    feed_manifest_value,
    file_meta,
    keyid_of,
    pin,
    sha256_hex,
    verify_root_update,
)

from pipelines.config import Settings
from pipelines.errors import ConfigError, DataContractError, FeedConflictError, FormatError
from pipelines.feeds.grade import GRADES, grade_codes
from pipelines.layout import Layout, atomic_write_bytes
from pipelines.ledger.ledger import Ledger
from pipelines.ledger.signer import FileSigner, load_or_create_signer, verifier_key

log = logging.getLogger(__name__)

SNAPSHOT_DAYS = 400
ROOT_LIFETIME = dt.timedelta(days=365)
ROOT_RENEW_BEFORE = dt.timedelta(days=60)  # a run re-signs the root this close to its expiry
MANIFEST_LIFETIME = dt.timedelta(days=31)
TIMESTAMP_LIFETIME = dt.timedelta(days=2)  # a client refuses a feed not refreshed for 2 days

# The columns are the light client's (number_recycling_client.feedfiles: one list for the
# publisher and every reader); Arrow types here.
_ARROW_TYPES = {
    "string": pa.string(),
    "date": pa.date32(),
    "int64": pa.int64(),
    "int8": pa.int8(),
    "bool": pa.bool_(),
}


def _schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind], nullable=not c.required) for c in columns])


FEED_SCHEMA = _schema(FEED_COLUMNS)
NOTICE_SCHEMA = _schema(NOTICE_COLUMNS)
DAILY_PARQUET = "recycled.parquet"
DAILY_CSV = "recycled.csv"
NOTICES_PARQUET = "notices.parquet"
NOTICES_CSV = "notices.csv"
_KEY_INDEX = "feed-keys.json"  # keyid -> signer name; public information, beside the keys
_DAY_DIR = re.compile(r"\d{4}-\d{2}-\d{2}")


def commit_manifest(ledger: Ledger, manifest: Manifest) -> LedgerRef:
    """Append the feed_manifest entry (idempotent by day) and publish a checkpoint covering it."""
    key = f"feed_manifest:{manifest.feed_date.isoformat()}"
    value = feed_manifest_value(manifest.feed_date, manifest.seq, manifest.core_sha256())
    (index,) = ledger.append([PreparedEntry(key, EntryType.FEED_MANIFEST, value)])
    opened = ledger.opening(index)
    if opened.value != value:
        raise FeedConflictError(
            f"the ledger already holds a feed_manifest entry for {manifest.feed_date} (index {index}) "
            "committing to a different manifest; an earlier attempt published other rows. Restore "
            "the state that run used, or publish a correction"
        )
    ledger.publish_checkpoint()
    note = ledger.signed_checkpoint
    assert note is not None
    return LedgerRef(index=index, checkpoint=note.decode("utf-8"), opening=opened.opening.hex())


@dataclass(frozen=True)
class FeedReport:
    day: dt.date
    seq: int
    rows: int
    released: int
    reissued: int
    row_seq_start: int
    manifest_sha256: str
    ledger_index: int | None
    already_published: bool  # the day existed and the rebuild matched it byte for byte
    snapshot_rows: int
    notices: int = 0  # pending notices listed or withdrawn that night (notices.parquet)


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class FeedPaths:
    root: Path

    @classmethod
    def of(cls, settings: Settings) -> FeedPaths:
        return cls(Layout(settings.data_dir).feeds_dir)

    def day_dir(self, day: dt.date) -> Path:
        return self.root / "daily" / day.isoformat()

    def manifest(self, day: dt.date) -> Path:
        return self.day_dir(day) / "manifest.json"

    def by_seq(self, seq: int) -> Path:
        return self.root / "manifests" / f"{seq}.json"

    def root_version(self, version: int) -> Path:
        return self.root / "roots" / f"{version}.root.json"

    @property
    def current_root(self) -> Path:
        return self.root / "root.json"

    @property
    def timestamp(self) -> Path:
        return self.root / "timestamp.json"

    def published_days(self) -> list[dt.date]:
        daily = self.root / "daily"
        if not daily.is_dir():
            return []
        days = [
            dt.date.fromisoformat(p.name)
            for p in daily.iterdir()
            if _DAY_DIR.fullmatch(p.name) and (p / "manifest.json").is_file()
        ]
        return sorted(days)


def rel_daily(day: dt.date, name: str) -> str:
    return f"daily/{day.isoformat()}/{name}"


# --------------------------------------------------------------------------- keys and root


def _key_name(settings: Settings, kind: str, generation: int) -> str:
    return f"{settings.ledger.key_name}/feed-{kind}-{generation}"


def _key_index(keys_dir: Path) -> dict[str, str]:
    path = keys_dir / _KEY_INDEX
    if not path.exists():
        return {}
    index: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return index


def _new_key(settings: Settings, kind: str, generation: int) -> FileSigner:
    keys_dir = Layout(settings.data_dir).keys_dir
    signer = load_or_create_signer(keys_dir, _key_name(settings, kind, generation))
    index = _key_index(keys_dir)
    index[keyid_of(signer.public_key)] = signer.name
    atomic_write_bytes(keys_dir / _KEY_INDEX, json.dumps(index, indent=2, sort_keys=True).encode())
    return signer


def role_signers(settings: Settings, root: Root, role: str) -> list[FileSigner]:
    """The private keys this installation holds for ``role`` of ``root`` (dev: files in keys/)."""
    keys_dir = Layout(settings.data_dir).keys_dir
    index = _key_index(keys_dir)
    spec, _ = root.role_keys(role)
    signers = []
    for keyid in spec.keyids:
        name = index.get(keyid)
        if name is None:
            continue
        signer = load_or_create_signer(keys_dir, name)
        if keyid_of(signer.public_key) != keyid:
            raise ConfigError(
                f"feed key {name!r} under {keys_dir} is not the key root v{root.version} lists for "
                f"role {role!r}; restore the keys directory from backup"
            )
        signers.append(signer)
    if len(signers) < spec.threshold:
        raise ConfigError(
            f"this installation holds {len(signers)} of the {spec.threshold} key(s) needed to sign "
            f"as {role!r} (root v{root.version}); restore {keys_dir} or rotate the root"
        )
    return signers


def load_root(settings: Settings) -> Envelope[Root] | None:
    path = FeedPaths.of(settings).current_root
    if not path.exists():
        return None
    return Envelope.from_bytes(path.read_bytes(), Root, str(path))


def _write_root(paths: FeedPaths, env: Envelope[Root]) -> None:
    data = env.to_bytes()
    atomic_write_bytes(paths.root_version(env.signed.version), data)
    atomic_write_bytes(paths.current_root, data)


def _root_doc(
    version: int,
    expires: dt.datetime,
    root_keys: Sequence[bytes],
    online: bytes,
    ledger: LedgerPointer | None,
) -> Root:
    keys = {keyid_of(k): Key(k) for k in (*root_keys, online)}
    root_role = Role(tuple(sorted(keyid_of(k) for k in root_keys)), threshold=1)
    online_role = Role((keyid_of(online),), threshold=1)
    return Root(
        version=version,
        expires=expires,
        keys=keys,
        roles={
            ROLE_ROOT: root_role,
            ROLE_MANIFEST: online_role,
            ROLE_TIMESTAMP: online_role,
            ROLE_RECEIPT: online_role,
        },
        ledger=ledger,
    )


def ledger_pointer(settings: Settings) -> LedgerPointer:
    """The ledger's origin and checkpoint verifier key, as a root publishes them."""
    signer = load_or_create_signer(Layout(settings.data_dir).keys_dir, settings.ledger.key_name)
    return LedgerPointer(settings.ledger.origin, verifier_key(signer))


def ensure_root(settings: Settings, day: dt.date) -> Envelope[Root]:
    """The current root; created on first run (fresh dev keys), renewed close to its expiry."""
    paths = FeedPaths.of(settings)
    pointer = ledger_pointer(settings)
    current = load_root(settings)
    if current is None:
        root_key = _new_key(settings, "root", 1)
        online = _new_key(settings, "online", 1)
        doc = _root_doc(1, day_start(day) + ROOT_LIFETIME, [root_key.public_key], online.public_key, pointer)
        env = Envelope.create(doc, [root_key])
        _write_root(paths, env)
        log.info(
            "feeds: created root v1 with new development keys under %s", Layout(settings.data_dir).keys_dir
        )
        return env
    root = current.signed
    if root.expires - day_start(day) > ROOT_RENEW_BEFORE and root.ledger == pointer:
        return current
    # Same keys, later expiry (or the ledger key changed): a new version signed by the root keys,
    # which are both the old and the new root keys here.
    renewed = Root(root.version + 1, day_start(day) + ROOT_LIFETIME, root.keys, root.roles, pointer)
    env = Envelope.create(renewed, role_signers(settings, root, ROLE_ROOT))
    verify_root_update(current, env, env.to_bytes())
    _write_root(paths, env)
    log.info("feeds: renewed root to v%d (expires %s)", renewed.version, renewed.expires)
    return env


def rotate_root(settings: Settings, day: dt.date, *, rotate_online: bool = True) -> Envelope[Root]:
    """Replace the root key (and by default the online key) with fresh ones: root version N+1,
    signed by the old root keys AND the new one, so clients pinned to N can follow."""
    current = ensure_root(settings, day)
    old = current.signed
    version = old.version + 1
    new_root_key = _new_key(settings, "root", version)
    online_keyid = old.roles[ROLE_MANIFEST].keyids[0]
    online = (
        _new_key(settings, "online", version).public_key if rotate_online else old.keys[online_keyid].public
    )
    doc = _root_doc(
        version, day_start(day) + ROOT_LIFETIME, [new_root_key.public_key], online, ledger_pointer(settings)
    )
    env = Envelope.create(doc, [*role_signers(settings, old, ROLE_ROOT), new_root_key])
    verify_root_update(current, env, env.to_bytes())
    _write_root(FeedPaths.of(settings), env)
    log.info("feeds: rotated root to v%d", version)
    return env


# --------------------------------------------------------------------------- rows


# Every release and reissue as a feed row, with what its risk grade needs (``effective``,
# ``exception``, ``violation``); ``{nights}`` picks the nights (``= $day``, ``<= $day``). A reissue's reminders are those of
# its release, or, sold before any release (a violation), those effective by the sale day.
_GRADED_ROWS = """
    SELECT DISTINCT r.msisdn, 'released' AS event, r.disconnected_on, r.released_on,
           CAST(NULL AS DATE) AS reissued_on, r.region, p.end_reason AS prior_end,
           r.effective_reminders AS effective, r.exception, false AS violation, r.logical_date
    FROM releases r LEFT JOIN tenures p ON p.tenure_id = r.tenure_id
    WHERE r.logical_date {nights}
    UNION ALL
    -- Every reissue is a change of subscriber, one after a port-out return too
    -- (pipelines.feeds.answer); prior_end tells the two apart.
    SELECT DISTINCT s.msisdn, 'reissued', coalesce(s.disconnected_on, p.tenure_end),
           s.released_on, s.reissue_date, s.region, p.end_reason,
           coalesce(rl.effective_reminders, (
               SELECT count(DISTINCT m.effective_on) FROM reminders m
               WHERE m.tenure_id = s.prior_tenure_id AND m.disconnected_on = p.tenure_end
               AND m.status IN ('delivered', 'acknowledged') AND m.effective_on <= s.reissue_date
           ), 0), coalesce(rl.exception, false), s.violation, s.logical_date
    FROM reissues s LEFT JOIN tenures p ON p.tenure_id = s.prior_tenure_id
    LEFT JOIN releases rl ON rl.tenure_id = s.prior_tenure_id
        AND rl.disconnected_on = coalesce(s.disconnected_on, p.tenure_end)
    WHERE s.logical_date {nights}
"""
# The order of rows within a night: their seq.
_ROW_ORDER = "msisdn, event = 'reissued', disconnected_on, reissued_on, released_on, region, prior_end"


def _lifecycle_sql(
    con: duckdb.DuckDBPyConnection, day: dt.date, sql: str, params: dict[str, object]
) -> pa.Table:
    try:
        table: pa.Table = con.sql(sql, params=params).to_arrow_table()
    except duckdb.CatalogException as exc:
        raise DataContractError(
            f"feeds for {day}: the state has no lifecycle tables ({exc}); run the lifecycle step first"
        ) from exc
    return table


def row_grade_codes(table: pa.Table) -> npt.NDArray[np.int8]:
    """The grade code (pipelines.feeds.grade, the one rule) of each row of ``_GRADED_ROWS``."""
    port = pc.equal(table.column("prior_end"), "port_out").fill_null(False)
    return grade_codes(
        np.asarray(table.column("effective").to_numpy(zero_copy_only=False), dtype=np.int64),
        np.asarray(table.column("exception").to_numpy(zero_copy_only=False), dtype=bool),
        np.asarray(table.column("violation").to_numpy(zero_copy_only=False), dtype=bool),
        np.asarray(port.to_numpy(zero_copy_only=False), dtype=bool),
    )


def with_grades(table: pa.Table) -> pa.Table:
    """The grade columns in place of ``effective``, ``exception`` and ``violation``."""
    grades = [GRADES[c] for c in row_grade_codes(table).tolist()]
    table = table.drop_columns(["effective", "exception", "violation"])
    return (
        table.append_column("reminders_reached", pa.array([g.reminders_reached for g in grades], pa.int8()))
        .append_column("release_exception", pa.array([g.release_exception for g in grades], pa.bool_()))
        .append_column("violation", pa.array([g.violation for g in grades], pa.bool_()))
        .append_column("risk", pa.array([g.level for g in grades], pa.string()))
    )


def _day_rows(con: duckdb.DuckDBPyConnection, day: dt.date, first_seq: int) -> pa.Table:
    """The day's feed rows, ordered (msisdn, released before reissued), numbered from first_seq."""
    rows = _GRADED_ROWS.format(nights="= $day")
    table = _lifecycle_sql(
        con,
        day,
        f"""
        SELECT * EXCLUDE (logical_date),
               ($first - 1 + row_number() OVER (ORDER BY {_ROW_ORDER}))::BIGINT AS seq
        FROM ({rows}) ORDER BY seq
        """,
        {"day": day, "first": first_seq},
    )
    return with_grades(table).select(FEED_SCHEMA.names).cast(FEED_SCHEMA)


def latest_rows(con: duckdb.DuckDBPyConnection, day: dt.date) -> pa.Table:
    """Per number, its latest feed row up to night ``day`` (the last by night, then seq), with
    what its grade needs (:func:`row_grade_codes`): the grade the bulk answer gives for the
    number (``docs/answers.md``)."""
    rows = _GRADED_ROWS.format(nights="<= $day")
    table = _lifecycle_sql(
        con,
        day,
        f"""
        SELECT * FROM ({rows})
        -- the last in seq order: later night first; in a night a reissue after a release
        QUALIFY row_number() OVER (
            PARTITION BY msisdn
            ORDER BY logical_date DESC, event = 'reissued' DESC, disconnected_on DESC, reissued_on DESC
        ) = 1
        ORDER BY msisdn
        """,
        {"day": day},
    )
    return table


def _notice_rows(con: duckdb.DuckDBPyConnection, day: dt.date) -> pa.Table:
    """The pending notices listed and withdrawn on night ``day``, in seq order.

    The published seq is the notice's place in the nation's list: every notice of earlier
    nights, then tonight's withdrawals by (number, disconnection) and listings by number. That
    is the order and numbering ``lifecycle.notices`` stores in one state (one insert of each a
    night), and it stays so when every province keeps its own numbering (pipelines.provinces)."""
    table = _lifecycle_sql(
        con,
        day,
        """
        SELECT msisdn, event, disconnected_on, earliest_release_on, cause, region,
               (SELECT count(*) FROM notice_events WHERE logical_date < $day)
                 + row_number() OVER (ORDER BY event = 'pending', msisdn, disconnected_on) AS seq
        FROM notice_events WHERE logical_date = $day ORDER BY seq
        """,
        {"day": day},
    )
    return table.cast(NOTICE_SCHEMA)


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True, store_schema=True)
    return buf.getvalue()


def _csv_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=True, quoting_style="needed"))
    return buf.getvalue()


def read_feed_table(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s columns: a column an earlier version did not publish is null."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.schema.names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _snapshot_table(paths: FeedPaths, day: dt.date, today: pa.Table) -> pa.Table:
    """Rows of feed days D-399 .. D, in seq order (read back from the published daily files)."""
    first = day - dt.timedelta(days=SNAPSHOT_DAYS - 1)
    tables = [
        conform(pq.read_table(paths.day_dir(d) / DAILY_PARQUET), FEED_SCHEMA)
        for d in paths.published_days()
        if first <= d < day
    ]
    tables.append(today)
    return pa.concat_tables(tables)


# --------------------------------------------------------------------------- publication


@dataclass(frozen=True)
class _Built:
    manifest: Manifest
    daily: dict[str, bytes]  # file name -> bytes
    snapshot: dict[str, bytes]
    released: int
    reissued: int
    snapshot_rows: int
    notices: int


def _previous(paths: FeedPaths, day: dt.date) -> Envelope[Manifest] | None:
    days = paths.published_days()
    if not days or days[0] >= day:
        if days and days[0] > day:
            raise FeedConflictError(
                f"feeds start at {days[0]}; day {day} cannot be published before it "
                "(feeds are a chain that only grows forward)"
            )
        return None
    prev_day = day - dt.timedelta(days=1)
    if prev_day not in days:
        raise FeedConflictError(
            f"feed for {prev_day} is not published, so {day} cannot follow it; run the missing "
            f"days in order (recycle run --from {days[-1] + dt.timedelta(days=1)} --to {day})"
        )
    path = paths.manifest(prev_day)
    return Envelope.from_bytes(path.read_bytes(), Manifest, str(path))


def _build(
    paths: FeedPaths, day: dt.date, con: duckdb.DuckDBPyConnection, prev: Envelope[Manifest] | None
) -> _Built:
    seq = 1 if prev is None else prev.signed.seq + 1
    first_row = 1 if prev is None else prev.signed.row_seq_start + prev.signed.row_count
    table = _day_rows(con, day, first_row)
    notices = _notice_rows(con, day)
    daily = {DAILY_PARQUET: _parquet_bytes(table), DAILY_CSV: _csv_bytes(table)}
    daily |= {NOTICES_PARQUET: _parquet_bytes(notices), NOTICES_CSV: _csv_bytes(notices)}
    rows_of = {DAILY_PARQUET: table.num_rows, DAILY_CSV: table.num_rows}
    rows_of |= {NOTICES_PARQUET: notices.num_rows, NOTICES_CSV: notices.num_rows}
    snap_table = _snapshot_table(paths, day, table)
    snapshot = {DAILY_PARQUET: _parquet_bytes(snap_table), DAILY_CSV: _csv_bytes(snap_table)}
    events = table.column("event").to_pylist()
    manifest = Manifest(
        feed_date=day,
        seq=seq,
        expires=day_start(day) + MANIFEST_LIFETIME,
        prev_manifest_sha256=None if prev is None else sha256_hex(prev.to_bytes()),
        row_seq_start=first_row,
        row_count=table.num_rows,
        files=tuple(file_meta(rel_daily(day, n), b, rows_of[n]) for n, b in sorted(daily.items())),
        snapshot=tuple(
            file_meta(f"snapshot/{n}", b, snap_table.num_rows) for n, b in sorted(snapshot.items())
        ),
    )
    return _Built(
        manifest,
        daily,
        snapshot,
        events.count("released"),
        events.count("reissued"),
        snap_table.num_rows,
        notices.num_rows,
    )


def _write_day_dir(paths: FeedPaths, day: dt.date, files: dict[str, bytes]) -> None:
    """All of a day's files appear at once: written into a temp dir, fsynced, renamed."""
    target = paths.day_dir(day)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{day.isoformat()}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{day.isoformat()}.tmp-"))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)  # noqa: S103 - published feeds are public to platforms
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        atomic_write_bytes(path, data)


def publish_feed(
    settings: Settings, day: dt.date, con: duckdb.DuckDBPyConnection, ledger: Ledger | None = None
) -> FeedReport:
    """Build, commit (ledger) and publish the feed of logical day ``day``; idempotent.

    Order: rows and files are built in memory; the ledger entry committing to the manifest
    core is appended and a checkpoint published; the day directory appears atomically; then
    the by-seq manifest copy, the rolling snapshot, and the timestamp last.
    """
    paths = FeedPaths.of(settings)
    root = ensure_root(settings, day)
    already = paths.manifest(day).exists()
    if already:
        env, built = _republish_check(paths, day, con)
    else:
        env, built = _publish_day(settings, paths, root, day, con, ledger)
    data = env.to_bytes()
    _write_if_changed(paths.by_seq(env.signed.seq), data)
    published = paths.published_days()
    if published and published[-1] == day:
        _publish_newest(settings, paths, root, day, env, built)
    m = env.signed
    log.info(
        "feeds: %s seq %d with %d row(s)%s",
        day,
        m.seq,
        m.row_count,
        " (already published, unchanged)" if already else "",
    )
    return FeedReport(
        day=day,
        seq=m.seq,
        rows=m.row_count,
        released=built.released,
        reissued=built.reissued,
        row_seq_start=m.row_seq_start,
        manifest_sha256=sha256_hex(data),
        ledger_index=None if m.ledger is None else m.ledger.index,
        already_published=already,
        snapshot_rows=built.snapshot_rows,
        notices=built.notices,
    )


def _republish_check(
    paths: FeedPaths, day: dt.date, con: duckdb.DuckDBPyConnection
) -> tuple[Envelope[Manifest], _Built]:
    """A day already published: today's state must give the same rows, the files must be intact."""
    existing_path = paths.manifest(day)
    existing = Envelope.from_bytes(existing_path.read_bytes(), Manifest, str(existing_path))
    prev = None
    if existing.signed.seq > 1:
        prev_path = paths.manifest(existing.signed.feed_date - dt.timedelta(days=1))
        prev = Envelope.from_bytes(prev_path.read_bytes(), Manifest, str(prev_path))
    built = _build(paths, day, con, prev)
    if built.manifest.core_bytes() != existing.signed.core_bytes():
        raise FeedConflictError(
            f"feed for {day} (seq {existing.signed.seq}) is already published and today's state "
            "gives different rows; published feeds never change. Publish the correction on a "
            "later day, or restore the state this day was published from"
        )
    for name, data in built.daily.items():
        if (paths.day_dir(day) / name).read_bytes() != data:
            raise FeedConflictError(
                f"published {rel_daily(day, name)} differs from its manifest; the feed "
                "directory was altered - restore it from backup"
            )
    return existing, built


def _publish_day(
    settings: Settings,
    paths: FeedPaths,
    root: Envelope[Root],
    day: dt.date,
    con: duckdb.DuckDBPyConnection,
    ledger: Ledger | None,
) -> tuple[Envelope[Manifest], _Built]:
    """A new day: build, commit the manifest core to the ledger, write the day directory at once."""
    built = _build(paths, day, con, _previous(paths, day))
    manifest = built.manifest
    if ledger is not None:
        if ledger.vkey != root.signed.ledger_vkey():
            raise ConfigError(
                f"the ledger is signed by {ledger.vkey!r} but the feed root names "
                f"{root.signed.ledger_vkey()!r}; run with the keys directory of this data directory"
            )
        manifest = dataclasses.replace(manifest, ledger=commit_manifest(ledger, manifest))
    env = Envelope.create(manifest, role_signers(settings, root.signed, ROLE_MANIFEST))
    _write_day_dir(paths, day, {**built.daily, "manifest.json": env.to_bytes()})
    return env, built


def _publish_newest(
    settings: Settings,
    paths: FeedPaths,
    root: Envelope[Root],
    day: dt.date,
    env: Envelope[Manifest],
    built: _Built,
) -> None:
    """The newest day: the rolling snapshot, then the timestamp that pins its manifest (last)."""
    for name, blob in built.snapshot.items():
        _write_if_changed(paths.root / "snapshot" / name, blob)
    stamp = Timestamp(
        version=env.signed.seq,
        expires=day_start(day) + TIMESTAMP_LIFETIME,
        manifest=pin(rel_daily(day, "manifest.json"), env.signed.seq, env.to_bytes()),
    )
    signers = role_signers(settings, root.signed, ROLE_TIMESTAMP)
    _write_if_changed(paths.timestamp, Envelope.create(stamp, signers).to_bytes())


def newest_manifest(settings: Settings) -> Envelope[Manifest] | None:
    """The manifest the timestamp pins (None before the first feed)."""
    paths = FeedPaths.of(settings)
    if not paths.timestamp.exists():
        return None
    stamp = Envelope.from_bytes(paths.timestamp.read_bytes(), Timestamp, str(paths.timestamp))
    path = paths.root / stamp.signed.manifest.path
    data = path.read_bytes()
    if sha256_hex(data) != stamp.signed.manifest.sha256:
        raise FormatError(f"{path} does not match {paths.timestamp}; restore the feeds directory")
    return Envelope.from_bytes(data, Manifest, str(path))


__all__ = [
    "FEED_SCHEMA",
    "GRADE_COLUMNS",
    "NOTICE_SCHEMA",
    "FeedPaths",
    "FeedReport",
    "commit_manifest",
    "conform",
    "ensure_root",
    "feed_manifest_value",
    "latest_rows",
    "load_root",
    "newest_manifest",
    "publish_feed",
    "read_feed_table",
    "role_signers",
    "rotate_root",
    "row_grade_codes",
    "with_grades",
]
