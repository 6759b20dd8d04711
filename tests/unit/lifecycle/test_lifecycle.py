"""The lifecycle state machine: every transition, every forbidden one, idempotent reruns.

State is built the way the nightly run builds it: rows are inserted into the ingest tables
(``subscriber_rows``, ``lifecycle_events``, ``reissue_events``, ``receipt_rows``) and the
steps run day by day, each in its own transaction. :class:`World` is the harness; the other
tests import it from ``tests/unit/lifecycle_testkit.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifecycle_testkit import (  # noqa: F401
    D0,
    MY_TABLES,
    OWN_PHONE,
    SETTINGS,
    START,
    A,
    B,
    C,
    MemoryChannel,
    World,
    day,
    memory_channels,
    open_db,
    seeded,
)

import pipelines.lifecycle as lc
import pipelines.reminders as rm
from pipelines.lifecycle import sql as lc_sql
from pipelines.numbers import mask


def test_snapshot_seeds_active_tenures(world: World) -> None:
    world.subscriber(day(0), A, email="li@example.cn")
    world.subscriber(day(0), A, email="li@example.cn")  # the same row twice: one tenure
    report = world.run(day(0))["events"]
    assert report.seeded == 1
    st_a = world.state(A)
    assert st_a["state"] == "active" and st_a["since"] == START
    assert st_a["tenure_id"] == lc.tenure_id(A, START)
    assert world.tenure(st_a["tenure_id"])["opened_by"] == "snapshot"
    assert world.one("SELECT count(*) FROM state_history WHERE msisdn = ?", [A]) == 1
    assert world.quarantine() == []


def test_snapshot_contradicting_record_is_quarantined(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    world.subscriber(day(2), A, start=dt.date(2025, 1, 1))
    world.run(day(2))
    (q,) = world.quarantine()
    assert q["reason"] == "tenure_mismatch" and q["kind"] == "subscribers"
    assert world.state(A)["state"] == "frozen"


# =========================================================================== transitions


def test_cancel_freezes_for_the_region_policy_and_closes_the_tenure(world: World) -> None:
    seeded(world, A, B)
    world.subscriber(day(0), C, region="BJ")
    world.run(day(0))
    world.event(day(1), A, "cancel", eff=day(1))
    world.event(day(1), C, "cancel", eff=day(1), region="BJ")
    report = world.run(day(1))["events"]
    assert report.applied == 2 and report.quarantined == 0
    s = world.state(A)
    assert (s["state"], s["frozen_on"], s["freeze_ends"], s["disconnected_on"], s["cause"]) == (
        "frozen",
        day(1),
        day(11),
        day(1),
        "cancel",
    )
    assert world.state(C)["freeze_ends"] == day(21)  # BJ: 20-day freeze
    t = world.tenure(s["tenure_id"])
    assert (t["tenure_end"], t["end_reason"]) == (day(1), "cancel")
    closed = world.ledger("tenure_closed")
    assert {e["msisdn"] for e in closed} == {A, C}
    assert json.loads(closed[0]["fields"])["end_reason"] == "cancel"
    assert world.state(B)["state"] == "active"


def test_first_seen_cancel_opens_its_tenure_from_the_row(world: World) -> None:
    world.event(day(1), A, "cancel", start=dt.date(2019, 2, 3), email="x@example.com")
    world.event(day(1), B, "cancel", start=None)
    world.run(day(1))
    s = world.state(A)
    assert s["state"] == "frozen" and s["tenure_id"] == lc.tenure_id(A, dt.date(2019, 2, 3))
    t = world.tenure(s["tenure_id"])
    assert (t["opened_by"], t["tenure_end"], t["contact_email"]) == ("cancel", day(1), "x@example.com")
    (q,) = world.quarantine()
    assert q["reason"] == "unknown_number"
    assert world.one("SELECT count(*) FROM number_state WHERE msisdn = ?", [B]) == 0


def test_suspension_becomes_a_disconnection_after_suspend_days(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "suspend")
    world.run(day(1))
    s = world.state(A)
    assert (s["state"], s["suspended_on"], s["disconnected_on"], s["freeze_ends"]) == (
        "suspended",
        day(1),
        day(1),
        day(16),
    )
    assert world.tenure(s["tenure_id"])["tenure_end"] is None  # may still be restored
    # The ledger logs the disconnection on the suspension day, so the reminders sent during the
    # suspension share its public tenure ref (a restore would log ``restored`` after it).
    (closed,) = world.ledger("tenure_closed")
    assert closed["tenure_end"] == day(1) and closed["on_date"] == day(1)
    world.run_days(2, 5)
    assert world.state(A)["state"] == "suspended"
    report = world.run(day(6))["advance"]
    assert report.suspensions_expired == 1
    s = world.state(A)
    assert (s["state"], s["frozen_on"], s["since"], s["freeze_ends"]) == ("frozen", day(6), day(6), day(16))
    t = world.tenure(s["tenure_id"])
    assert (t["tenure_end"], t["end_reason"]) == (day(1), "suspend")  # the suspension date
    (ev,) = world.ledger("tenure_closed")
    assert ev["tenure_end"] == day(1)


def test_restore_returns_the_same_tenure_and_cancels_unsent_reminders(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "suspend")
    world.run(day(1))
    tid = world.state(A)["tenure_id"]
    assert len(world.reminders(A, "scheduled")) == 2  # day 4 and the final one
    world.event(day(2), A, "restore")
    world.event(day(2), B, "restore")
    world.run(day(2))
    for n in (A, B):
        s = world.state(n)
        assert s["state"] == "active" and s["freeze_ends"] is None
        assert world.reminders(n, "scheduled") == []
    assert world.state(A)["tenure_id"] == tid
    t = world.tenure(tid)
    assert t["tenure_end"] is None and t["end_reason"] is None
    assert {r["status"] for r in world.reminders(A)} == {"sent", "cancelled"}
    assert {e["msisdn"] for e in world.ledger("restored")} == {A, B}
    for n in (5, 9, 12, 20):
        world.run(day(n))
    assert world.state(A)["state"] == "active"
    assert world.one("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0


@pytest.mark.parametrize(
    ("ref", "start"), [("SOMEONE_ELSE", START), ("S1", dt.date(2011, 1, 1)), ("S1", None)]
)
def test_restore_that_contradicts_the_tenure_is_tenure_mismatch(
    world: World, ref: str, start: dt.date | None
) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    world.event(day(2), A, "restore", ref=ref, start=start)
    world.run(day(2))
    (q,) = world.quarantine()
    assert q["reason"] == "tenure_mismatch"
    assert world.state(A)["state"] == "frozen"


def test_restore_once_the_freeze_has_ended(world: World) -> None:
    seeded(world, A, B, C)
    for n in (A, B, C):
        world.event(day(1), n, "cancel")
    world.run(day(1))
    world.run(day(11))  # freeze over, nothing effective: all three held
    assert world.state(A)["state"] == "held"
    world.event(day(12), A, "restore")  # held
    world.event(day(12), B, "restore", eff=day(11))  # frozen on the day the freeze ends
    world.run(day(12))
    reasons = [q["reason"] for q in world.quarantine()]
    assert reasons == ["restore_after_freeze", "restore_after_freeze"]
    world.run(day(15))  # max_hold_days over: released with an exception
    assert world.state(C)["state"] == "available"
    world.event(day(16), C, "restore")
    world.run(day(16))
    assert [q["reason"] for q in world.quarantine()][-1] == "restore_after_freeze"
    assert world.state(C)["state"] == "available"


@pytest.mark.parametrize(
    ("setup", "event", "expected_state"),
    [
        (["cancel"], "cancel", "frozen"),  # cancel of a frozen number
        (["suspend"], "suspend", "suspended"),
        ([], "restore", "active"),  # restore of an active number
        (["cancel"], "port_out", "frozen"),
        ([], "port_in", "active"),  # port_in over an open tenure
        (["suspend"], "port_in", "suspended"),
        (["port_out"], "cancel", "ported_out"),
        (["port_out"], "restore", "ported_out"),
    ],
)
def test_forbidden_transitions_are_quarantined(
    world: World, setup: list[str], event: str, expected_state: str
) -> None:
    seeded(world, A)
    for ev in setup:
        world.event(day(1), A, ev)
    world.run(day(1))
    world.event(day(2), A, event)
    report = world.run(day(2))["events"]
    assert report.reasons == {"illegal_transition": 1}
    assert world.state(A)["state"] == expected_state
    (q,) = world.quarantine()
    assert (q["stage"], q["kind"], q["logical_date"], q["line_no"]) == ("lifecycle", "lifecycle", day(2), 2)
    assert q["file_name"] == f"lifecycle_{day(2).isoformat()}.csv"


def test_event_dated_before_the_last_transition_is_out_of_order(world: World) -> None:
    seeded(world, A)
    world.event(day(5), A, "cancel", eff=day(5))
    world.run(day(5))
    world.event(day(6), A, "restore", eff=day(4))
    world.run(day(6))
    (q,) = world.quarantine()
    assert q["reason"] == "out_of_order"
    assert world.state(A)["state"] == "frozen"


def test_quarantine_detail_masks_the_number_and_says_what_to_do(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "restore")
    world.run(day(1))
    (q,) = world.quarantine()
    assert A not in q["detail"] and A[3:] not in q["detail"]
    assert mask(A) in q["detail"]
    assert "export" in q["detail"]


def test_port_out_closes_the_tenure_and_is_never_recycled(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "port_out")
    world.event(day(1), B, "suspend")
    world.run(day(1))
    assert len(world.reminders(B)) == 3
    world.event(day(2), B, "port_out")
    world.run(day(2))
    for n in (A, B):
        s = world.state(n)
        assert s["state"] == "ported_out"
        t = world.tenure(s["tenure_id"])
        assert t["end_reason"] == "port_out"
    assert world.reminders(A) == []
    assert {r["status"] for r in world.reminders(B)} == {"sent", "cancelled"}
    world.run(day(40))
    assert world.one("SELECT count(*) FROM releases") == 0
    assert world.state(A)["state"] == world.state(B)["state"] == "ported_out"
    assert not [e for e in world.ledger() if e["type"] == "released"]
    # only B's 双停 suspension was logged as a disconnection (it began before the port); the
    # port itself never enters the recycling path
    assert [e["msisdn"] for e in world.ledger() if e["type"] == "tenure_closed"] == [B]


def test_port_in_opens_a_new_active_tenure(world: World) -> None:
    world.event(day(1), A, "port_in", start=None, ref="P1")
    seeded(world, B)
    world.event(day(1), B, "port_out")
    world.run(day(1))
    world.event(day(3), B, "port_in", start=None, ref="P2")
    world.run(day(3))
    a, b = world.state(A), world.state(B)
    assert (a["state"], a["tenure_id"]) == ("active", lc.tenure_id(A, day(1)))
    assert (b["state"], b["tenure_id"]) == ("active", lc.tenure_id(B, day(3)))
    assert world.tenure(b["tenure_id"])["opened_by"] == "port_in"
    assert world.one("SELECT count(*) FROM tenures WHERE msisdn = ?", [B]) == 2


def test_several_events_of_one_number_in_one_day_apply_in_rounds(world: World) -> None:
    seeded(world, A, B, C)
    # A: cancel then restore; B: suspend, cancel (during the suspension); C: restore first
    # (illegal), then cancel: each in effective-date order, whatever the file order.
    world.event(day(3), A, "restore", eff=day(3))
    world.event(day(3), A, "cancel", eff=day(2))
    world.event(day(3), B, "suspend", eff=day(1))
    world.event(day(3), B, "cancel", eff=day(2))
    world.event(day(3), C, "restore", eff=day(1))
    world.event(day(3), C, "cancel", eff=day(2))
    report = world.run(day(3))["events"]
    assert report.rounds == 2 and report.applied == 5 and report.reasons == {"illegal_transition": 1}
    assert world.state(A)["state"] == "active"
    b = world.state(B)
    assert (b["state"], b["disconnected_on"], b["frozen_on"], b["freeze_ends"]) == (
        "frozen",
        day(1),
        day(2),
        day(12),
    )
    assert world.tenure(b["tenure_id"])["tenure_end"] == day(1)  # the suspension date
    assert world.state(C)["state"] == "frozen"
    hist = world.rows(
        "SELECT from_state, to_state FROM state_history WHERE msisdn = ? ORDER BY on_date, line_no", [A]
    )
    assert [(h["from_state"], h["to_state"]) for h in hist] == [
        (None, "active"),
        ("active", "frozen"),
        ("frozen", "active"),
    ]


def test_a_tenure_closed_twice_in_one_day_is_queued_once_from_its_first_event(world: World) -> None:
    seeded(world, A)
    # Suspended and cancelled the same day: both events close the tenure on the suspension
    # date (one ledger key); the entry is the first event's, on every run of the day.
    world.event(day(1), A, "suspend")
    world.event(day(1), A, "cancel")
    report = world.run(day(1))["events"]
    assert report.rounds == 2 and report.applied == 2
    (closed,) = world.ledger("tenure_closed")
    assert closed["tenure_end"] == day(1)
    assert json.loads(closed["fields"])["end_reason"] == "suspend"
    assert world.state(A)["state"] == "frozen"


def test_cancel_during_a_suspension_moves_the_final_reminder(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "suspend")
    world.run(day(1))
    final = next(r for r in world.reminders(A) if r["slot"] == "offset:-3")
    assert final["due_on"] == day(13)  # 16 - 3: projected end of the suspension's freeze
    world.event(day(2), A, "cancel")
    world.run(day(2))
    final = next(r for r in world.reminders(A) if r["slot"] == "offset:-3")
    assert world.state(A)["freeze_ends"] == day(12)
    assert final["due_on"] == day(9)


# =========================================================================== reissues


def test_reissue_of_an_available_number_is_clean(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    world.deliver(day(2), A)
    world.run(day(2))
    world.run(day(5))  # day-4 reminder sent
    world.deliver(day(6), A)
    world.run(day(6))
    world.run(day(11))
    assert world.state(A)["state"] == "available"
    world.reissue(day(13), A, ref="NEW")
    report = world.run(day(13))["events"]
    assert (report.reissues, report.violations) == (1, 0)
    (r,) = world.rows("SELECT * FROM reissues")
    assert (r["violation"], r["released_on"], r["disconnected_on"]) == (False, day(11), day(1))
    s = world.state(A)
    assert (s["state"], s["tenure_id"]) == ("active", lc.tenure_id(A, day(13)))
    assert world.tenure(s["tenure_id"])["subscriber_ref"] == "NEW"
    assert [e["type"] for e in world.ledger() if e["type"].startswith("reissue")] == ["reissued"]


def test_reissue_of_a_number_that_is_not_available_is_recorded_as_a_violation(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    world.reissue(day(3), A, ref="NEW")  # frozen: still the prior owner's
    world.reissue(day(3), B, ref="NEW2")  # active: the prior tenure is closed
    world.reissue(day(3), C, ref="NEW3")  # never seen: no prior owner on record
    report = world.run(day(3))["events"]
    assert (report.reissues, report.violations) == (3, 3)
    for n in (A, B, C):
        assert world.state(n)["state"] == "active"
    prior_b = world.tenure(lc.tenure_id(B, START))
    assert (prior_b["tenure_end"], prior_b["end_reason"]) == (day(3), "reissue")
    assert world.reminders(A, "scheduled") == []  # the prior owner's pending reminders stop
    viol = world.ledger("reissue_violation")
    assert {e["msisdn"] for e in viol} == {A, B, C}
    assert (
        world.rows("SELECT prior_tenure_id FROM reissues WHERE msisdn = ?", [C])[0]["prior_tenure_id"] is None
    )
    world.run(day(30))
    assert world.one("SELECT count(*) FROM releases") == 0


def test_reissue_contradicting_the_tenure_on_record_is_quarantined(world: World) -> None:
    seeded(world, A, B)
    world.event(day(5), A, "cancel")
    world.run(day(5))
    world.reissue(day(6), A, on=day(4))  # before the prior tenure ended
    world.reissue(day(6), B, ref="S1")  # to the owner who holds it
    world.run(day(6))
    assert [q["reason"] for q in world.quarantine()] == ["tenure_mismatch", "tenure_mismatch"]
    assert [q["kind"] for q in world.quarantine()] == ["reissue", "reissue"]


# =========================================================================== properties


def test_every_step_is_idempotent_for_its_day(world: World) -> None:
    seeded(world, A, B, C)
    world.subscriber(day(0), "+8613800000004", email="z@example.org", phone=None)
    world.run(day(0))
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "suspend")
    world.event(day(1), "+8613800000004", "cancel", ref="S1")
    world.event(day(1), C, "restore")  # illegal
    world.channels["email"].permanent.add("z@example.org")
    script = {
        2: lambda: world.deliver(day(2), A),
        5: lambda: None,
        6: lambda: world.deliver(day(6), A),
        11: lambda: world.reissue(day(11), B),
        14: lambda: None,
    }
    for n in (1, 2, 5, 6, 11, 14):
        if n in script:
            script[n]()
        world.run(day(n))
        first = world.dump()
        world.run(day(n))  # the whole night again
        assert world.dump() == first, f"rerun of day {n} changed the state"
        for fn in (rm.apply_receipts, lc.advance_time, lc.apply_events, rm.schedule_reminders):
            world.step(fn, day(n))
            assert world.dump() == first, f"rerun of {fn.__name__} on day {n} changed the state"
    # A: two effective reminders; ...04: nothing effective (e-mail bounced, letters unanswered).
    assert world.con.execute("SELECT msisdn, exception FROM releases ORDER BY msisdn").fetchall() == [
        (A, False),
        ("+8613800000004", True),
    ]
    assert (
        world.one("SELECT count(*) FROM reminders WHERE msisdn = '+8613800000004' AND channel = 'letter'")
        >= 1
    )


def test_ids_are_unique_and_ledger_is_gapless(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "suspend")
    world.run(day(1))
    world.deliver(day(2), A)
    world.run(day(2))
    world.run(day(11))
    for table, key in [
        ("tenures", "tenure_id"),
        ("number_state", "msisdn"),
        ("reminders", "reminder_id"),
        ("outbox", "reminder_id"),
        ("ledger_events", "idempotency_key"),
    ]:
        assert world.one(f"SELECT count(*) - count(DISTINCT {key}) FROM {table}") == 0, table
    seqs = [e["seq"] for e in world.ledger()]
    assert seqs == list(range(1, len(seqs) + 1))
    days = [e["logical_date"] for e in world.ledger()]
    assert days == sorted(days)


def _scenario(world: World, base: dt.date) -> list[tuple[Any, ...]]:
    """Run a small life from ``base``; return the state with every date made relative."""

    def b(n: int) -> dt.date:
        return base + dt.timedelta(days=n)

    world.subscriber(b(0), A, start=base - dt.timedelta(days=400))
    world.subscriber(b(0), B, start=base - dt.timedelta(days=300), phone=None, email="b@example.cn")
    world.run(b(0))
    world.event(b(1), A, "cancel", start=base - dt.timedelta(days=400))
    world.event(b(1), B, "suspend", start=base - dt.timedelta(days=300))
    world.run(b(1))
    world.deliver(b(2), A)
    world.run(b(2))
    for n in (6, 11, 14, 16, 19):  # B's suspension ends, freezes end, holds run out
        world.run(b(n))

    def rel(v: Any) -> Any:
        return (v - base).days if isinstance(v, dt.date) else v

    out = []
    for sql in (
        "SELECT msisdn, state, since, disconnected_on, freeze_ends, hold_started, released_on "
        "FROM number_state",
        "SELECT msisdn, slot, channel, status, due_on, sent_on, effective_on FROM reminders",
        "SELECT msisdn, from_state, to_state, on_date, logical_date, cause FROM state_history",
        "SELECT msisdn, released_on, effective_reminders, exception FROM releases",
        "SELECT type, msisdn, on_date, logical_date FROM ledger_events",
    ):
        out += sorted((tuple(rel(v) for v in r) for r in world.con.execute(sql).fetchall()), key=repr)
    return out


def test_results_depend_only_on_the_logical_date(tmp_path: Path) -> None:
    runs = []
    for i, base in enumerate((dt.date(2003, 1, 6), dt.date(2094, 8, 2))):
        con = open_db(tmp_path / f"s{i}.duckdb")
        runs.append(_scenario(World(con), base))
        con.close()
    assert runs[0] == runs[1]
    assert any(r[:2] == ("+8613800000002", "available") for r in runs[0])
    for module in (lc, rm):
        source = Path(module.__file__ or "").read_text()
        for clock in (
            r"date\.today",
            r"datetime\.now",
            r"\bnow\(\)",
            r"current_date",
            r"current_timestamp",
            r"time\.time\(",
            r"get_current",
        ):
            assert not re.search(clock, source, re.IGNORECASE), f"{module.__name__} reads the clock: {clock}"


_CN_MOBILE = st.from_regex(r"\+861[3-9][0-9]{9}", fullmatch=True)
_OTHERS = st.sampled_from(
    [
        "+14155552671",
        "+442079460958",
        "+390612345678",
        "+85291234567",
        "+6591234567",
        "+4930123456",
        "+819012345678",
        "+12423570000",
    ]
)


_MASK_DB: list[duckdb.DuckDBPyConnection] = []


@settings(max_examples=60, deadline=None)
@given(numbers=st.lists(_CN_MOBILE | _OTHERS, min_size=1, max_size=30))
def test_sql_mask_is_pipelines_numbers_mask(numbers: list[str]) -> None:
    if not _MASK_DB:
        _MASK_DB.append(duckdb.connect())
    con = _MASK_DB[0]
    got = [
        r[0]
        for r in lc_sql.run_sql(
            con, "SELECT nr_mask(m) FROM unnest($n::VARCHAR[]) t(m)", {"n": numbers}
        ).fetchall()
    ]
    assert got == [mask(n) for n in numbers]


def test_sql_ids_equal_python_ids() -> None:
    con = duckdb.connect()
    tid, rid = lc_sql.run_sql(
        con,
        "SELECT nr_tenure_id($m, $s), nr_reminder_id('T1', $d, 'offset:0', 'sms')",
        {"m": A, "s": START, "d": day(1)},
    ).fetchone() or ("", "")
    assert tid == lc.tenure_id(A, START)
    assert rid == rm.reminder_id("T1", day(1), "offset:0", "sms")


# =========================================================================== operator views


def test_number_history_is_json_and_complete(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run(day(1))
    rid = world.deliver(day(2), A)
    world.run(day(2))
    world.event(day(3), A, "cancel")  # illegal: frozen
    world.run(day(3))
    h = lc.number_history(world.con, A)
    json.dumps(h)
    assert h["state"]["state"] == "frozen"
    assert [t["tenure_start"] for t in h["tenures"]] == [START.isoformat()]
    assert [x["to_state"] for x in h["history"]] == ["active", "frozen"]
    rem = {r["reminder_id"]: r for r in h["reminders"]}
    assert rem[rid]["status"] == "delivered" and rem[rid]["receipts"][0]["status"] == "delivered"
    assert [q["reason"] for q in h["quarantined"]] == ["illegal_transition"]
    assert {e["type"] for e in h["ledger_events"]} >= {"tenure_closed", "reminder_sent", "reminder_effective"}
    assert lc.number_history(world.con, "+8613999999999")["state"] is None


def test_lifecycle_status_adds_up(world: World) -> None:
    seeded(world, A, B, C)
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "port_out")
    world.event(day(1), C, "suspend")
    world.run(day(1))
    world.run(day(11))
    world.run(day(15))
    s = lc.lifecycle_status(world.con, day(15))
    json.dumps(s)
    assert s["numbers"]["total"] == 3 == sum(s["numbers"]["by_state"].values())
    assert s["numbers"]["by_state"]["ported_out"] == 1
    assert (
        s["reminders"]["total"]
        == sum(s["reminders"]["by_status"].values())
        == sum(c["total"] for c in s["reminders"]["by_channel"].values())
    )
    assert s["releases"]["day"] == {"total": 1, "released": 0, "with_exception": 1}
    assert s["releases"]["all_time"]["total"] == world.one("SELECT count(*) FROM releases")
    assert s["held"]["now"] == s["numbers"]["by_state"]["held"]


# =========================================================================== the night's machinery


def test_advance_time_rewrites_only_the_numbers_whose_time_has_come(world: World) -> None:
    seeded(world, A, B, C)
    world.event(day(1), A, "cancel")  # frozen until day 11
    world.event(day(1), B, "suspend")  # the suspension runs out on day 6
    world.run(day(1))
    con = world.con

    def rowids() -> dict[str, int]:
        rows = con.execute(
            "SELECT msisdn, rowid FROM number_state UNION ALL SELECT tenure_id, rowid FROM tenures"
        ).fetchall()
        return {str(k): int(v) for k, v in rows}

    # Rowids are stable within a transaction (a checkpoint may renumber them).
    con.execute("BEGIN TRANSACTION")
    before = rowids()
    report = lc.advance_time(con, SETTINGS, day(6))
    after = rowids()
    con.execute("COMMIT")
    assert report.suspensions_expired == 1
    untouched = [A, C, world.state(A)["tenure_id"], world.state(C)["tenure_id"]]
    assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}
    assert world.state(B)["state"] == "frozen"


def test_working_copy_holds_exactly_the_keyed_rows_and_their_rowids(world: World) -> None:
    seeded(world, A, B, C)
    lc_sql.working_copy(world.con, "_wc", "number_state", "msisdn", f"SELECT '{A}' UNION ALL SELECT '{C}'")
    got = world.rows("SELECT * FROM _wc ORDER BY msisdn")
    assert [r["msisdn"] for r in got] == [A, C]
    for r in got:
        assert world.one("SELECT msisdn FROM number_state WHERE rowid = ?", [r["_rid"]]) == r["msisdn"]
        assert r["state"] == world.state(r["msisdn"])["state"]


def test_a_number_back_from_a_port_is_reissued_without_a_violation(world: World) -> None:
    seeded(world, A)
    world.event(day(1), A, "port_out")
    world.run(day(1))
    world.reissue(day(30), A, ref="NEW")
    world.run(day(30))
    assert world.state(A)["state"] == "active"
    [row] = world.rows("SELECT violation, disconnected_on FROM reissues WHERE msisdn = ?", [A])
    assert (row["violation"], row["disconnected_on"]) == (False, day(1))
    assert (
        world.one("SELECT opened_by FROM tenures WHERE msisdn = ? AND tenure_end IS NULL", [A]) == "reissue"
    )


def test_a_second_reissue_on_the_day_the_tenure_began_is_quarantined(world: World) -> None:
    # A tenure is keyed by (number, start day): a second sale on the same day would hide the first.
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.reissue(day(1), A, ref="N1")
    world.reissue(day(1), A, ref="N2")
    world.run(day(1))
    assert world.one("SELECT count(*) FROM tenures WHERE msisdn = ?", [A]) == 2
    assert (
        world.one("SELECT subscriber_ref FROM tenures WHERE msisdn = ? AND tenure_end IS NULL", [A]) == "N1"
    )
    assert [q["reason"] for q in world.quarantine()] == ["tenure_mismatch"]


def test_a_port_in_of_a_released_number_is_refused(world: World) -> None:
    # A released number is in this carrier's pool: only a reissue gives it a new subscriber.
    seeded(world, A)
    world.event(day(1), A, "cancel")
    world.run_days(1, 16)
    assert world.state(A)["state"] == "available"
    world.event(day(17), A, "port_in", start=None, ref="P1")
    world.run(day(17))
    assert world.state(A)["state"] == "available"
    assert [q["reason"] for q in world.quarantine()] == ["illegal_transition"]
