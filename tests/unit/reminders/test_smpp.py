"""SmppChannel against a real SMPP server on loopback (pipelines.dev.smsc): bind, window,
throttling, a dropped link, segmentation and the receipts that come back on the bind."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import replace

import pytest

from pipelines.config import SmppSettings
from pipelines.dev.smsc import SmscSimulator
from pipelines.reminders.channels import OutgoingReminder, SendResult
from pipelines.reminders.smpp import SmppChannel
from pipelines.reminders.smpp_text import DATA_CODING_GSM, DATA_CODING_UCS2, decode_segment, segments

ZH = "【Example Mobile】您的号码138****5678已于2026年3月1日销户，将于2026年5月30日重新放号。请尽快解绑银行、支付、网盘等账户：https://unbind.carrier.example，或使用一证通查。第1次提醒。"
EN = "Example Mobile: your number 138****5678 was closed on 2026-03-01 and will be reissued on 2026-05-30. Unbind bank, payment and cloud accounts now: https://unbind.carrier.example [1st reminder]"


def reminders(n: int, text: str = ZH) -> list[OutgoingReminder]:
    return [
        OutgoingReminder(f"R{i:05d}", "sms", f"+86139{i:08d}", "zh-CN", "", text, dt.date(2026, 3, 1))
        for i in range(n)
    ]


def channel(sim: SmscSimulator, **kw: object) -> SmppChannel:
    kw.setdefault("receipt_grace_s", 3.0)
    return SmppChannel(sim.settings(**kw), zone=dt.UTC)  # type: ignore[arg-type]


def acknowledged_parts(sim: SmscSimulator) -> Counter[tuple[str, bytes]]:
    return Counter((s.destination, s.short_message) for s in sim.submitted)


def test_bind_window_and_receipts_on_the_bind() -> None:
    batch = reminders(30)
    with SmscSimulator(resp_delay_s=0.02, delivered=0.7) as sim:
        with channel(sim, window=4) as ch:
            out = ch.send_batch(batch)
        assert sim.binds == 1
        assert sim.max_in_flight == 4  # the window is used, never exceeded
        assert [r.reminder_id for r in out.sent] == [r.reminder_id for r in batch] and not out.failed
        first_parts = {
            s.message_id
            for s in sim.submitted
            if decode_segment(s.data_coding, s.esm_class, s.short_message).part == 1
        }
        assert {r.provider_ref for r in out.sent} == first_parts
        got = {r.reminder_id: r.status for r in ch.receipts}
        assert len(got) == 30
        assert sorted(sim.receipts_sent) == sorted(s.message_id for s in sim.submitted)  # all on the bind
        assert set(got.values()) == {"delivered", "failed"}  # the seeded profile gives both


def test_throttling_is_honoured_and_nothing_is_lost() -> None:
    batch = reminders(40, EN)
    with SmscSimulator(rate=150) as sim:
        with channel(sim, window=20, rate=2000) as ch:
            out = ch.send_batch(batch)
        assert sim.throttled > 0
        assert len(out.sent) == 40 and not out.failed
        parts = acknowledged_parts(sim)
        assert max(parts.values()) == 1 and len(parts) == sum(len(segments(EN, r.reminder_id)) for r in batch)


def test_the_channel_rate_keeps_an_smsc_from_throttling() -> None:
    with SmscSimulator(rate=200) as sim:
        with channel(sim, window=20, rate=100) as ch:
            out = ch.send_batch(reminders(20, "short"))
        assert sim.throttled == 0 and len(out.sent) == 20


def test_a_dropped_link_is_rebound_and_only_unacknowledged_parts_go_again() -> None:
    batch = reminders(25)
    with SmscSimulator(resp_delay_s=0.01, drop_after=17) as sim:
        with channel(sim, window=5) as ch:
            out = ch.send_batch(batch)
        assert sim.drops == 1 and sim.binds == 2
        assert len(out.sent) == 25 and not out.failed
        parts = acknowledged_parts(sim)
        assert max(parts.values()) == 1  # nothing the SMSC acknowledged was submitted twice
        assert len(parts) == 25 * len(segments(ZH, "x"))  # and nothing is missing
        assert {s.bind for s in sim.submitted} == {1, 2}


def test_ucs2_long_message_is_segmented_and_reassembles() -> None:
    with SmscSimulator() as sim:
        with channel(sim) as ch:
            ch.send_batch(
                [
                    *reminders(1, ZH),
                    OutgoingReminder("REN", "sms", "+447700900123", "en", "", EN, dt.date(2026, 3, 1)),
                ]
            )
        codings = {(s.destination, s.data_coding) for s in sim.submitted}
        assert ("8613900000000", DATA_CODING_UCS2) in codings and ("447700900123", DATA_CODING_GSM) in codings
        assert len(ZH) > 70  # more than one UCS-2 message holds: 67 characters a part
        assert sum(s.destination == "8613900000000" for s in sim.submitted) == -(-len(ZH) // 67)
        assert sorted(sim.texts()) == sorted([("8613900000000", ZH), ("447700900123", EN)])


@pytest.mark.parametrize("tlv", [True, False], ids=["receipted_message_id", "text-only"])
def test_receipts_are_read_from_the_tlv_or_the_text(tlv: bool) -> None:
    with SmscSimulator(receipt_tlv=tlv, delivered=1.0) as sim:
        with channel(sim) as ch:
            out = ch.send_batch(reminders(3, "short"))
        assert {(r.reminder_id, r.status, r.provider_ref) for r in ch.receipts} == {
            (s.reminder_id, "delivered", s.provider_ref) for s in out.sent
        }


def test_enquire_link_on_idle_and_late_receipts_are_held() -> None:
    with SmscSimulator(receipt_delay_s=0.4, late=0.5, seed=3) as sim:
        with channel(sim, enquire_link_s=0.1, receipt_grace_s=2.0) as ch:
            out = ch.send_batch(reminders(10, "short"))
        assert sim.enquire_links >= 1
        late = sim.undelivered_receipts()
        assert 0 < len(late) < 10
        assert len(ch.receipts) + len(ch.late_receipts(late)) == len(out.sent) == 10


def test_a_wrong_password_is_a_transient_failure_naming_the_setting() -> None:
    with SmscSimulator(password="right") as sim:
        ch = SmppChannel(replace(sim.settings(), password="wrong"), zone=dt.UTC)
        out = ch.send_batch(reminders(2, "short"))
        assert len(out.transient) == 2 and "RECYCLE_SMPP_PASSWORD" in out.failed[0].reason
        assert "+86139" not in out.failed[0].reason


def test_a_bad_number_fails_for_good_without_a_bind() -> None:
    ch = SmppChannel(SmppSettings(port=1), zone=dt.UTC)
    out = ch.send_batch([OutgoingReminder("R1", "sms", "13800000001", "zh-CN", "", "x", dt.date(2026, 3, 1))])
    assert out.permanent and ch.binds == 0


def test_the_send_journal_hears_each_reminder_once_when_its_last_part_is_in() -> None:
    """The journal (reminders.journal, no second send after a kill) is told of a reminder as soon
    as the SMSC acknowledged every part of it, once, with the id of its first part."""
    batch = reminders(12)
    heard: list[SendResult] = []
    with SmscSimulator() as sim, channel(sim, window=5) as ch:
        out = ch.send_batch(batch, heard.append)
    assert len(heard) == len(batch)  # once each
    assert sorted(h.reminder_id for h in heard) == sorted(r.reminder_id for r in batch)
    assert {h.reminder_id: h.provider_ref for h in heard} == {s.reminder_id: s.provider_ref for s in out.sent}
