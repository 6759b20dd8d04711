"""Pending recycle notices (``lifecycle.notices``) and the notice period of the release gate.

A short freeze here (3 days) with the default 7-day notice, so the notice is what binds; no
reminders are required, so nothing else holds a number.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from lifecycle_testkit import SETTINGS, A, B, World, day, seeded

import pipelines.lifecycle as lc
from pipelines.config import Policy

NOTICE = Policy(
    freeze_days=3, suspend_days=2, reminder_offsets=(0,), min_effective_reminders=0, max_hold_days=0
)


@pytest.fixture
def short(world: World) -> World:
    world.settings = replace(SETTINGS, policies={"default": NOTICE})
    return world


def notices(world: World, msisdn: str = A) -> list[dict[str, Any]]:
    return world.rows(
        "SELECT seq, event, disconnected_on, earliest_release_on, cause, logical_date FROM notice_events "
        "WHERE msisdn = ? ORDER BY seq",
        [msisdn],
    )


def test_a_cancel_is_listed_pending_the_same_night_with_its_earliest_release(short: World) -> None:
    seeded(short, A, B)
    short.event(day(1), A, "cancel")
    report = short.run(day(1))["events"]
    assert (report.notices_listed, report.notices_withdrawn) == (1, 0)
    # the freeze ends on day 4, the notice on day 8: the later one
    assert notices(short) == [
        {
            "seq": 1,
            "event": "pending",
            "disconnected_on": day(1),
            "earliest_release_on": day(8),
            "cause": "cancel",
            "logical_date": day(1),
        }
    ]
    assert notices(short, B) == []


def test_restore_withdraws_and_a_new_cancel_lists_again(short: World) -> None:
    seeded(short, A)
    short.event(day(1), A, "cancel")
    short.run(day(1))
    short.event(day(2), A, "restore")
    assert short.run(day(2))["events"].notices_withdrawn == 1
    short.event(day(3), A, "cancel")
    short.run(day(3))
    assert [(n["seq"], n["event"], n["disconnected_on"], n["logical_date"]) for n in notices(short)] == [
        (1, "pending", day(1), day(1)),
        (2, "withdrawn", day(1), day(2)),
        (3, "pending", day(3), day(3)),
    ]


def test_no_release_before_the_number_was_pending_min_notice_days(short: World) -> None:
    seeded(short, A)
    short.event(day(1), A, "cancel")
    short.run(day(1))
    for n in range(4, 8):  # the freeze is over from day 4
        report = short.run(day(n))["advance"]
        assert (report.released, report.waiting_notice) == (0, 1), n
        assert short.state(A)["state"] == "frozen"
    assert short.run(day(8))["advance"].released == 1  # listed on day 1, 7 days on
    assert short.state(A)["state"] == "available"


def test_the_notice_period_is_per_province(short: World) -> None:
    short.settings = replace(
        short.settings, policies={"default": NOTICE, "GD": replace(NOTICE, min_notice_days=3)}
    )
    seeded(short, A)
    short.event(day(1), A, "cancel")
    short.run_days(1, 3)
    assert short.run(day(4))["advance"].released == 1  # freeze and a 3-day notice both over


def test_a_suspension_is_listed_the_night_it_becomes_permanent(short: World) -> None:
    seeded(short, A)
    short.event(day(1), A, "suspend")
    short.run_days(1, 2)
    assert notices(short) == []  # a suspension is not a disconnection (yet)
    short.run(day(3))  # suspend_days = 2: permanent tonight, frozen until day 6
    (listed,) = notices(short)
    assert (listed["disconnected_on"], listed["cause"], listed["logical_date"]) == (day(1), "suspend", day(3))
    assert listed["earliest_release_on"] == day(10)
    short.run_days(4, 9)
    assert short.state(A)["state"] == "frozen"
    short.run(day(10))
    assert short.state(A)["state"] == "available"


def test_numbers_frozen_before_notices_existed_are_listed_on_the_first_night_and_wait(short: World) -> None:
    seeded(short, A)
    short.event(day(1), A, "cancel")
    short.run(day(1))
    short.con.execute("DELETE FROM notice_events")  # a state from before this feature
    short.run(day(5))
    (listed,) = notices(short)
    assert (listed["logical_date"], listed["earliest_release_on"]) == (day(5), day(12))
    short.run_days(6, 11)
    assert short.state(A)["state"] == "frozen"
    assert short.run(day(12))["advance"].released == 1


def test_an_exception_does_not_skip_the_notice(short: World) -> None:
    short.settings = replace(
        short.settings, policies={"default": replace(NOTICE, min_effective_reminders=2, max_hold_days=0)}
    )
    seeded(short, A)
    short.event(day(1), A, "cancel")
    short.run_days(1, 7)
    assert short.state(A)["state"] == "frozen"
    short.run(day(8))
    assert short.one("SELECT exception FROM releases WHERE msisdn = ?", [A]) is True


def test_a_rerun_of_the_night_lists_nothing_new(short: World) -> None:
    seeded(short, A)
    short.event(day(1), A, "cancel")
    short.run(day(1))
    again = short.step(lc.apply_events, day(1))
    assert (again.notices_listed, again.notices_withdrawn) == (0, 0)
    assert len(notices(short)) == 1


def test_a_reissue_closes_the_notice_without_a_withdrawal(short: World) -> None:
    seeded(short, A)
    short.event(day(1), A, "cancel")
    short.run_days(1, 8)
    short.reissue(day(9), A)
    short.run(day(9))
    assert [n["event"] for n in notices(short)] == ["pending"]
