"""The release gate: a number is released only after its freeze AND enough effective
reminders on distinct days; otherwise it is held, reminded on its other channels, and
released with a recorded exception after max_hold_days.

Policy in these tests (test_lifecycle.SETTINGS): 10-day freeze, reminders on day 0, day 4
and day 7 of the freeze, 2 effective reminders needed, at most 3 days held. A cancels on
day 1, so its freeze ends on day 11.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from lifecycle_testkit import SETTINGS, A, B, World, day, open_db, seeded

from pipelines.config import Policy


def cancelled(world: World, *numbers: str, **subscriber: object) -> World:
    seeded(world, *numbers, **subscriber)
    for n in numbers:
        world.event(day(1), n, "cancel")
    world.run(day(1))  # reminder 1 sent today
    return world


def effective(world: World, n: int, status: str = "delivered", same_day: bool = False) -> None:
    """Make ``n`` of A's reminders effective: receipts arrive on days 2 and 6 (distinct days),
    or all on day 6 with ``same_day``."""
    world.run(day(5))  # reminder 2 sent
    slots = world.reminders(A, "sent")
    assert len(slots) >= n
    for i, rem in enumerate(slots[:n]):
        when = day(6) if same_day or i else day(2)
        world.receipt(day(6), rem["reminder_id"], status, at=when)
    world.run(day(6))


def release(world: World) -> dict[str, object]:
    rows = world.rows("SELECT * FROM releases WHERE msisdn = ?", [A])
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_effective_reminders_hold_the_number(world: World, n: int) -> None:
    cancelled(world, A, email="a@example.cn")
    effective(world, n)
    world.run(day(10))
    assert world.state(A)["state"] == "frozen"  # the freeze is not over yet
    report = world.run(day(11))["advance"]
    assert (report.held, report.released) == (1, 0)
    s = world.state(A)
    assert (s["state"], s["hold_started"], s["released_on"]) == ("held", day(11), None)
    assert world.one("SELECT count(*) FROM releases") == 0
    # Extra reminders today on every channel the owner has that has no effective one yet.
    hold = {r["channel"] for r in world.reminders(A) if r["slot"] == "hold"}
    assert hold == ({"sms", "email", "letter"} if n == 0 else {"email", "letter"})
    assert all(r["due_on"] == day(11) for r in world.reminders(A) if r["slot"] == "hold")
    assert world.ledger("released") == []


def test_two_effective_reminders_on_distinct_days_release(world: World) -> None:
    cancelled(world, A)
    effective(world, 2)
    report = world.run(day(11))["advance"]
    assert report.released == 1
    s = world.state(A)
    assert (s["state"], s["released_on"]) == ("available", day(11))
    r = release(world)
    assert (r["effective_reminders"], r["exception"], r["disconnected_on"], r["released_on"]) == (
        2,
        False,
        day(1),
        day(11),
    )
    (ev,) = world.ledger("released")
    fields = json.loads(ev["fields"])
    assert fields["effective_reminders"] == 2 and fields["exception"] is False
    assert (ev["tenure_start"], ev["tenure_end"]) == (world.tenure(s["tenure_id"])["tenure_start"], day(1))
    # The final reminder (due day 8) had been sent before; nothing is left to send.
    assert world.reminders(A, "scheduled") == []


def test_two_reminders_effective_on_the_same_day_count_once(world: World) -> None:
    cancelled(world, A)
    effective(world, 2, same_day=True)
    world.run(day(11))
    assert world.state(A)["state"] == "held"


def test_acknowledged_reminders_count(world: World) -> None:
    cancelled(world, A)
    effective(world, 2, status="acknowledged")
    world.run(day(11))
    assert release(world)["effective_reminders"] == 2
    assert len(world.ledger("acknowledged")) == 2


def test_held_number_is_released_once_the_rule_is_met(world: World) -> None:
    cancelled(world, A, email="a@example.cn")
    effective(world, 1)
    world.run(day(11))
    assert world.state(A)["state"] == "held"
    hold_email = next(r for r in world.reminders(A) if r["slot"] == "hold" and r["channel"] == "email")
    world.receipt(day(12), hold_email["reminder_id"], "delivered", at=day(12))
    report = world.run(day(12))["advance"]
    assert report.released == 1
    r = release(world)
    assert (r["released_on"], r["effective_reminders"], r["exception"]) == (day(12), 2, False)
    hist = [
        h["to_state"]
        for h in world.rows(
            "SELECT to_state FROM state_history WHERE msisdn = ? ORDER BY on_date, logical_date", [A]
        )
    ]
    assert hist == ["active", "frozen", "held", "available"]


def test_held_past_max_hold_days_is_released_with_an_exception(world: World) -> None:
    cancelled(world, A)
    world.run(day(11))
    for n in (12, 13):
        assert world.run(day(n))["advance"].released_with_exception == 0
        assert world.state(A)["state"] == "held"
    report = world.run(day(14))["advance"]  # held on day 11 + max_hold_days 3
    assert report.released_with_exception == 1
    r = release(world)
    assert (r["exception"], r["effective_reminders"], r["released_on"]) == (True, 0, day(14))
    (ev,) = world.ledger("released_with_exception")
    assert json.loads(ev["fields"])["hold_started"] == day(11).isoformat()
    assert world.state(A)["state"] == "available"


def test_max_hold_days_zero_releases_with_an_exception_at_freeze_end(tmp_path: Path) -> None:
    con = open_db(tmp_path / "s.duckdb")
    strict = replace(
        SETTINGS,
        policies={
            "default": Policy(freeze_days=10, suspend_days=5, reminder_offsets=(0, 4, -3), max_hold_days=0)
        },
    )
    world = World(con, settings=strict)
    cancelled(world, A)
    world.run(day(11))
    assert release(world)["exception"] is True
    con.close()


def test_restore_before_release_returns_the_number_to_its_owner(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "cancel")
    world.run(day(1))
    world.event(day(5), B, "restore")  # within the freeze: back to its owner
    world.run(day(5))
    world.run(day(11))
    assert world.state(A)["state"] == "held"
    assert world.state(B)["state"] == "active"
    world.event(day(12), A, "restore")  # after the freeze: too late
    world.run(day(12))
    (q,) = world.quarantine()
    assert q["reason"] == "restore_after_freeze"
    world.run(day(20))
    assert world.one("SELECT count(*) FROM releases WHERE msisdn = ?", [B]) == 0
    assert [e["msisdn"] for e in world.ledger("restored")] == [B]
    assert world.reminders(B, "scheduled") == []


def test_reminders_of_an_earlier_disconnection_do_not_count(world: World) -> None:
    cancelled(world, A)
    effective(world, 2)
    world.event(day(7), A, "restore")
    world.run(day(7))
    world.event(day(8), A, "cancel")
    world.run(day(8))
    world.run(day(18))  # the new freeze ends: the two old receipts are for another episode
    assert world.state(A)["state"] == "held"


def test_ports_are_never_released(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "port_out")
    world.run(day(1))
    for n in (11, 30, 60):
        world.run(day(n))
    assert world.state(A)["state"] == "ported_out"
    assert world.one("SELECT count(*) FROM releases") == 0
    assert world.one("SELECT count(*) FROM reminders") == 0


def test_reissue_after_release_is_clean_and_before_is_a_violation(world: World) -> None:
    cancelled(world, A, B)
    effective(world, 2)
    world.run(day(11))
    assert world.state(A)["state"] == "available" and world.state(B)["state"] == "held"
    world.reissue(day(12), A)
    world.reissue(day(12), B)
    world.run(day(12))
    got = dict(world.con.execute("SELECT msisdn, violation FROM reissues").fetchall())
    assert got == {A: False, B: True}
    assert [e["msisdn"] for e in world.ledger("reissue_violation")] == [B]
    assert world.state(B)["state"] == "active"
    # B's prior owner is no longer reminded once the number has a new owner.
    assert world.reminders(B, "scheduled") == []
