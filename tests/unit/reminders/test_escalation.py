"""No silent release: a held number's reminders escalate on every channel at the policy's
cadence, and a release with an exception or a violating reissue sends the prior owner an
urgent notice on every channel left, queued for the ledger like a reminder, while the night
fails until ops acknowledge the item (``recycle alerts ack``).

Policy (lifecycle_testkit.SETTINGS): 10-day freeze, reminders on day 0, 4 and 7 of it, 2
effective reminders needed, at most 3 days held. A cancels on day 1: held on day 11 when no
receipt comes back, released with an exception on day 14. The owner has SMS (OWN_PHONE),
e-mail and letters.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lifecycle_testkit import OWN_PHONE, SETTINGS, A, B, World, day, open_db, seeded
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.compliance.alerts import nightly_alerts
from pipelines.errors import ComplianceViolationError
from pipelines.layout import Layout
from pipelines.numbers import mask

EVERY_CHANNEL = {"sms", "email", "letter"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    con = open_db(tmp_path / "state.duckdb")
    yield World(con)
    con.close()


def escalating(world: World) -> World:
    """Held for up to 8 days, reminded every 2 days, at most 3 rounds: days 11, 13 and 15."""
    policy = replace(
        SETTINGS.policies["default"], max_hold_days=8, hold_reminder_every_days=2, max_hold_reminders=3
    )
    world.settings = replace(SETTINGS, policies={"default": policy})
    return world


def cancelled(world: World, *numbers: str) -> World:
    seeded(world, *numbers, email="owner@example.cn")
    for n in numbers:
        world.event(day(1), n, "cancel")
    world.run(day(1))
    return world


def slots(world: World, msisdn: str, prefix: str) -> dict[str, set[str]]:
    """{slot: channels} of ``msisdn``'s reminders whose slot starts with ``prefix``."""
    found: dict[str, set[str]] = {}
    for r in world.reminders(msisdn):
        if r["slot"].startswith(prefix):
            found.setdefault(r["slot"], set()).add(r["channel"])
    return found


def sent_ledger_slots(world: World, msisdn: str) -> Counter[str]:
    return Counter(
        json.loads(e["fields"])["slot"] for e in world.ledger("reminder_sent") if e["msisdn"] == msisdn
    )


def test_a_held_number_is_reminded_on_every_channel_at_the_cadence(world: World) -> None:
    cancelled(escalating(world), A)
    world.run_days(2, 18)
    assert world.state(A)["state"] == "held"
    hold = [r for r in world.reminders(A) if r["slot"].startswith("hold")]
    by_day = {d: {r["slot"] for r in hold if r["due_on"] == d} for d in {r["due_on"] for r in hold}}
    assert by_day == {day(11): {"hold"}, day(13): {"hold:1"}, day(15): {"hold:2"}}  # none after 3 rounds
    assert slots(world, A, "hold") == {
        "hold": EVERY_CHANNEL,
        "hold:1": EVERY_CHANNEL,
        "hold:2": EVERY_CHANNEL,
    }
    assert len({r["reminder_id"] for r in hold}) == 9
    assert {r["status"] for r in hold} == {"sent"}
    assert [r["reminder_no"] for r in hold if r["channel"] == "email"] == [4, 5, 6]
    # Each went out once, in the urgent text, and is in the ledger like any reminder.
    sent = [
        m
        for ch in world.channels.values()
        for m in ch.sent
        if m.reminder_id in {r["reminder_id"] for r in hold}
    ]
    assert len(sent) == 9 and all("紧急" in m.text for m in sent)
    assert all(mask(A) in m.text and A not in m.text for m in sent)
    assert {s: n for s, n in sent_ledger_slots(world, A).items() if s.startswith("hold")} == {
        "hold": 3,
        "hold:1": 3,
        "hold:2": 3,
    }
    # Released with an exception on day 19 (held on day 11 + 8).
    world.run(day(19))
    assert world.state(A)["state"] == "available"


