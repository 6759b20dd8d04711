"""Gateway simulators and the receipts drop they write: deterministic, plausible, ingestible."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import stat
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from pipelines.dev.simulators import RECEIPT_COLUMNS, GatewaySimulator, write_receipts
from pipelines.reminders.channels import (
    LetterBatchChannel,
    OutgoingReminder,
    SmsHttpChannel,
    SmtpChannel,
)

DAY = dt.date(2026, 3, 2)
STATUSES = {"delivered", "failed", "expired", "acknowledged"}


@dataclass(frozen=True)
class Accepted:
    reminder_id: str
    channel: str
    to: str
    provider_ref: str


def accepted(n: int, channel: str, owners: int) -> list[Accepted]:
    """``n`` reminders spread over ``owners`` addresses (several reminders per owner)."""
    out = []
    for i in range(n):
        owner = i % owners
        to = f"owner{owner}@example.cn" if channel == "email" else f"+86139{owner:08d}"
        out.append(Accepted(f"{channel}-{i:05d}", channel, to, f"ref-{channel}-{i}"))
    return out


def read(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_receipts_are_byte_identical_for_the_same_input_in_any_order(tmp_path: Path) -> None:
    messages = accepted(300, "email", 100) + accepted(300, "sms", 100)
    shuffled = messages[:]
    random.Random(1).shuffle(shuffled)
    a = write_receipts(messages, None, DAY, tmp_path / "a", seed=7)
    b = write_receipts(shuffled, None, DAY, tmp_path / "b", seed=7)
    c = write_receipts(messages, None, DAY, tmp_path / "c", seed=8)
    assert a is not None and b is not None and c is not None
    assert a.name == "receipts_2026-03-02.csv"
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # the seed matters
    again = write_receipts(messages, None, DAY, tmp_path / "a", seed=7)
    assert again == a and again.read_bytes() == b.read_bytes()


def test_rates_are_plausible_over_2000_reminders_and_timestamps_lie_within_the_day(tmp_path: Path) -> None:
    messages = accepted(2000, "email", 400) + accepted(2000, "sms", 400)
    path = write_receipts(messages, None, DAY, tmp_path, seed=11)
    assert path is not None
    rows = read(path)
    assert tuple(rows[0]) == RECEIPT_COLUMNS
    final: dict[str, Counter[str]] = {"email": Counter(), "sms": Counter()}
    delivered_at: dict[str, str] = {}
    for row in rows:
        assert row["status"] in STATUSES
        at = dt.datetime.strptime(row["at"], "%Y-%m-%dT%H:%M:%SZ")
        assert at.date() == DAY
        if row["status"] != "acknowledged":
            final[row["channel"]][row["status"]] += 1
            delivered_at[row["reminder_id"]] = row["at"]
        else:
            final[row["channel"]]["acknowledged"] += 1
            assert row["at"] > delivered_at[row["reminder_id"]]  # acknowledged after delivery
    email, sms = final["email"], final["sms"]
    assert email["delivered"] + email["failed"] + email["expired"] == 2000  # one outcome each
    assert sms["delivered"] + sms["failed"] + sms["expired"] == 2000
    assert 0.81 <= email["delivered"] / 2000 <= 0.89
    assert 0.89 <= sms["delivered"] / 2000 <= 0.95
    assert 0.06 <= email["acknowledged"] / email["delivered"] <= 0.14
    assert sms["acknowledged"] == 0
    assert {r["provider_ref"] for r in rows if r["reminder_id"] == "email-00042"} == {"ref-email-42"}


def test_some_owners_are_never_reachable_on_a_channel(tmp_path: Path) -> None:
    messages = accepted(2000, "email", 200)  # ten reminders per address
    path = write_receipts(messages, None, DAY, tmp_path, seed=3)
    assert path is not None
    outcomes: dict[str, set[str]] = defaultdict(set)
    owner_of = {m.reminder_id: m.to for m in messages}
    for row in read(path):
        if row["status"] != "acknowledged":
            outcomes[owner_of[row["reminder_id"]]].add(row["status"])
    never = [owner for owner, statuses in outcomes.items() if statuses == {"failed"}]
    # ~5% of addresses; a reachable one failing ten times in a row is ~1e-10 likely
    assert 3 <= len(never) <= 25


def test_letters_are_answered_once_two_to_five_days_after_their_batch(tmp_path: Path) -> None:
    letters_dir = tmp_path / "letters"
    sent: dict[str, dt.date] = {}
    for back in range(3):
        batch_day = DAY - dt.timedelta(days=back)
        reminders = [
            OutgoingReminder(
                f"let-{back}-{i:04d}", "letter", f"SUB{i:06d}", "zh-CN", "提醒函", "正文\n第二行", batch_day
            )
            for i in range(700)
        ]
        LetterBatchChannel(letters_dir, batch_day).send_batch(reminders)
        sent.update({r.reminder_id: batch_day for r in reminders})
    answered: dict[str, list[tuple[dt.date, str]]] = defaultdict(list)
    for offset in range(-1, 9):
        day = DAY + dt.timedelta(days=offset)
        path = write_receipts([], letters_dir, day, tmp_path / "inbox" / str(day), seed=5)
        for row in read(path) if path else []:
            assert row["channel"] == "letter" and row["at"].startswith(day.isoformat())
            assert row["provider_ref"].startswith("PH")
            answered[row["reminder_id"]].append((day, row["status"]))
    assert set(answered) == set(sent)
    assert all(len(v) == 1 for v in answered.values())
    delays = Counter((v[0][0] - sent[k]).days for k, v in answered.items())
    assert set(delays) == {2, 3, 4, 5}
    delivered = sum(v[0][1] == "delivered" for v in answered.values())
    assert 0.95 <= delivered / len(sent) <= 0.99
    assert write_receipts([], letters_dir, DAY - dt.timedelta(days=1), tmp_path / "none", seed=5) is None


def test_receipts_load_as_utc_timestamps_in_duckdb(tmp_path: Path) -> None:
    path = write_receipts(accepted(50, "sms", 50), None, DAY, tmp_path, seed=1)
    assert path is not None
    con = duckdb.connect()
    n, lo, hi = con.execute(
        'SELECT count(*), min("at"::TIMESTAMP), max("at"::TIMESTAMP) FROM read_csv(?, all_varchar = true)',
        [str(path)],
    ).fetchone()  # type: ignore[misc]
    assert n >= 50 and lo.date() == DAY and hi.date() == DAY


def test_simulator_records_arrival_order_and_feeds_the_receipts(tmp_path: Path) -> None:
    email = [
        OutgoingReminder(f"e{i}", "email", f"u{i}@example.cn", "zh-CN", "主题", "正文", DAY) for i in range(3)
    ]
    sms = [OutgoingReminder(f"s{i}", "sms", f"+86139{i:08d}", "en", "", "text", DAY) for i in range(3)]
    with GatewaySimulator() as sim:
        SmtpChannel(sim.smtp_settings(), local_hostname="client.test", connections=1).send_batch(email)
        SmsHttpChannel(sim.sms_settings(), concurrency=1).send_batch(sms)
        got = sim.drain()
        assert sim.received == ()
    assert [m.order for m in got] == list(range(6))
    assert [(m.channel, m.reminder_id) for m in got] == [("email", f"e{i}") for i in range(3)] + [
        ("sms", f"s{i}") for i in range(3)
    ]
    assert got[0].subject == "主题" and got[0].text.strip() == "正文" and got[3].text == "text"
    path = write_receipts(got, None, DAY, tmp_path, seed=2)
    assert path is not None
    assert {r["reminder_id"] for r in read(path)} == {f"e{i}" for i in range(3)} | {f"s{i}" for i in range(3)}
    with pytest.raises(RuntimeError, match="not running"):
        sim.smtp_settings()


def test_nothing_to_report_writes_nothing(tmp_path: Path) -> None:
    assert write_receipts([], None, DAY, tmp_path, seed=1) is None
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="letters"):
        write_receipts([Accepted("x", "letter", "SUB1", "r")], None, DAY, tmp_path, seed=1)


def test_receipts_already_written_are_never_overwritten_with_less(tmp_path: Path) -> None:
    letters_dir = tmp_path / "letters"
    letters = [OutgoingReminder(f"L{i}", "letter", f"S{i}", "en", "s", "t", DAY) for i in range(40)]
    LetterBatchChannel(letters_dir, DAY - dt.timedelta(days=2)).send_batch(letters)
    messages = accepted(200, "email", 50) + accepted(200, "sms", 50)
    full = write_receipts(messages, letters_dir, DAY, tmp_path / "full", seed=7)
    path = write_receipts(messages[:150], letters_dir, DAY, tmp_path / "inbox", seed=7)
    assert full is not None and path is not None
    body, written = path.read_bytes(), path.stat().st_mtime_ns
    # A replay sends nothing: the letters alone once replaced the file (535 lines became 81).
    assert write_receipts([], letters_dir, DAY, tmp_path / "inbox", seed=7) == path
    assert write_receipts(messages[:150], letters_dir, DAY, tmp_path / "inbox", seed=7) == path
    assert path.read_bytes() == body and path.stat().st_mtime_ns == written  # not even rewritten
    # What was not in it yet is added, in the order one write of everything has.
    write_receipts(messages[150:], letters_dir, DAY, tmp_path / "inbox", seed=7)
    assert path.read_bytes() == full.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Rows already there win over a later run's (another seed): receipts once sent stay as sent.
    write_receipts(messages, letters_dir, DAY, tmp_path / "inbox", seed=8)
    assert {tuple(r.values()) for r in read(full)} <= {tuple(r.values()) for r in read(path)}
