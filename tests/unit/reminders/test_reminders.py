"""Reminders: schedule per policy offset, channel choice, outbox rendering, sending with
fallback, and receipts. State is built through the ingest tables (see test_lifecycle.World)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from lifecycle_testkit import OWN_PHONE, A, B, C, World, day, open_db, seeded

import pipelines.reminders as rm
from pipelines.config import Settings
from pipelines.numbers import mask
from pipelines.reminders import render
from pipelines.reminders.channels import LetterBatchChannel, letter_batch_path
from pipelines.reminders.templates import ReminderContext, RenderedReminder, render_reminder


@pytest.fixture
def world(tmp_path: Path) -> World:
    con = open_db(tmp_path / "state.duckdb")
    yield World(con)  # type: ignore[misc]
    con.close()


# =========================================================================== schedule


def test_one_reminder_per_offset_on_the_owners_best_channel(world: World) -> None:
    world.subscriber(day(0), A, phone=OWN_PHONE, email="a@example.cn")
    world.subscriber(day(0), B, phone=None, email="b@example.cn")
    world.subscriber(day(0), C, phone=None, email=None)
    world.run(day(0))
    for n in (A, B, C):
        world.event(day(1), n, "cancel")
    report = world.run(day(1))["schedule"]
    assert report.scheduled == 9
    for n, channel, address in ((A, "sms", OWN_PHONE), (B, "email", "b@example.cn"), (C, "letter", "S1")):
        rems = world.reminders(n)
        assert [(r["slot"], r["due_on"], r["reminder_no"], r["final"]) for r in rems] == [
            ("offset:0", day(1), 1, False),
            ("offset:4", day(5), 2, False),
            ("offset:-3", day(8), 3, True),
        ]
        assert {(r["channel"], r["address"]) for r in rems} == {(channel, address)}
        assert rems[0]["reminder_id"] == rm.reminder_id(rems[0]["tenure_id"], day(1), "offset:0", channel)


def test_a_suspension_is_reminded_from_its_first_day(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "suspend")
    world.run(day(1))
    rems = world.reminders(A)
    # Offsets count from the suspension (the disconnection); the last one from the freeze end
    # (suspension 5 days + freeze 10 days).
    assert [(r["slot"], r["due_on"]) for r in rems] == [
        ("offset:0", day(1)),
        ("offset:4", day(5)),
        ("offset:-3", day(13)),
    ]
    (sent,) = world.channels["sms"].sent
    assert "欠费停机" in sent.text and mask(A) in sent.text


def test_a_late_cancel_gets_its_past_reminders_today_once(world: World) -> None:
    seeded(world, A)
    world.event(day(9), A, "cancel", eff=day(2))  # reported a week late
    world.run(day(9))
    rems = world.reminders(A)
    # day 0 and day 4 of the freeze are past: one reminder today (not two); the final one is
    # still ahead (day 2 + 10 - 3 = day 9 = today as well): also folded into today's.
    assert [(r["slot"], r["due_on"]) for r in rems] == [("offset:-3", day(9))]
    assert len(world.channels["sms"].sent) == 1


def test_no_reminders_for_ports_or_active_numbers(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "port_out")
    world.run(day(1))
    assert world.one("SELECT count(*) FROM reminders") == 0


# =========================================================================== outbox


def _direct(world: World, rid: str) -> RenderedReminder:
    r = world.rows(
        """
        SELECT r.*, s.freeze_ends, s.cause FROM reminders r JOIN number_state s USING (msisdn)
        WHERE reminder_id = ?
        """,
        [rid],
    )[0]
    s = world.settings
    return render_reminder(
        ReminderContext(
            reminder_id=rid,
            msisdn=r["msisdn"],
            channel=r["channel"],
            language=r["language"],
            disconnected_on=r["disconnected_on"],
            release_on=r["freeze_ends"],
            reminder_no=r["reminder_no"],
            final=r["final"],
            carrier_name=s.carrier_name,
            unbind_url=s.unbind_url,
            national_unbind_service=s.national_unbind_service,
            cause=r["cause"],
        )
    )


def test_outbox_texts_equal_one_by_one_rendering_and_never_show_the_number(world: World) -> None:
    numbers = [f"+86138{i:08d}" for i in range(40)] + ["+8615912345678", "+8618600000000"]
    for i, n in enumerate(numbers):
        world.subscriber(
            day(0),
            n,
            phone=f"+86139{i:08d}" if i % 3 else None,
            email=f"u{i}@example.cn",
            language="en" if i % 2 else "zh-CN",
        )
    world.run(day(0))
    for n in numbers:
        world.event(day(1), n, "cancel")
    report = world.run(day(1), send=False)["schedule"]
    assert report.rendered == len(numbers) and report.rendered_one_by_one == 0
    rows = world.rows("SELECT o.*, r.msisdn FROM outbox o JOIN reminders r USING (reminder_id)")
    assert len(rows) == len(numbers)
    for row in rows:
        assert row["idempotency_key"] == row["reminder_id"] and row["status"] == "pending"
        want = _direct(world, row["reminder_id"])
        assert (row["subject"], row["text"], row["html"], row["language"]) == (
            want.subject,
            want.text,
            want.html,
            want.language,
        )
        for field in ("subject", "text", "html"):
            assert row["msisdn"][3:] not in (row[field] or "")
        assert mask(row["msisdn"]) in row["text"]
        if row["channel"] != "sms":  # a zh-CN SMS drops the reference to fit 140 characters
            assert row["reminder_id"] in row["text"]


def test_a_template_that_uses_the_number_otherwise_is_rendered_one_by_one(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def with_checksum(ctx: ReminderContext) -> RenderedReminder:
        out = render_reminder(ctx)
        tag = hashlib.sha256(ctx.msisdn.encode()).hexdigest()[:6]
        return RenderedReminder(out.subject, out.text + tag, out.html, out.language)

    monkeypatch.setattr(render, "render_reminder", with_checksum)
    for i in range(5):
        world.subscriber(day(0), f"+86138{i:08d}")
    world.run(day(0))
    for i in range(5):
        world.event(day(1), f"+86138{i:08d}", "cancel")
    report = world.run(day(1), send=False)["schedule"]
    assert (report.rendered, report.rendered_one_by_one) == (5, 5)
    for row in world.rows("SELECT o.text, r.msisdn FROM outbox o JOIN reminders r USING (reminder_id)"):
        assert row["text"].endswith(hashlib.sha256(row["msisdn"].encode()).hexdigest()[:6])


# =========================================================================== send


def test_send_marks_sent_queues_ledger_and_a_rerun_sends_nothing(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "cancel")
    report = world.run(day(1))["send"]
    assert (report.attempted, report.sent, report.failed) == (2, 2, 0)
    sms = world.channels["sms"]
    assert len(sms.sent) == 2
    again = rm.send_reminders(world.con, world.settings, day(1), world.channels)
    assert again.attempted == 0 and len(sms.sent) == 2
    (first,) = world.reminders(A, "sent")
    assert (first["sent_on"], first["provider_ref"], first["attempts"]) == (
        day(1),
        f"ref-{first['reminder_id']}",
        1,
    )
    events = world.ledger("reminder_sent")
    assert len(events) == 2
    fields = json.loads(events[0]["fields"])
    assert fields["channel"] == "sms" and fields["sent_on"] == day(1).isoformat()
    assert {r["status"] for r in world.rows("SELECT status FROM outbox")} == {"sent"}


def test_permanent_failure_falls_back_to_the_next_channel_next_night(world: World) -> None:
    seeded(world, A, email="a@example.cn")
    world.channels["sms"].permanent.add(OWN_PHONE)
    world.event(day(1), A, "cancel")
    assert world.run(day(1))["send"].failed == 1
    (failed,) = world.reminders(A, "failed")
    assert failed["channel"] == "sms"
    assert (
        world.rows("SELECT status FROM outbox WHERE reminder_id = ?", [failed["reminder_id"]])[0]["status"]
        == "failed"
    )
    report = world.run(day(2))
    assert report["schedule"].fallbacks == 1
    (fb,) = [r for r in world.reminders(A) if r["slot"].startswith("fallback:")]
    assert (fb["channel"], fb["address"], fb["due_on"], fb["origin_id"], fb["status"]) == (
        "email",
        "a@example.cn",
        day(2),
        failed["reminder_id"],
        "sent",
    )
    # Without an e-mail address, the fallback after sms is a letter.
    world.subscriber(day(0), B, phone="+8613700000000", email=None)
    world.run(day(0))
    world.channels["sms"].permanent.add("+8613700000000")
    world.event(day(3), B, "cancel")
    world.run(day(3))
    world.run(day(4))
    assert [r["channel"] for r in world.reminders(B) if r["slot"] == "fallback:offset:0"] == ["letter"]


def test_transient_failures_retry_on_later_nights_then_fall_back(world: World) -> None:
    seeded(world, A, email="a@example.cn")
    world.channels["sms"].transient.add(OWN_PHONE)
    world.event(day(1), A, "cancel")
    r1 = world.run(day(1))["send"]
    assert (r1.sent, r1.retry_later, r1.failed) == (0, 1, 0)
    again = rm.send_reminders(world.con, world.settings, day(1), world.channels, sleep=lambda s: None)
    assert again.attempted == 0  # tried today already
    assert world.run(day(2))["send"].retry_later == 1
    assert world.run(day(3))["send"].failed == 1  # third night: give up, fall back
    world.run(day(4))
    assert [r["channel"] for r in world.reminders(A) if r["slot"].startswith("fallback:")] == ["email"]
    assert world.channels["email"].sent


def test_rows_for_a_channel_without_adapter_stay_pending(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1), send=False)
    report = rm.send_reminders(world.con, world.settings, day(1), {})
    assert (report.no_channel, report.attempted) == (1, 0)
    assert world.one("SELECT status FROM outbox") == "pending"


def test_letters_go_to_the_print_house_batch(world: World, tmp_path: Path) -> None:
    world.subscriber(day(0), A, phone=None, email=None)
    world.run(day(0))
    world.event(day(1), A, "cancel")
    world.run(day(1), send=False)
    letters = LetterBatchChannel(tmp_path / "letters", day(1))
    report = rm.send_reminders(world.con, world.settings, day(1), {"letter": letters})
    assert report.sent == 1
    batch = letter_batch_path(tmp_path / "letters", day(1)).read_text(encoding="utf-8")
    (rem,) = world.reminders(A, "sent")
    assert rem["reminder_id"] in batch and A not in batch and mask(A) in batch


# =========================================================================== receipts


def test_receipts_make_reminders_effective_once(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    rid = world.deliver(day(2), A, at=day(1))
    world.receipt(day(2), rid, "acknowledged", at=day(2))
    r = world.run(day(2))["receipts"]
    assert (r.receipts, r.applied, r.newly_effective, r.newly_acknowledged) == (2, 2, 1, 1)
    (rem,) = [x for x in world.reminders(A) if x["reminder_id"] == rid]
    assert (rem["status"], rem["effective_on"], rem["provider_ref"]) == ("acknowledged", day(1), f"ref-{rid}")
    (eff,) = world.ledger("reminder_effective")
    (ack,) = world.ledger("acknowledged")
    row = world.rows("SELECT * FROM receipt_rows WHERE status = 'delivered'")[0]
    canonical = "|".join([rid, "sms", "delivered", row["at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "gw-1"])
    assert json.loads(eff["fields"])["receipt_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert json.loads(ack["fields"])["channel"] == "sms"
    # A later failure cannot undo an effective reminder, and is not a second effective event.
    world.receipt(day(3), rid, "failed")
    r3 = world.run(day(3))["receipts"]
    assert (r3.newly_effective, r3.newly_failed) == (0, 0)
    assert world.reminders(A)[0]["status"] == "acknowledged"
    assert len(world.ledger("reminder_effective")) == 1


def test_unknown_reminder_or_wrong_channel_is_quarantined(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    (rem,) = world.reminders(A, "sent")
    world.receipt(day(2), "R00000000000000000000", "delivered", channel="sms")
    world.receipt(day(2), rem["reminder_id"], "delivered", channel="email")
    r = world.run(day(2))["receipts"]
    assert (r.receipts, r.unknown, r.applied) == (2, 2, 0)
    q = world.quarantine("receipts")
    assert [x["reason"] for x in q] == ["unknown_reminder", "unknown_reminder"]
    assert q[0]["kind"] == "receipts" and "sms" in q[1]["detail"]
    assert world.reminders(A, "sent")  # untouched


@pytest.mark.parametrize("status", ["failed", "expired"])
def test_failed_or_expired_receipt_falls_back_the_same_night(world: World, status: str) -> None:
    seeded(world, A, email="a@example.cn")
    world.event(day(1), A, "cancel")
    world.run(day(1))
    rid = world.deliver(day(2), A, status)
    reports = world.run(day(2))
    assert reports["receipts"].newly_failed == 1 and reports["schedule"].fallbacks == 1
    (rem,) = [x for x in world.reminders(A) if x["reminder_id"] == rid]
    assert rem["status"] == status
    (fb,) = [x for x in world.reminders(A) if x["origin_id"] == rid]
    assert (fb["channel"], fb["due_on"], fb["status"]) == ("email", day(2), "sent")


def test_the_steps_leave_no_temp_table_behind(world: World) -> None:
    # Each module drops the temp tables of its phases when its step ends, on every path: a
    # night without receipts, then one with a known and an unknown receipt and a fallback.
    temp_tables = "SELECT table_name FROM duckdb_tables() WHERE temporary"
    seeded(world, A, email="a@example.cn")
    world.event(day(1), A, "cancel")
    assert world.run(day(1))["send"].sent == 1
    assert world.rows(temp_tables) == []
    world.deliver(day(2), A, "failed")
    world.receipt(day(2), "R00000000000000000000", "delivered", channel="sms")
    reports = world.run(day(2))
    assert (reports["receipts"].unknown, reports["schedule"].fallbacks, reports["send"].sent) == (1, 1, 1)
    assert world.rows(temp_tables) == []


def test_restore_cancels_pending_outbox_rows(world: World) -> None:
    seeded(world, A)
    world.channels["sms"].transient.add(OWN_PHONE)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    assert world.one("SELECT status FROM outbox") == "pending"
    world.event(day(2), A, "restore")
    world.run(day(2))
    assert world.one("SELECT status FROM outbox") == "cancelled"
    assert {r["status"] for r in world.reminders(A)} == {"cancelled"}
    assert world.ledger("reminder_sent") == []


def test_letters_disabled_means_no_letter_channel(tmp_path: Path) -> None:
    from dataclasses import replace

    from pipelines.config import LetterSettings

    con = open_db(tmp_path / "s.duckdb")
    world = World(con, settings=replace(World(con).settings, letter=LetterSettings(enabled=False)))
    assert isinstance(world.settings, Settings)
    world.subscriber(day(0), A, phone=None, email=None)
    world.run(day(0))
    world.event(day(1), A, "cancel")
    world.run(day(1))
    assert world.reminders(A) == []
    con.close()


# =========================================================================== SMS addresses
# A reminder never goes to the number being recycled (DESIGN "One answer"): a contact phone
# that is the number itself, or a number whose own tenure is closing, is not an SMS address.


def test_a_number_that_is_its_own_contact_phone_is_reminded_by_email_or_letter(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.subscriber(day(0), A, phone=A, email="a@example.cn")
    world.subscriber(day(0), B, phone=B, email=None)
    world.run(day(0))
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "cancel")
    with caplog.at_level("WARNING", logger="pipelines.reminders.schedule"):
        report = world.run(day(1))["schedule"]
    assert (report.scheduled, report.sms_contacts_skipped, report.sms_rerouted) == (6, 2, 0)
    assert {(r["channel"], r["address"]) for r in world.reminders(A)} == {("email", "a@example.cn")}
    assert {(r["channel"], r["address"]) for r in world.reminders(B)} == {("letter", "S1")}
    assert world.channels["sms"].sent == []
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "2 owner(s) reminded without SMS" in warning and mask(A) in warning
    assert A not in warning and B not in warning
    world.run_days(2, 10)
    assert world.channels["sms"].sent == []
    assert world.one("SELECT count(*) FROM reminders WHERE channel = 'sms'") == 0


def test_a_contact_phone_that_is_another_closing_number_is_skipped(world: World) -> None:
    world.subscriber(day(0), A, phone=B, email="a@example.cn")
    world.subscriber(day(0), B, phone=None, email="b@example.cn")
    world.subscriber(day(0), C, phone=None, email="c@example.cn")
    world.run(day(0))
    world.event(day(1), B, "cancel")  # B's own tenure is closing: frozen
    world.run(day(1))
    world.event(day(2), A, "cancel")
    report = world.run(day(2))["schedule"]
    assert report.sms_contacts_skipped == 1
    assert {(r["channel"], r["address"]) for r in world.reminders(A)} == {("email", "a@example.cn")}
    assert [r.to for r in world.channels["sms"].sent] == []


def test_a_contact_phone_of_an_active_other_number_is_used(world: World) -> None:
    world.subscriber(day(0), A, phone=B, email="a@example.cn")
    world.subscriber(day(0), B, phone=None, email="b@example.cn")
    world.run(day(0))
    world.event(day(1), A, "cancel")
    report = world.run(day(1))["schedule"]
    assert report.sms_contacts_skipped == 0
    assert {(r["channel"], r["address"]) for r in world.reminders(A)} == {("sms", B)}
    assert [r.to for r in world.channels["sms"].sent] == [B]


def test_a_scheduled_sms_to_a_number_that_closed_since_goes_to_the_next_channel(world: World) -> None:
    world.subscriber(day(0), A, phone=C, email="a@example.cn")
    world.subscriber(day(0), C, phone=None, email="c@example.cn")
    world.run(day(0))
    world.event(day(1), A, "cancel")
    world.run(day(1))  # day 0 of A's freeze: an SMS to C, which is active
    assert [r.to for r in world.channels["sms"].sent] == [C]
    world.event(day(3), C, "suspend")  # C's own tenure is closing now
    world.run_days(3, 4)
    day5 = world.run(day(5))["schedule"]  # A's day-4 reminder was scheduled for SMS to C
    assert (day5.sms_rerouted, day5.fallbacks) == (1, 1)
    by_slot = {(r["slot"], r["channel"]): r["status"] for r in world.reminders(A)}
    assert by_slot[("offset:4", "sms")] == "cancelled"
    assert by_slot[("fallback:offset:4", "email")] == "sent"
    world.run_days(6, 8)  # the final one (day 8) is rerouted too
    assert [r.to for r in world.channels["sms"].sent] == [C]
    assert by_slot.keys() <= {(r["slot"], r["channel"]) for r in world.reminders(A)}
    assert (
        world.one("SELECT count(*) FROM outbox WHERE contact_open(address) = ? AND status <> 'sent'", [C])
        == 0
    )


def test_the_gate_counts_nothing_sent_to_the_recycled_number(world: World) -> None:
    # The SMS gateway would deliver anything it is given, and every text it sent is confirmed
    # delivered; the e-mails are never confirmed. The number is its owner's contact phone, so
    # nothing is sent there, and the gate finds no effective reminder: held, then released
    # with an exception, never as compliant.
    world.subscriber(day(0), A, phone=A, email="a@example.cn")
    world.run(day(0))
    world.event(day(1), A, "cancel")
    for n in range(1, 16):
        for text in world.channels["sms"].sent:
            world.receipt(day(n), text.reminder_id, "delivered", at=day(n - 1))
        world.channels["sms"].sent.clear()
        world.run(day(n))
    assert world.one("SELECT count(*) FROM reminders WHERE contact_open(address) = ?", [A]) == 0
    hold = [r for r in world.reminders(A) if r["slot"] == "hold"]
    assert {r["channel"] for r in hold} == {"email", "letter"}
    (release,) = world.rows("SELECT * FROM releases WHERE msisdn = ?", [A])
    assert (release["effective_reminders"], release["exception"]) == (0, True)
