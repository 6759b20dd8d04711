"""The nightly ledger step: each queued fact names the closure of its own disconnection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lifecycle_testkit import A, World, day, open_db, seeded

from pipelines.ledger.nightly import prepared_entries


def test_a_late_receipt_names_the_closure_of_its_own_disconnection(tmp_path: Path) -> None:
    # Cancelled, reminded, restored, cancelled again; then the first episode's receipt arrives.
    # Its reminder_effective belongs to the first closure, like its reminder_sent: the public
    # audit counts effective against sent per closure (tenure_ref).
    world = World(open_db(tmp_path / "state.duckdb"))
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    first = world.reminders(A, "sent")[0]["reminder_id"]
    world.event(day(2), A, "restore")
    world.run(day(2))
    world.event(day(3), A, "cancel")
    world.run(day(3))
    world.receipt(day(4), str(first), "delivered", at=day(3))
    world.run(day(4))
    _, entries = prepared_entries(world.con)
    closures = [e.key for e in entries if e.key.startswith("tenure_closed:")]
    assert len(closures) == 2
    by_key = {e.key: e for e in entries}
    sent = by_key[f"reminder_sent:{first}"]
    effective = by_key[f"reminder_effective:{first}"]
    assert sent.tenure_key == effective.tenure_key == closures[0]
    world.con.close()


def test_a_queue_appended_in_chunks_gives_the_log_of_one_batch(tmp_path: Path) -> None:
    """Chunks of 2 (an entry's closure in an earlier chunk, a repeated key across chunks) append
    the same entries, in the same order, with the same tenures, as one batch; the queue is then
    marked appended and a rerun appends nothing."""
    from pipelines.config import Settings
    from pipelines.ledger.nightly import append_chunks, append_queued_events, open_ledger, queued_chunks

    logs = []
    for name, size in (("one", 10_000), ("chunked", 2)):
        world = World(open_db(tmp_path / f"{name}.duckdb"))
        seeded(world, A)
        world.event(day(1), A, "cancel")
        world.run(day(1))
        world.event(day(2), A, "restore")
        world.run(day(2))
        world.event(day(3), A, "cancel")
        world.run(day(3))
        with open_ledger(Settings(data_dir=tmp_path / name)) as ledger:
            queued, last = append_chunks(ledger, queued_chunks(world.con, size))
            ledger.publish_checkpoint()
            assert queued == ledger.size > 4 and last
            first_of: dict[bytes, int] = {}
            logs.append([
                (ledger.opening(i).value.to_bytes(), first_of.setdefault(bytes(ledger.entry(i).tenure_ref), i))
                for i in range(ledger.size)
            ])  # fmt: skip
            world.con.execute("UPDATE ledger_events SET appended = true WHERE seq <= ?", last)
            assert append_queued_events(world.con, ledger).appended == 0
        world.con.close()
    assert logs[0] == logs[1]


def _queued_world(path: Path) -> World:
    world = World(open_db(path))
    seeded(world, A)
    for n, event in enumerate(("cancel", "restore", "cancel"), start=1):
        world.event(day(n), A, event)
        world.run(day(n))
    return world


def test_chunks_prepared_in_a_worker_process_are_the_ones_prepared_here(tmp_path: Path) -> None:
    """A queue longer than a chunk is prepared in a forked worker while the chunk before is
    appended; the entries, their order and the seqs read are those of the inline path."""
    from pipelines.ledger import nightly

    world = _queued_world(tmp_path / "state.duckdb")
    inline = list(nightly.queued_chunks(world.con, 10_000))
    made: list[bool] = []
    real = nightly._Preparer.__init__

    def spy(self: nightly._Preparer, *, parallel: bool) -> None:
        made.append(parallel)
        real(self, parallel=parallel)

    nightly._Preparer.__init__ = spy  # type: ignore[method-assign]
    try:
        chunked = list(nightly.queued_chunks(world.con, 2))
    finally:
        nightly._Preparer.__init__ = real  # type: ignore[method-assign]
    assert made == [True] and len(chunked) > 2
    assert [e for _, es in chunked for e in es] == [e for _, es in inline for e in es]
    assert sorted(s for ss, _ in chunked for s in ss) == sorted(s for ss, _ in inline for s in ss)
    world.con.close()


def test_a_row_the_worker_cannot_prepare_fails_the_step_by_name(tmp_path: Path) -> None:
    from pipelines.errors import TerminalError
    from pipelines.ledger.nightly import queued_chunks

    world = _queued_world(tmp_path / "state.duckdb")
    world.con.execute(
        "UPDATE ledger_events SET type = 'bogus' WHERE seq = (SELECT max(seq) FROM ledger_events)"
    )
    with pytest.raises(TerminalError, match="unknown entry type 'bogus'"):
        list(queued_chunks(world.con, 2))  # raised in the worker, re-raised here; the pool is shut down
    world.con.close()


def _chunks_in_a_daemon(path: str, out: Any) -> None:
    import duckdb

    from pipelines.ledger.nightly import queued_chunks

    con = duckdb.connect(path, read_only=True)
    out.put([e for _, chunk in queued_chunks(con, 2) for e in chunk])


def test_where_no_worker_may_start_the_entries_are_prepared_here(tmp_path: Path) -> None:
    """A daemonic process (a pool's worker) may not start children: the step prepares the
    entries itself, the same ones, instead of failing."""
    import multiprocessing

    from pipelines.ledger import nightly

    world = _queued_world(tmp_path / "state.duckdb")
    inline = [e for _, chunk in nightly.queued_chunks(world.con, 10_000) for e in chunk]
    world.con.close()
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(
        target=_chunks_in_a_daemon, args=(str(tmp_path / "state.duckdb"), out), daemon=True
    )
    child.start()
    got = out.get(timeout=60)
    child.join(30)
    assert child.exitcode == 0 and got == inline
