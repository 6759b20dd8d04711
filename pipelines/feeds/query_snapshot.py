"""The query snapshot: what the check server reads instead of the nightly DuckDB file.

DuckDB lets one process write a database file and then refuses other readers, so the nightly
run publishes, for logical date D, an immutable directory ``<data>/snapshot/<D>-<hash>/``
holding ``tenures.parquet`` and ``meta.json``, then atomically rewrites the pointer file
``<data>/snapshot/current``. The server loads the directory the pointer names into sorted
numpy arrays (:class:`SnapshotIndex`) and swaps in a new one when the pointer changes.

The answers come from one rule, :mod:`pipelines.feeds.answer` (``docs/answers.md``): the
snapshot holds each tenure's start, end, how it ended and how it began, which is all the rule
reads; the CAMARA check and the bulk check both ask :meth:`SnapshotIndex.verdicts`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from number_recycling_client.wire import canonical_json, parse_canonical, sha256_hex

from pipelines.config import Settings
from pipelines.errors import DataContractError, FormatError
from pipelines.feeds.answer import BULK_WORDS, END_REASONS, OPENED_BY, Answer, AnswerIndex, Verdict
from pipelines.feeds.publish import latest_rows, newest_manifest, row_grade_codes
from pipelines.layout import PRIVATE_FILE_MODE, Layout, private_dir, write_private

log = logging.getLogger(__name__)

POINTER = "current"
TENURES = "tenures.parquet"
# Per number, the risk grade of its latest release or reissue (pipelines.feeds.grade): what the
# bulk answer adds to a "yes". A snapshot written before grades existed has none (no grade).
GRADES_FILE = "grades.parquet"
META = "meta.json"
KEEP_SNAPSHOTS = 4  # old directories kept after a switch (a server may still be loading one)
_EPOCH = dt.date(1970, 1, 1)
NO_END = np.iinfo(np.int32).max  # an open tenure ends "never"

# bulk answers, indexed by Verdict
BULK_ANSWERS = np.array(BULK_WORDS, dtype=object)


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01 (Arrow date32)."""
    return (day - _EPOCH).days


