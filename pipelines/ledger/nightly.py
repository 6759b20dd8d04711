"""The nightly ledger step: append the run's queued facts to the signed log, one batch a night.

Lifecycle and reminder steps queue ledger-worthy facts in the ``ledger_events`` table of the
state file (type, number, tenure, fields); this step turns each into a
:class:`PreparedEntry` (the canonical value holds the E.164 number, tenure start/end and the
event's fields — the public log sees only the commitment) and appends them under their
idempotency keys, so a rerun appends nothing twice. Every entry of a tenure names the
``tenure_closed`` entry that opened its disconnection, which gives them one public tenure ref.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
from number_recycling_client.ledger.entries import NO_TENURE, CanonicalValue, EntryType, PreparedEntry

from pipelines.config import Settings
from pipelines.db import memory_share
from pipelines.errors import TerminalError
from pipelines.layout import Layout
from pipelines.ledger.ledger import EncodedEntry, Ledger
from pipelines.ledger.openings import OpeningsStore
from pipelines.ledger.signer import load_or_create_signer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerStepReport:
    queued: int
    appended: int
    already_in_log: int
    tree_size: int


# The ledger step opens two DuckDB databases, the state (its queue) and the openings store;
# their sum stays within the configured limit (RECYCLE_DUCKDB_MEMORY_LIMIT, 3GB): the state
# (every province's, one at a time, with provinces) a half, the openings a third. Measured at
# 10M tenures / 1M rows (2,484,414 entries): peak RSS 5,014 -> 3,530 MiB, 116 -> 114 s (before:
# the state at the whole limit, the openings store unbounded, DuckDB's default of 80% of RAM).
STATE_SHARE, OPENINGS_SHARE = 1 / 2, 1 / 3


@contextmanager
def open_ledger(settings: Settings) -> Iterator[Ledger]:
    """The writer of ``<data>/ledger`` with the dev keys under ``<data>/keys`` (made on first
    use) and the openings store under ``<data>/private``; both are closed on exit. ``<data>`` is
    ``settings.ledger_home``: the nation's data directory for a province's settings too."""
    layout = Layout(settings.ledger_home)
    signer = load_or_create_signer(layout.keys_dir, settings.ledger.key_name)
    openings_dir = layout.private_dir / "openings"
    with OpeningsStore.open(
        openings_dir, layout.keys_dir, memory_limit=memory_share(OPENINGS_SHARE)
    ) as openings:
        ledger = Ledger.open(layout.ledger_dir, signer, settings.ledger.origin, openings)
        try:
            yield ledger
        finally:
            ledger.close()


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


# Entries prepared and appended at a time. The whole queue at once held ~4.8 KiB a row in
# Python (rows, values, openings, Arrow copies): 8.9 GiB for a 1.8M-entry night
# (benchmarks/bench_provinces.py, 10M tenures in 4 provinces); a chunk keeps it to a few hundred MiB.
LEDGER_CHUNK = 100_000


def prepared_entries(con: duckdb.DuckDBPyConnection) -> tuple[list[int], list[EncodedEntry]]:
    """Every chunk of :func:`queued_chunks` at once (tests, small queues)."""
    seqs: list[int] = []
    entries: list[EncodedEntry] = []
    for chunk_seqs, chunk in queued_chunks(con):
        seqs += chunk_seqs
        entries += chunk
    return seqs, entries


def queued_chunks(
    con: duckdb.DuckDBPyConnection, size: int = LEDGER_CHUNK
) -> Iterator[tuple[list[int], list[EncodedEntry]]]:
    """The queued, not yet appended events (their queue seqs, to mark once appended) as prepared
    ledger entries, ``size`` rows at a time, in the ledger's order:
    by region (the number's province), then queue order. Region first makes the log of a night
    the same whether one state holds every province or each province has its own and the
    sequencer appends them one after another in the codes' sorted order (pipelines.provinces)."""
    con.execute(
        """
        -- An entry names the closure of its own disconnection: the latest tenure_closed of its
        -- tenure with the same disconnected_on (a late receipt for a reminder of an earlier
        -- disconnection, arriving after a restore and a second cancel, belongs to the first),
        -- else the latest closure of its tenure before it. ASOF joins: one pass, no window.
        -- Tried and dropped: a hash join of the fresh rows with the closures and a max over the
        -- closures' seqs (4.7 s to the first chunk instead of 9.9 s, the same rows) ran out of the
        -- state's 1.4 GiB on a full-size night's freshly written state.
        -- Appended events are left out in SQL: they still name closures, but only the queue's
        -- new rows go to Python and meet the region lookup.
        WITH ev AS (
            SELECT *, json_extract_string(fields, '$.disconnected_on') AS disc FROM ledger_events
        ), closed AS (
            SELECT tenure_id, seq AS closed_seq, idempotency_key AS closed_key, disc
            FROM ev WHERE type = 'tenure_closed'
        ), fresh AS (
            SELECT ev.seq, ev.idempotency_key, ev.type, ev.msisdn, ev.tenure_id, ev.tenure_start,
                   ev.tenure_end, ev.fields,
                   CASE WHEN ev.type <> 'tenure_closed' THEN coalesce(same.closed_key, last.closed_key) END
                       AS tenure_key
            FROM ev
            ASOF LEFT JOIN closed same
                   ON same.tenure_id = ev.tenure_id AND same.disc = ev.disc AND ev.seq > same.closed_seq
            ASOF LEFT JOIN closed last ON last.tenure_id = ev.tenure_id AND ev.seq > last.closed_seq
            WHERE NOT ev.appended
        )
        SELECT f.seq, f.idempotency_key, f.type, f.msisdn, f.tenure_start, f.tenure_end, f.fields,
               f.tenure_key, coalesce(t.region, s.region, '') AS region
        FROM fresh f
        LEFT JOIN tenures t ON t.tenure_id = f.tenure_id
        LEFT JOIN number_state s ON s.msisdn = f.msisdn
        ORDER BY region, f.seq
        """
    )
    seen: set[str] = set()
    rows = con.fetchmany(size)
    with _Preparer(parallel=len(rows) >= size) as preparer:
        ahead: deque[tuple[list[int], Future[list[EncodedEntry]]]] = deque()
        while rows:
            seqs: list[int] = []  # every row read is marked appended, a repeat too
            fresh: list[tuple[Any, ...]] = []
            for row in rows:
                seqs.append(row[0])
                if row[1] not in seen:  # the same fact queued twice (a cancel during a 双停): once
                    seen.add(row[1])
                    fresh.append(row[:8])
            ahead.append((seqs, preparer.submit(fresh)))
            rows = con.fetchmany(size)
            if len(ahead) > 1 or not rows:  # the next chunk is being prepared while this one appends
                done_seqs, done = ahead.popleft()
                yield done_seqs, done.result()
        while ahead:
            done_seqs, done = ahead.popleft()
            yield done_seqs, done.result()


class _Preparer:
    """Prepares chunks of queue rows in one worker process when the queue is more than a chunk,
    while this process appends the chunk before: the step's two halves on the two cores. The
    worker returns :class:`EncodedEntry` tuples (2 µs an entry to unpickle; a ``PreparedEntry``
    cost 13-18 µs, more than the 22 µs of preparing it, and the first try gained nothing).

    Forked, not spawned: a spawned worker re-runs the caller's ``__main__`` (a script without
    the ``if __name__ == "__main__"`` guard starts the step again and the pool breaks). The fork
    copies a process whose DuckDB threads may hold locks; the worker never touches DuckDB,
    logging or files: it runs :func:`encode_rows` (json, regexes, the canonical encoding).

    Tried and dropped: the worker also tagging, committing and wrapping data keys (nothing of
    that depends on the entry's place in the log). The step is CPU-bound on both cores (2.5M
    entries: ~205 CPU s in 110 s); the work only moved, and the pickled entry grew from 379 to
    576 bytes: 110.6 s before, 114.5 s after, back to back on the same state.
    """

    def __init__(self, *, parallel: bool) -> None:
        context = multiprocessing.get_context("fork")
        self._pool = ProcessPoolExecutor(1, mp_context=context) if parallel else None

    def __enter__(self) -> _Preparer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def submit(self, rows: list[tuple[Any, ...]]) -> Future[list[EncodedEntry]]:
        if self._pool is not None:
            try:
                return self._pool.submit(encode_rows, rows)  # the worker starts at the first
            except (AssertionError, OSError, RuntimeError) as exc:
                # No child process here (a daemonic worker process may have none, or the system
                # refuses a fork): the same work in this process, only slower.
                log.warning("ledger step: preparing entries in this process (no worker: %s)", exc)
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
        done: Future[list[EncodedEntry]] = Future()
        try:
            done.set_result(encode_rows(rows))
        except Exception as exc:  # raised again by result(), as the worker's would be
            done.set_exception(exc)
        return done


def encode_rows(rows: list[tuple[Any, ...]]) -> list[EncodedEntry]:
    """Queue rows ``(seq, key, type, msisdn, start, end, fields, tenure_key)`` as entries."""
    return [EncodedEntry.of(_prepared(*row)) for row in rows]


def _prepared(
    seq: int, key: str, kind: str, msisdn: str, start: Any, end: Any, fields: str, tenure_key: str | None
) -> PreparedEntry:
    try:
        entry_type = EntryType[str(kind).upper()]
    except KeyError:
        raise TerminalError(
            f"ledger_events seq {seq}: unknown entry type {kind!r}; the lifecycle code and the "
            "ledger's type table disagree — fix the code, the queue is kept"
        ) from None
    values = {k: _text(v) for k, v in json.loads(fields).items()}
    values.update(msisdn=msisdn, tenure_start=start, tenure_end=end)
    value = CanonicalValue.build(values)
    if entry_type == EntryType.TENURE_CLOSED:
        return PreparedEntry(key, entry_type, value)
    if tenure_key is not None:
        return PreparedEntry(key, entry_type, value, tenure_key=tenure_key)
    # A fact about a number with no disconnection on record (a reissue of a number we never
    # saw closed): it stands alone in the log.
    return PreparedEntry(key, entry_type, value, tenure_ref=NO_TENURE)


def mark_appended(con: duckdb.DuckDBPyConnection, seqs: list[int]) -> None:
    """Mark the queue rows ``seqs`` appended (after the checkpoint that holds them is durable).
    ``seqs`` are every unappended row read (the writer lock kept others from queueing), so
    "up to the largest" names them without shipping a million seqs back to DuckDB."""
    if seqs:
        con.execute("UPDATE ledger_events SET appended = true WHERE NOT appended AND seq <= ?", [max(seqs)])


def append_queued_events(con: duckdb.DuckDBPyConnection, ledger: Ledger) -> LedgerStepReport:
    """Append every queued event to ``ledger``, publish one checkpoint, mark them appended.

    The state update happens after the checkpoint is durable: a crash in between leaves the
    events unmarked, and the rerun finds their keys in the ledger and appends nothing twice.
    """
    before = ledger.size
    queued, last = append_chunks(ledger, queued_chunks(con))
    ledger.publish_checkpoint()
    appended = ledger.size - before
    mark_appended(con, last)
    return LedgerStepReport(
        queued=queued,
        appended=appended,
        already_in_log=queued - appended,
        tree_size=ledger.size,
    )


def append_chunks(
    ledger: Ledger, chunks: Iterable[tuple[list[int], list[EncodedEntry]]]
) -> tuple[int, list[int]]:
    """Append each chunk (not durable until the caller's checkpoint; an entry may name a tenure
    appended by an earlier chunk, found as already in the ledger). Returns the entries queued
    and the largest queue seq read (empty: none), for :func:`mark_appended`."""
    queued, last = 0, list[int]()
    for seqs, entries in chunks:
        if entries:
            ledger.append_encoded(entries)
        queued += len(entries)
        last = [max([*last, *seqs])] if seqs else last
    return queued, last
