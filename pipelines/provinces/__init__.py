"""Work split by province (DESIGN.md, "Channels and scale"; docs/scaling.md).

With ``provinces = ["BJ", "GD", ...]`` each province is a data directory of its own under
``<data>/provinces/<code>/`` — its drops (``inbox/<D>/``), its DuckDB state file, outbox, runs
and contact keys — so the province steps (ingest to send, then contacts and alerts) of
different provinces run at once, on different workers, and never share a writer. The nation's
steps run once, as the sequencer, after every province's send:

- **ledger**: every province's queued facts, appended as one batch in the codes' sorted order
  and one checkpoint (:func:`append_provinces`); the embedded ledger step orders a night by
  region the same way (``pipelines.ledger.nightly.prepared_entries``), so one state and a
  split give the same log;
- **feeds** and **snapshot**: built from the provinces' states read as one
  (:func:`reading_state`, ``pipelines.db.open_union``): one national feed, manifest and
  timestamp, one query snapshot the server answers from.

A province's state is opened by its own steps only, except here: read-only for the feed and the
snapshot, and for a moment after the checkpoint to mark its queue appended — both while no
province step runs (the DAG and ``recycle run`` put the sequencer after them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb

from pipelines.config import Settings
from pipelines.db import memory_share, open_state, open_union
from pipelines.layout import Layout
from pipelines.ledger.ledger import Ledger
from pipelines.ledger.nightly import (
    STATE_SHARE,
    LedgerStepReport,
    append_chunks,
    mark_appended,
    queued_chunks,
)


def province_states(settings: Settings) -> list[tuple[str, Path]]:
    """(code, state file) of every configured province, in the sequencer's order (sorted codes)."""
    return [
        (code, Layout(settings.for_province(code).data_dir).state_db) for code in sorted(settings.provinces)
    ]


@contextlib.contextmanager
def reading_state(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The state a national step reads: the one state file (opened as the steps always have),
    or, with provinces, all of theirs as one read-only union."""
    if not settings.provinces:
        with open_state(Layout(settings.data_dir).state_db) as con:
            yield con
        return
    with open_union([path for _, path in province_states(settings)]) as con:
        yield con


def append_provinces(settings: Settings, ledger: Ledger) -> LedgerStepReport:
    """The sequencer's ledger step: every province's queued facts in one batch, in the codes'
    sorted order, then one checkpoint; each province's queue is marked appended only after the
    checkpoint is durable, so a crash in between leaves them queued and the rerun finds their
    keys in the log (nothing appended twice)."""
    read: list[tuple[Path, list[int]]] = []
    queued, before = 0, ledger.size
    for _, path in province_states(settings):
        if not path.exists():
            continue  # a province that has not run a night yet
        with open_state(path, read_only=True, memory_limit=memory_share(STATE_SHARE)) as con:
            count, last = append_chunks(ledger, queued_chunks(con))
        read.append((path, last))
        queued += count
    ledger.publish_checkpoint()
    for path, last in read:
        if last:
            with open_state(path) as con:
                mark_appended(con, last)
    appended = ledger.size - before
    return LedgerStepReport(
        queued=queued, appended=appended, already_in_log=queued - appended, tree_size=ledger.size
    )