@dataclass(frozen=True)
class SnapshotMeta:
    as_of: dt.date
    data_from: dt.date  # earliest date questions may be asked about
    feed_seq: int | None  # newest feed manifest published with (or before) this snapshot
    checkpoint: str | None  # the ledger checkpoint that manifest names
    tenures: int
    numbers: int
    tenures_sha256: str

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "as_of": self.as_of.isoformat(),
                "checkpoint": self.checkpoint,
                "data_from": self.data_from.isoformat(),
                "feed_seq": self.feed_seq,
                "numbers": self.numbers,
                "tenures": self.tenures,
                "tenures_sha256": self.tenures_sha256,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, what: str) -> SnapshotMeta:
        obj = parse_canonical(data, what)
        try:
            meta = cls(
                as_of=dt.date.fromisoformat(obj["as_of"]),
                data_from=dt.date.fromisoformat(obj["data_from"]),
                feed_seq=obj["feed_seq"],
                checkpoint=obj["checkpoint"],
                tenures=obj["tenures"],
                numbers=obj["numbers"],
                tenures_sha256=obj["tenures_sha256"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{what}: malformed snapshot metadata ({exc})") from None
        if meta.to_bytes() != data:
            raise FormatError(f"{what}: unknown or malformed fields")
        return meta


@dataclass(frozen=True)
class SnapshotReport:
    day: dt.date
    directory: Path
    tenures: int
    numbers: int
    data_from: dt.date
    feed_seq: int | None
    switched: bool  # the pointer now names this snapshot


# --------------------------------------------------------------------------- publishing


def _data_from(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """Go-live: the first night the pipeline ingested; before it we never saw disconnections."""
    try:
        row = con.execute("SELECT min(logical_date) FROM files").fetchone()
    except duckdb.CatalogException:
        return None
    return None if row is None else row[0]


def _tenures_table(con: duckdb.DuckDBPyConnection, day: dt.date) -> pa.Table:
    try:
        rel = con.sql(
            """
            SELECT t.msisdn,
                   CAST(substr(t.msisdn, 2) AS BIGINT) AS msisdn_key,
                   t.tenure_start, t.tenure_end, t.end_reason, t.opened_by, t.region
            FROM tenures t
            WHERE t.tenure_start <= $day
            -- of two tenures begun the same day, the one that ended first comes first
            ORDER BY msisdn_key, t.tenure_start, t.tenure_end NULLS LAST, t.tenure_id
            """,
            params={"day": day},
        ).to_arrow_table()
    except duckdb.CatalogException as exc:
        raise DataContractError(
            f"snapshot for {day}: the state has no lifecycle tables ({exc}); run the lifecycle step first"
        ) from exc
    table: pa.Table = rel
    return table


def _grades_table(con: duckdb.DuckDBPyConnection, day: dt.date) -> pa.Table:
    """(msisdn_key, grade code) per number released or reissued up to ``day``, by key: the
    grade of the number's latest feed row, from the feed's own query and grading."""
    rows = latest_rows(con, day)
    codes = row_grade_codes(rows)
    keys = pc.cast(pc.utf8_slice_codeunits(rows.column("msisdn"), 1), pa.int64())
    return pa.table({"msisdn_key": keys, "grade": pa.array(codes, pa.int8())}).sort_by("msisdn_key")


def _write_parquet(table: pa.Table, path: Path) -> None:
    # Every tenure's number: created 0600 (streamed, not buffered: 10M tenures).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        pq.write_table(table, fh, compression="zstd", row_group_size=1 << 20)


def publish_snapshot(
    settings: Settings, day: dt.date, con: duckdb.DuckDBPyConnection, *, data_from: dt.date | None = None
) -> SnapshotReport:
    """Write the query snapshot of logical day ``day`` and switch ``current`` to it.

    ``data_from`` defaults to go-live (the first ingested logical date), or the earliest
    tenure start when nothing was ingested (a state seeded some other way). The pointer only
    moves forward: replaying an older day writes its snapshot but leaves the newer one current.
    """
    root = Layout(settings.data_dir).snapshot_dir
    private_dir(root)
    table = _tenures_table(con, day)
    grades = _grades_table(con, day)  # before _data_from, whose fetchone leaves a result open
    if data_from is None:
        data_from = _data_from(con)
    if data_from is None:
        earliest = pc.min(table.column("tenure_start")).as_py()
        data_from = earliest if earliest is not None else day

    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{day.isoformat()}.tmp-"))
    try:
        _write_parquet(table, tmp / TENURES)
        _write_parquet(grades, tmp / GRADES_FILE)
        digest = sha256_hex((tmp / TENURES).read_bytes())
        manifest = newest_manifest(settings)
        if manifest is not None and manifest.signed.feed_date > day:
            manifest = None  # replaying an old day: do not claim a newer feed
        keys = table.column("msisdn_key").to_numpy()
        numbers = int(np.count_nonzero(keys[1:] != keys[:-1]) + 1) if len(keys) else 0
        meta = SnapshotMeta(
            as_of=day,
            data_from=data_from,
            feed_seq=None if manifest is None else manifest.signed.seq,
            checkpoint=None
            if manifest is None or manifest.signed.ledger is None
            else manifest.signed.ledger.checkpoint,
            tenures=table.num_rows,
            numbers=numbers,
            tenures_sha256=digest,
        )
        write_private(tmp / META, meta.to_bytes())
        name = f"{day.isoformat()}-{sha256_hex(meta.to_bytes())[:12]}"
        target = root / name
        if target.exists():
            shutil.rmtree(tmp)
        else:
            # mkdtemp's 0700 is kept: the snapshot lists every number, and its only reader,
            # the query server, runs as the same user as the nightly run (it used to be made
            # 0755, world-readable, for a server under another account; none is).
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    current = current_snapshot_dir(settings)
    switched = current is None or current.name[:10] <= name[:10]
    if switched:
        write_private(root / POINTER, (name + "\n").encode())
        _prune(root, keep={name})
    log.info(
        "snapshot %s: %d tenures of %d numbers%s",
        day,
        table.num_rows,
        numbers,
        "" if switched else " (older than current; pointer unchanged)",
    )
    return SnapshotReport(day, target, table.num_rows, numbers, data_from, meta.feed_seq, switched)


def _prune(root: Path, keep: set[str]) -> None:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in dirs[: max(len(dirs) - KEEP_SNAPSHOTS, 0)]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def current_snapshot_dir(settings: Settings) -> Path | None:
    return _pointed(Layout(settings.data_dir).snapshot_dir)


def _pointed(root: Path) -> Path | None:
    try:
        name = (root / POINTER).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    if not name or "/" in name or name.startswith("."):
        raise FormatError(f"{root / POINTER} names {name!r}; rewrite it with the latest snapshot")
    return root / name


# --------------------------------------------------------------------------- the index


class SnapshotIndex:
    """A published snapshot loaded for answering: its metadata and the rule over its tenures."""

    def __init__(
        self,
        meta: SnapshotMeta,
        answers: AnswerIndex,
        graded: tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]],
    ) -> None:
        self.meta = meta
        self.answers = answers
        self._graded_keys, self._grades = graded

    def grades(self, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.int8]:
        """Per key, the code (pipelines.feeds.grade.GRADES) of the number's latest release or
        reissue; -1 for a number never released nor reissued."""
        out = np.full(len(keys), -1, dtype=np.int8)
        if not len(self._graded_keys):
            return out
        at = np.minimum(np.searchsorted(self._graded_keys, keys), len(self._graded_keys) - 1)
        found = self._graded_keys[at] == keys
        out[found] = self._grades[at][found]
        return out

    @classmethod
    def load(cls, directory: Path) -> SnapshotIndex:
        meta = SnapshotMeta.from_bytes((directory / META).read_bytes(), str(directory / META))
        path = directory / TENURES
        table = pq.read_table(
            path, columns=["msisdn_key", "tenure_start", "tenure_end", "end_reason", "opened_by"]
        )
        if table.num_rows != meta.tenures:
            raise FormatError(f"{path}: {table.num_rows} rows, meta.json says {meta.tenures}")

        def days(name: str, fill: int) -> npt.NDArray[np.int32]:
            col = table.column(name).combine_chunks().cast(pa.int32())
            return np.asarray(col.fill_null(fill).to_numpy(zero_copy_only=False), dtype=np.int32)

        def codes(name: str, words: tuple[str, ...]) -> npt.NDArray[np.int8]:
            col = pc.index_in(table.column(name), value_set=pa.array(words)).fill_null(-1)
            return np.asarray(col.to_numpy(), dtype=np.int8)

        answers = AnswerIndex(
            np.asarray(table.column("msisdn_key").to_numpy(), dtype=np.int64),
            days("tenure_start", 0),
            days("tenure_end", NO_END),
            codes("end_reason", END_REASONS),
            codes("opened_by", OPENED_BY),
        )
        return cls(meta, answers, _load_grades(directory))

    def answer(self, key: int, day: dt.date) -> Answer:
        """The rule's answer for one number (E.164 digits as an integer) and date."""
        verdicts, first = self.verdicts(
            np.array([key], dtype=np.int64), np.array([day_number(day)], np.int32)
        )
        verdict = Verdict(int(verdicts[0]))
        return Answer(
            verdict, _EPOCH + dt.timedelta(days=int(first[0])) if verdict == Verdict.NO_DATA else None
        )

    def verdicts(
        self, keys: npt.NDArray[np.int64], days: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int32]]:
        """:meth:`AnswerIndex.verdicts` over this snapshot's tenures."""
        return self.answers.verdicts(keys, days)


