"""SMPP receipts of a night applied that night: the reminder is effective on its carrier day,
its ledger entry queued, the record written as the next inbox's receipts drop, and the release
gate counts it with no other effective reminder and no receipts file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lifecycle_testkit import SETTINGS, A, World, day, open_db, seeded

import pipelines.reminders as rm
from pipelines.dev.smsc import SmscSimulator
from pipelines.reminders.bind_receipts import finish_smpp_night
from pipelines.reminders.smpp import SmppChannel

ONE = replace(
    SETTINGS, policies={"default": replace(SETTINGS.policies["default"], min_effective_reminders=1)}
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    con = open_db(tmp_path / "state.duckdb")
    yield World(con, settings=ONE)
    con.close()


def smpp_night(world: World, tmp_path: Path, d: dt.date, *, apply: bool = True) -> None:
    """Night ``d`` with SMS through the SMSC simulator; receipts timed on the night (20:00)."""
    night = world.settings.day_start(d) + dt.timedelta(hours=20)
    with SmscSimulator(delivered=1.0, zone=world.settings.zone, receipt_clock=lambda: night) as sim:
        ch = SmppChannel(sim.settings(receipt_grace_s=3.0), zone=world.settings.zone, clock=lambda: night)
        world.channels["sms"] = ch  # type: ignore[assignment]
        world.run(d)
        if apply:
            report = finish_smpp_night(world.con, world.settings, d, ch, tmp_path / "inbox-next")
            assert report.on_bind == 1 and report.applied is not None and report.applied.newly_effective == 1
        else:
            ch.close()


def test_a_same_night_smpp_receipt_counts_and_the_gate_releases_on_it(world: World, tmp_path: Path) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    smpp_night(world, tmp_path, day(1))
    (rem,) = world.reminders(A, "delivered")
    assert rem["channel"] == "sms" and rem["effective_on"] == day(1) and rem["sent_on"] == day(1)
    assert [e["type"] for e in world.ledger("reminder_effective")] == ["reminder_effective"]
    (record,) = (tmp_path / "inbox-next").glob("receipts_smpp-2026-03-02-*.csv")
    assert rem["reminder_id"] in record.read_text() and "+86" not in record.read_text()
    world.channels["sms"] = type(world.channels["email"])("sms")  # later SMS: sent, never answered
    world.run_days(2, 12)
    (release,) = world.rows("SELECT * FROM releases WHERE msisdn = ?", [A])
    assert release["effective_reminders"] == 1 and release["exception"] is False


def test_without_the_bind_receipt_the_gate_holds(world: World, tmp_path: Path) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    smpp_night(world, tmp_path, day(1), apply=False)
    world.channels["sms"] = type(world.channels["email"])("sms")
    world.run_days(2, 12)
    (release,) = world.rows("SELECT * FROM releases WHERE msisdn = ?", [A]) or [None]
    assert release is None or release["exception"] is True


def test_the_record_file_next_night_changes_nothing(world: World, tmp_path: Path) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    smpp_night(world, tmp_path, day(1))
    before = world.dump()
    (record,) = (tmp_path / "inbox-next").glob("receipts_smpp-*.csv")
    rid, channel, status, _at, ref = record.read_text().splitlines()[1].split(",")
    world.receipt(day(2), rid, status, channel=channel, provider_ref=ref)
    report = world.step(rm.apply_receipts, day(2))
    assert report.applied == 1 and report.newly_effective == 0
    assert world.dump()["reminders"] == before["reminders"]
