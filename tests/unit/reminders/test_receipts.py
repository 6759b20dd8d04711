"""Receipts are judged: only a receipt for a reminder that was sent, timed at or after its send
(less the clock skew allowed) and not after the number's release counts; days are the carrier's
(Asia/Shanghai here). Receipts arrive as drop files through the real ingest and receipts steps.

Policy (lifecycle_testkit.SETTINGS): 10-day freeze, reminders on day 0, day 4 and day 7 of the
freeze, 2 effective reminders on distinct days to release. A cancels on day 1: reminders are
sent on days 1, 5 and 8, the freeze ends on day 11.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lifecycle_testkit import SETTINGS, A, World, day, open_db, seeded

from pipelines.ingest import ingest_day
from pipelines.layout import Layout
from pipelines.numbers import mask

BEIJING = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    con = open_db(tmp_path / "state.duckdb")
    yield World(con, settings=replace(SETTINGS, data_dir=tmp_path / "var"))
    con.close()


def beijing(n: int, hour: int, minute: int = 0) -> str:
    """An ISO time on day ``n`` at ``hour:minute`` Beijing time, with its +08:00 offset."""
    return dt.datetime.combine(day(n), dt.time(hour, minute), BEIJING).isoformat()


def drop_receipts(world: World, d: dt.date, rows: list[tuple[str, str, str, str]]) -> None:
    """A gateway's receipts file (reminder_id, channel, status, at) in the inbox of ``d``, ingested."""
    inbox = Layout(world.settings.data_dir).inbox(d)
    inbox.mkdir(parents=True, exist_ok=True)
    lines = ["reminder_id,channel,status,at,provider_ref", *(",".join(r) + ",gw-1" for r in rows)]
    (inbox / f"receipts_{d.isoformat()}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ingest_day(world.settings, d, world.con)
    assert report.accepted == len(rows), report


def cancelled_with_two_sent(world: World) -> tuple[str, str, str]:
    """A cancelled on day 1, reminders 1 and 2 sent (days 1 and 5); the ids of all three."""
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run_days(1, 5)
    first, second, final = (r["reminder_id"] for r in world.reminders(A))
    assert [r["status"] for r in world.reminders(A)] == ["sent", "sent", "scheduled"]
    return first, second, final


def effective_days(world: World) -> list[dt.date]:
    return [r["effective_on"] for r in world.reminders(A) if r["effective_on"] is not None]


# =========================================================================== carrier days


def test_two_receipts_on_one_beijing_day_count_one_day(world: World) -> None:
    first, second, _ = cancelled_with_two_sent(world)
    # 07:00 and 20:00 Beijing time on day 6: in UTC, 23:00 on day 5 and 12:00 on day 6.
    drop_receipts(
        world,
        day(7),
        [(first, "sms", "delivered", beijing(6, 7)), (second, "sms", "delivered", beijing(6, 20))],
    )
    world.run_days(7, 11)
    assert effective_days(world) == [day(6), day(6)]
    assert world.state(A)["state"] == "held"  # one day is not two
    (eff, _) = world.ledger("reminder_effective")
    assert json.loads(eff["fields"])["effective_on"] == day(6).isoformat()


def test_two_receipts_across_beijing_midnight_count_two_days(world: World) -> None:
    first, second, _ = cancelled_with_two_sent(world)
    # 23:30 on day 5 and 00:30 on day 6 Beijing time: both on day 5 in UTC.
    drop_receipts(
        world,
        day(6),
        [(first, "sms", "delivered", beijing(5, 23, 30)), (second, "sms", "delivered", beijing(6, 0, 30))],
    )
    world.run_days(6, 11)
    assert sorted(effective_days(world)) == [day(5), day(6)]
    assert world.state(A)["state"] == "available"
    assert world.one("SELECT effective_reminders FROM releases") == 2


# =========================================================================== judged receipts


def test_a_receipt_for_a_reminder_never_sent_is_quarantined(world: World) -> None:
    _, _, final = cancelled_with_two_sent(world)
    drop_receipts(world, day(6), [(final, "sms", "delivered", beijing(6, 9))])  # final goes out on day 8
    r = world.run(day(6))["receipts"]
    assert (r.receipts, r.applied, r.not_sent, r.newly_effective) == (1, 0, 1, 0)
    (q,) = world.quarantine("receipts")
    assert q["reason"] == "reminder_not_sent" and q["kind"] == "receipts"
    assert final in q["detail"] and mask(A) in q["detail"] and A not in q["detail"]
    assert "had not been sent" in q["detail"] and "reminder id" in q["detail"]
    assert (world.reminders(A)[2]["status"], world.reminders(A)[2]["effective_on"]) == ("scheduled", None)
    assert world.ledger("reminder_effective") == []


def test_a_receipt_before_the_send_less_the_skew_is_quarantined(world: World) -> None:
    first, second, _ = cancelled_with_two_sent(world)
    # Reminder 2 was sent on the night of day 5: its send counts from 00:00 Beijing on day 5,
    # less 10 minutes of clock skew. 23:49 on day 4 is before; 23:51 is inside the allowance
    # and counts on day 5 (the sending day), not day 4.
    drop_receipts(
        world,
        day(6),
        [(second, "sms", "delivered", beijing(4, 23, 49)), (first, "sms", "delivered", beijing(4, 23, 51))],
    )
    r = world.run(day(6))["receipts"]
    assert (r.applied, r.before_send, r.newly_effective) == (1, 1, 1)
    (q,) = world.quarantine("receipts")
    assert q["reason"] == "receipt_before_send" and second in q["detail"] and mask(A) in q["detail"]
    assert "receipt_clock_skew_minutes" in q["detail"]
    got = {r["reminder_id"]: (r["status"], r["effective_on"]) for r in world.reminders(A)}
    assert got[first] == ("delivered", day(4))  # sent day 1; 23:51 Beijing on day 4 counts on day 4
    assert got[second] == ("sent", None)


def test_the_skew_allowance_is_configurable(world: World) -> None:
    world.settings = replace(world.settings, receipt_clock_skew_minutes=0)
    _, second, _ = cancelled_with_two_sent(world)
    drop_receipts(world, day(6), [(second, "sms", "delivered", beijing(4, 23, 59))])
    assert world.run(day(6))["receipts"].before_send == 1


def test_a_receipt_inside_the_skew_counts_on_the_sending_day(world: World) -> None:
    _, second, _ = cancelled_with_two_sent(world)
    drop_receipts(world, day(6), [(second, "sms", "delivered", beijing(4, 23, 55))])
    assert world.run(day(6))["receipts"].applied == 1
    assert world.reminders(A)[1]["effective_on"] == day(5)


def test_a_receipt_after_the_release_is_quarantined(world: World) -> None:
    first, second, final = cancelled_with_two_sent(world)
    drop_receipts(
        world,
        day(6),
        [(first, "sms", "delivered", beijing(2, 9)), (second, "sms", "delivered", beijing(6, 9))],
    )
    world.run_days(6, 11)
    assert world.state(A)["released_on"] == day(11)
    # The final reminder (sent day 8) reported delivered at 00:10 Beijing on day 12.
    drop_receipts(world, day(12), [(final, "sms", "acknowledged", beijing(12, 0, 10))])
    r = world.run(day(12))["receipts"]
    assert (r.applied, r.after_release, r.newly_effective, r.newly_acknowledged) == (0, 1, 0, 0)
    (q,) = world.quarantine("receipts")
    assert q["reason"] == "receipt_after_release" and final in q["detail"]
    assert f"released on {day(11).isoformat()}" in q["detail"]
    assert len(world.ledger("reminder_effective")) == 2 and world.ledger("acknowledged") == []


def test_the_gate_does_not_release_on_receipts_that_cannot_be_genuine(world: World) -> None:
    first, second, final = cancelled_with_two_sent(world)
    drop_receipts(
        world,
        day(6),
        [
            (final, "sms", "delivered", beijing(6, 8)),  # not sent yet
            (second, "sms", "delivered", beijing(3, 8)),  # before its send on day 5
            ("R00000000000000000000", "sms", "delivered", beijing(6, 9)),  # no such reminder
            (first, "email", "delivered", beijing(6, 9)),  # it went out by sms
        ],
    )
    r = world.run(day(6))["receipts"]
    assert (r.receipts, r.applied, r.unknown, r.not_sent, r.before_send) == (4, 0, 2, 1, 1)
    world.run_days(7, 11)
    assert world.state(A)["state"] == "held"
    assert effective_days(world) == [] and world.ledger("reminder_effective") == []
    reasons = sorted(q["reason"] for q in world.quarantine("receipts"))
    assert reasons == ["receipt_before_send", "reminder_not_sent", "unknown_reminder", "unknown_reminder"]


def test_a_rerun_of_the_receipts_step_judges_alike(world: World) -> None:
    import pipelines.reminders as rm

    _, _, final = cancelled_with_two_sent(world)
    world.run_days(6, 7)
    drop_receipts(world, day(8), [(final, "sms", "delivered", beijing(8, 9))])
    world.run(day(8))  # the final reminder goes out tonight, after the receipts step
    before = world.dump()
    again = world.step(rm.apply_receipts, day(8))
    assert (again.applied, again.not_sent) == (0, 1)
    assert world.dump() == before