def _load_grades(directory: Path) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    path = directory / GRADES_FILE
    if not path.exists():  # written before grades existed
        return np.empty(0, np.int64), np.empty(0, np.int8)
    table = pq.read_table(path)
    keys = np.asarray(table.column("msisdn_key").to_numpy(), dtype=np.int64)
    return keys, np.asarray(table.column("grade").to_numpy(), dtype=np.int8)


class SnapshotHolder:
    """The server's current index; notices a new ``current`` pointer and loads it in the background."""

    def __init__(
        self, snapshot_root: Path, check_every_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = snapshot_root
        self.check_every_s = check_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._index: SnapshotIndex | None = None
        self._loaded: str | None = None
        self._checked = float("-inf")
        self._loading = False
        self.last_error: str | None = None

    def load_now(self) -> SnapshotIndex | None:
        """Load the pointed snapshot in this thread (server start-up, tests)."""
        directory = _pointed(self.root)
        if directory is None:
            return None
        self._swap(directory)
        return self._index

    def _swap(self, directory: Path) -> None:
        started = time.perf_counter()
        try:
            index = SnapshotIndex.load(directory)
        except (OSError, FormatError, pa.ArrowException) as exc:
            self.last_error = f"snapshot {directory.name} could not be loaded: {exc}"
            log.error("%s; still answering from %s", self.last_error, self._loaded)
            with self._lock:
                self._loaded = directory.name  # do not retry a broken snapshot in a loop
            return
        with self._lock:
            self._index = index
            self._loaded = directory.name
        self.last_error = None
        log.info(
            "snapshot %s loaded: %d tenures in %.2fs",
            directory.name,
            index.meta.tenures,
            time.perf_counter() - started,
        )

    def current(self) -> SnapshotIndex | None:
        now = self._clock()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._maybe_reload()
        return self._index

    def _maybe_reload(self) -> None:
        try:
            directory = _pointed(self.root)
        except FormatError as exc:
            self.last_error = str(exc)
            return
        if directory is None or directory.name == self._loaded or self._loading:
            return
        if self._index is None:
            self._swap(directory)  # nothing to answer from yet: load in the caller
            return
        self._loading = True

        def run() -> None:
            try:
                self._swap(directory)
            finally:
                self._loading = False

        threading.Thread(target=run, name="snapshot-reload", daemon=True).start()

    def status(self) -> dict[str, Any]:
        index = self._index
        if index is None:
            return {"loaded": None, "error": self.last_error}
        m = index.meta
        return {
            "loaded": self._loaded,
            "as_of": m.as_of.isoformat(),
            "data_from": m.data_from.isoformat(),
            "feed_seq": m.feed_seq,
            "tenures": m.tenures,
            "numbers": m.numbers,
            "error": self.last_error,
        }
