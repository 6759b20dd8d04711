"""The send journal: an acceptance is on disk before the next message goes out, and a send step
killed inside a batch is finished by the next run without a second send."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lifecycle_testkit import World, day, open_db, seeded

import pipelines.reminders as rm
from pipelines.dev.simulators import GatewaySimulator
from pipelines.errors import DataContractError, TransientError
from pipelines.reminders.channels import (
    AcceptedHook,
    BatchOutcome,
    LetterBatchChannel,
    OutgoingReminder,
    SendResult,
    SmsHttpChannel,
    SmtpChannel,
)
from pipelines.reminders.journal import (
    SendJournal,
    _json_line,
    journal_line,
    read_send_journal,
    send_journal_path,
)
from pipelines.reminders.send import _stop_if_unjournaled

AT = dt.datetime(2026, 3, 2, 8, 30, tzinfo=dt.UTC)
NUMBERS = [f"+86138{i:08d}" for i in range(7)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    con = open_db(tmp_path / "state.duckdb")
    yield World(con)
    con.close()


class Killed(BaseException):
    """The process dying: nothing after it runs, no except clause of the pipeline catches it."""


class DiesAfter:
    """Passes messages to ``inner`` and kills the run once ``k`` of them were accepted."""

    def __init__(self, inner: rm.send.Channel, k: int) -> None:
        self.name = inner.name
        self._inner, self._k = inner, k

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome:
        def heard(result: SendResult) -> None:
            assert on_accepted is not None
            on_accepted(result)
            self._k -= 1
            if self._k == 0:
                raise Killed

        return self._inner.send_batch(reminders, heard)


def result(rid: str, channel: str = "sms") -> SendResult:
    return SendResult(rid, channel, f"ref-{rid}", AT)  # type: ignore[arg-type]


def cancelled_world(world: World) -> World:
    seeded(world, *NUMBERS)
    for n in NUMBERS:
        world.event(day(1), n, "cancel")
    world.run(day(1), send=False)
    return world


def test_a_journal_keeps_each_acceptance_as_one_line_0600_in_0700(tmp_path: Path) -> None:
    path = send_journal_path(tmp_path / "journal", day(1))
    with SendJournal(path) as journal:
        journal.record(result("R1"))
        journal.record(result("R2", "email"))
        journal.sync()
    assert path.name == f"send_{day(1)}.jsonl" and path.read_bytes().count(b"\n") == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    got = read_send_journal(path, day(1))
    assert got == {"R1": result("R1"), "R2": result("R2", "email")}
    assert read_send_journal(tmp_path / "none.jsonl", day(1)) == {}


def test_a_cut_last_line_is_cut_off_and_the_next_append_starts_clean(tmp_path: Path) -> None:
    path = send_journal_path(tmp_path, day(1))
    with SendJournal(path) as journal:
        journal.record(result("R1"))
    with path.open("ab") as fh:
        fh.write(b'{"reminder_id":"R2","chan')  # power lost inside the write
    assert list(read_send_journal(path, day(1))) == ["R1"]
    with SendJournal(path) as journal:
        journal.record(result("R3"))
    assert list(read_send_journal(path, day(1))) == ["R1", "R3"]


def test_an_edited_journal_is_refused_naming_the_line_and_the_next_command(tmp_path: Path) -> None:
    path = send_journal_path(tmp_path, day(1))
    with SendJournal(path) as journal:
        journal.record(result("R1"))
    with path.open("ab") as fh:
        fh.write(
            b'{"reminder_id":"R2","channel":"fax","provider_ref":"x","accepted_at":"2026-03-02T08:30:00Z"}\n'
        )
    with pytest.raises(DataContractError, match=r"line 2: .*recycle run --date 2026-03-02"):
        read_send_journal(path, day(1))


def test_a_journal_that_cannot_be_written_stops_the_night_after_its_batch(tmp_path: Path) -> None:
    journal = SendJournal(send_journal_path(tmp_path, day(1)))
    os.close(journal._fd)
    journal._fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as on a full disk
    journal.record(result("R1"))  # never raises inside a channel's loop
    journal.close()
    assert journal.error is not None
    with pytest.raises(TransientError, match=r"send journal .*recycle run --date"):
        _stop_if_unjournaled(journal, day(1))


def test_a_send_killed_inside_a_batch_is_finished_without_a_second_send(world: World, tmp_path: Path) -> None:
    cancelled_world(world)
    journal_dir = tmp_path / "journal"
    sms = world.channels["sms"]
    with pytest.raises(Killed):
        rm.send_reminders(
            world.con, world.settings, day(1), {"sms": DiesAfter(sms, 3)}, journal_dir=journal_dir
        )
    assert world.one("SELECT count(*) FROM outbox WHERE status = 'sent'") == 0  # the batch never committed
    again = rm.send_reminders(world.con, world.settings, day(1), world.channels, journal_dir=journal_dir)
    assert (again.from_journal, again.sent, again.attempted) == (3, 4, 4)
    assert max(Counter(r.reminder_id for r in sms.sent).values()) == 1 and len(sms.sent) == 7
    assert (
        rm.send_reminders(
            world.con, world.settings, day(1), world.channels, journal_dir=journal_dir
        ).attempted
        == 0
    )
    # The state equals an unkilled night's (the ledger queue's order aside).
    ref = World(open_db(tmp_path / "ref.duckdb"))
    cancelled_world(ref)
    rm.send_reminders(ref.con, ref.settings, day(1), ref.channels, journal_dir=tmp_path / "ref-journal")
    for sql in (
        "SELECT * FROM outbox ORDER BY ALL",
        "SELECT * FROM reminders ORDER BY ALL",
        "SELECT * EXCLUDE (seq) FROM ledger_events ORDER BY ALL",
    ):
        assert world.rows(sql) == ref.rows(sql)
    ref.con.close()


def test_channels_report_an_acceptance_before_their_next_message(tmp_path: Path) -> None:
    def reminders(channel: str, to: str) -> list[OutgoingReminder]:
        return [
            OutgoingReminder(f"R{channel}{i}", channel, to.format(i), "en", "s", "t", day(1))  # type: ignore[arg-type]
            for i in range(4)
        ]

    with GatewaySimulator() as sim:
        heard: list[tuple[str, int]] = []  # (reminder id, messages the gateways had by then)

        def hook(r: SendResult) -> None:
            heard.append((r.reminder_id, len(sim.received)))

        SmtpChannel(sim.smtp_settings(), local_hostname="client.test", connections=1).send_batch(
            reminders("email", "o{}@example.cn"), hook
        )
        SmsHttpChannel(sim.sms_settings(), concurrency=1).send_batch(
            reminders("sms", "+8613800000{:03d}"), hook
        )
    assert heard == [
        (f"R{c}{i}", n) for n, (c, i) in enumerate(((c, i) for c in ("email", "sms") for i in range(4)), 1)
    ]
    letters: list[str] = []
    LetterBatchChannel(tmp_path, day(1)).send_batch(
        reminders("letter", "S{}"), lambda r: letters.append(r.reminder_id)
    )
    assert letters == [f"Rletter{i}" for i in range(4)]


@given(
    rid=st.from_regex(r"[A-Za-z0-9_.:@#+=/-]{1,30}", fullmatch=True) | st.text(min_size=1, max_size=30),
    ref=st.from_regex(r"[A-Za-z0-9_.:@#+=/-]{1,30}", fullmatch=True) | st.text(min_size=1, max_size=30),
    channel=st.sampled_from(["email", "sms", "letter"]),
    at=st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=8))])),
)
def test_the_fast_journal_line_is_the_json_line(rid: str, ref: str, channel: str, at: dt.datetime) -> None:
    result = SendResult(rid, channel, ref, at)  # type: ignore[arg-type]
    assert journal_line(result) == _json_line(result)


class Peeks:
    """Passes batches to ``inner`` and notes, before each, how many outbox rows are recorded sent."""

    def __init__(self, inner: rm.send.Channel, world: World) -> None:
        self.name = inner.name
        self._inner, self._world = inner, world
        self.sent_before: list[int] = []

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome:
        sql = "SELECT count(*) FROM outbox WHERE status = 'sent'"
        self.sent_before.append(self._world.con.execute(sql).fetchall()[0][0])
        return (
            self._inner.send_batch(reminders, on_accepted)
            if on_accepted
            else self._inner.send_batch(reminders)
        )


@pytest.mark.parametrize("journaled", [True, False])
def test_outcomes_are_merged_once_per_run_with_a_journal_and_per_batch_without(
    world: World, tmp_path: Path, journaled: bool
) -> None:
    cancelled_world(world)
    peek = Peeks(world.channels["sms"], world)
    report = rm.send_reminders(
        world.con, world.settings, day(1), {"sms": peek}, batch_size=1,
        journal_dir=tmp_path / "journal" if journaled else None,
    )  # fmt: skip
    assert report.batches == report.sent == len(peek.sent_before) > 2
    # With the journal the outbox is touched once, after the last batch (O(batch) bookkeeping);
    # without one every batch is in the state file before the next goes out.
    assert peek.sent_before == ([0] * report.batches if journaled else list(range(report.batches)))
    assert world.one("SELECT count(*) FROM outbox WHERE status = 'sent'") == report.sent
    assert world.one("SELECT count(*) FROM ledger_events WHERE type = 'reminder_sent'") == report.sent