def test_escalation_reruns_change_nothing(world: World) -> None:
    cancelled(escalating(world), A)
    world.run_days(2, 13)
    before = world.dump()
    sent = sum(len(ch.sent) for ch in world.channels.values())
    world.run(day(13))
    assert world.dump() == before
    assert sum(len(ch.sent) for ch in world.channels.values()) == sent


def test_a_release_with_an_exception_sends_an_urgent_notice_on_every_channel_left(world: World) -> None:
    seeded(world, A, email="a@example.cn")
    world.subscriber(day(0), B, email="b@example.cn", phone=B)  # B's phone is the number itself
    world.run(day(0))
    for n in (A, B):
        world.event(day(1), n, "cancel")
    world.run_days(1, 13)
    assert slots(world, A, "urgent") == {}
    report = world.run(day(14))
    assert report["advance"].released_with_exception == 2
    assert report["schedule"].urgent == 5
    assert slots(world, A, "urgent") == {"urgent:exception": EVERY_CHANNEL}
    assert slots(world, B, "urgent") == {"urgent:exception": {"email", "letter"}}  # never to B itself
    urgent = [r for r in world.reminders(A) if r["slot"] == "urgent:exception"]
    assert {r["status"] for r in urgent} == {"sent"} and {r["due_on"] for r in urgent} == {day(14)}
    sms = next(m for m in world.channels["sms"].sent if m.reminder_id in {r["reminder_id"] for r in urgent})
    assert sms.to == OWN_PHONE and "紧急" in sms.text and "2026年3月15日放号" in sms.text
    email = next(
        m for m in world.channels["email"].sent if m.to == "a@example.cn" and "紧急通知" in m.subject
    )
    assert "联系Example Mobile客服" in email.text and "号码持有证明" in email.text
    assert sent_ledger_slots(world, A)["urgent:exception"] == 3
    # Rerun: nothing new.
    before = world.dump()
    world.run(day(14))
    assert world.dump() == before


def test_a_violating_reissue_sends_the_prior_owner_an_urgent_notice(world: World) -> None:
    cancelled(world, A)
    world.reissue(day(3), A, ref="NEW")  # still frozen: a violation
    assert world.run(day(3))["schedule"].urgent == 3
    assert slots(world, A, "urgent") == {"urgent:violation": EVERY_CHANNEL}
    texts = [m for ch in world.channels.values() for m in ch.sent if "分配给新用户" in m.text]
    assert {m.channel for m in texts} == EVERY_CHANNEL
    assert sent_ledger_slots(world, A)["urgent:violation"] == 3
    # The new holder's number is not reminded and the notice goes to the prior owner's contacts.
    assert {m.to for m in texts} == {OWN_PHONE, "owner@example.cn", "S1"}


@pytest.mark.parametrize("case", ["exception", "violation"])
def test_the_night_fails_until_the_item_is_acknowledged(tmp_path: Path, case: str) -> None:
    settings = replace(SETTINGS, data_dir=tmp_path)
    world = World(open_db(Layout(tmp_path).state_db), settings)
    cancelled(world, A)
    # The item's date: the reissue date of a violation, the release date of an exception.
    n = 3 if case == "violation" else 14
    if case == "violation":
        world.reissue(day(3), A, ref="NEW")
    world.run_days(2, n)
    world.con.close()
    night = item_date = day(n)
    with pytest.raises(ComplianceViolationError, match="not acknowledged"):
        nightly_alerts(settings, night)
    with pytest.raises(ComplianceViolationError):  # and every night after
        nightly_alerts(settings, day(20))
    assert nightly_alerts(settings, night, mode="record")["alerts"]["passed"] is False
    acked = CliRunner().invoke(
        app,
        [
            *("alerts", "ack", "--number", A, "--date", item_date.isoformat()),
            *("--reason", "owner called back", "--by", "ops.li", "--data", str(tmp_path)),
        ],
    )
    assert acked.exit_code == 0, acked.output
    assert nightly_alerts(settings, night)["alerts"]["passed"] is True
    assert nightly_alerts(settings, day(20))["alerts"]["passed"] is True
