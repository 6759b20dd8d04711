"""The nightly ledger step: each queued fact names the closure of its own disconnection."""

from __future__ import annotations

from pathlib import Path

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
