"""The lifecycle test harness, shared by the lifecycle, release-gate and reminders tests.

State is built the way the nightly run builds it: rows are inserted into the ingest tables
(as ingest would), then the steps run day by day, each in its own transaction. :class:`World`
is the harness.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

import pipelines.lifecycle as lc
import pipelines.reminders as rm
from pipelines import db
from pipelines.config import Policy, Settings
from pipelines.reminders.channels import AcceptedHook, BatchOutcome, OutgoingReminder, SendFailure, SendResult

D0 = dt.date(2026, 3, 1)
# Compressed time, as in the demo: 10-day freeze, 5-day 双停 suspension, reminders on day 0,
# day 4 and 3 days before the freeze ends. BJ has a longer freeze.
SETTINGS = Settings(
    policies={
        "default": Policy(
            freeze_days=10,
            suspend_days=5,
            reminder_offsets=(0, 4, -3),
            min_effective_reminders=2,
            max_hold_days=3,
        ),
        "BJ": Policy(
            freeze_days=20,
            suspend_days=5,
            reminder_offsets=(0, 4, -3),
            min_effective_reminders=2,
            max_hold_days=3,
        ),
    }
)
A = "+8613800000001"
B = "+8613800000002"
C = "+8613800000003"
OWN_PHONE = "+8613911112222"
START = dt.date(2020, 5, 1)
MY_TABLES = (
    "tenures",
    "number_state",
    "state_history",
    "releases",
    "reissues",
    "reminders",
    "outbox",
    "ledger_events",
    "quarantine",
)


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def open_db(path: Path) -> duckdb.DuckDBPyConnection:
    return db.connect(path)


class MemoryChannel:
    """A channel that keeps what it sends; addresses in ``permanent``/``transient`` fail."""

    def __init__(self, name: str, permanent: Sequence[str] = (), transient: Sequence[str] = ()):
        self.name = name
        self.permanent = set(permanent)
        self.transient = set(transient)
        self.sent: list[OutgoingReminder] = []

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome:
        ok: list[SendResult] = []
        bad: list[SendFailure] = []
        for r in reminders:
            if r.to in self.permanent:
                bad.append(SendFailure(r.reminder_id, r.channel, True, "no such subscriber"))
            elif r.to in self.transient:
                bad.append(SendFailure(r.reminder_id, r.channel, False, "gateway busy"))
            else:
                self.sent.append(r)
                ok.append(
                    SendResult(
                        r.reminder_id,
                        r.channel,
                        f"ref-{r.reminder_id}",
                        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                    )
                )
                if on_accepted:
                    on_accepted(ok[-1])
        return BatchOutcome(tuple(ok), tuple(bad))


def memory_channels(**failing: dict[str, Sequence[str]]) -> dict[str, MemoryChannel]:
    return {
        name: MemoryChannel(name, **failing.get(name, {}))  # type: ignore[arg-type]
        for name in ("sms", "email", "letter")
    }


@dataclass
class World:
    con: duckdb.DuckDBPyConnection
    settings: Settings = SETTINGS
    channels: dict[str, MemoryChannel] = field(default_factory=memory_channels)
    lines: dict[str, int] = field(default_factory=dict)

    # ---- ingest rows
    def _file(self, kind: str, d: dt.date) -> str:
        name = f"{kind}_{d.isoformat()}.csv"
        sha = hashlib.sha256(name.encode()).hexdigest()
        if sha not in self.lines:
            self.lines[sha] = 1
            self.con.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, 'ingested', 0, 0, 0, 'utf-8', ',', NULL)",
                [name, kind, sha, d],
            )
        self.lines[sha] += 1
        return sha

    def subscriber(
        self,
        d: dt.date,
        msisdn: str,
        start: dt.date = START,
        ref: str = "S1",
        region: str = "GD",
        email: str | None = None,
        phone: str | None = OWN_PHONE,
        language: str = "zh-CN",
    ) -> tuple[str, int]:
        sha = self._file("subscribers", d)
        self.con.execute(
            "INSERT INTO subscriber_rows VALUES (?, ?, ?, ?, ?, ?, ?, contact_seal(?), contact_seal(?), ?)",
            [sha, self.lines[sha], d, msisdn, start, region, ref, email, phone, language],
        )
        return sha, self.lines[sha]

    def event(
        self,
        d: dt.date,
        msisdn: str,
        event: str,
        eff: dt.date | None = None,
        ref: str = "S1",
        start: dt.date | None = START,
        region: str = "GD",
        email: str | None = None,
        phone: str | None = None,
        language: str = "zh-CN",
    ) -> tuple[str, int]:
        sha = self._file("lifecycle", d)
        self.con.execute(
            "INSERT INTO lifecycle_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, contact_seal(?), contact_seal(?), ?)",
            [sha, self.lines[sha], d, msisdn, event, eff or d, region, ref, start, email, phone, language],
        )
        return sha, self.lines[sha]

    def reissue(
        self, d: dt.date, msisdn: str, on: dt.date | None = None, ref: str = "N1", region: str = "GD"
    ) -> tuple[str, int]:
        sha = self._file("reissue", d)
        self.con.execute(
            "INSERT INTO reissue_events VALUES (?, ?, ?, ?, ?, ?, ?)",
            [sha, self.lines[sha], d, msisdn, on or d, region, ref],
        )
        return sha, self.lines[sha]

    def receipt(
        self,
        d: dt.date,
        reminder_id: str,
        status: str,
        at: dt.date | None = None,
        channel: str | None = None,
        provider_ref: str | None = "gw-1",
    ) -> tuple[str, int]:
        if channel is None:
            channel = self.one(f"SELECT channel FROM reminders WHERE reminder_id = '{reminder_id}'")
        sha = self._file("receipts", d)
        when = dt.datetime.combine(at or d, dt.time(9, 30))
        self.con.execute(
            "INSERT INTO receipt_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [sha, self.lines[sha], d, reminder_id, channel, status, when, provider_ref],
        )
        return sha, self.lines[sha]

    # ---- steps, as the integrator runs them
    def step(self, fn: Any, d: dt.date) -> Any:
        self.con.execute("BEGIN TRANSACTION")
        try:
            report = fn(self.con, self.settings, d)
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")
        return report

    def run(self, d: dt.date, send: bool = True) -> dict[str, Any]:
        reports = {
            "receipts": self.step(rm.apply_receipts, d),
            "advance": self.step(lc.advance_time, d),
            "events": self.step(lc.apply_events, d),
            "schedule": self.step(rm.schedule_reminders, d),
        }
        if send:
            reports["send"] = rm.send_reminders(
                self.con, self.settings, d, self.channels, sleep=lambda s: None
            )
        return reports

    def run_days(self, first: int, last: int) -> None:
        for n in range(first, last + 1):
            self.run(day(n))

    # ---- reading
    def one(self, sql: str, params: Any = None) -> Any:
        row = self.con.execute(sql, params or []).fetchone()
        return row[0] if row else None

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def state(self, msisdn: str) -> dict[str, Any]:
        got = self.rows("SELECT * FROM number_state WHERE msisdn = ?", [msisdn])
        assert len(got) == 1, f"expected one state row for {msisdn}, got {got}"
        return got[0]

    def tenure(self, tid: str) -> dict[str, Any]:
        got = self.rows(
            "SELECT * REPLACE (contact_open(contact_email) AS contact_email, contact_open(contact_phone) "
            "AS contact_phone) FROM tenures WHERE tenure_id = ?",
            [tid],
        )
        assert len(got) == 1
        return got[0]

    def reminders(self, msisdn: str, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * REPLACE (contact_open(address) AS address) FROM reminders WHERE msisdn = ?"
        params: list[Any] = [msisdn]
        if status:
            sql += " AND status = ?"
            params.append(status)
        return self.rows(sql + " ORDER BY due_on, slot, channel", params)

    def quarantine(self, stage: str = "lifecycle") -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM quarantine WHERE stage = ? ORDER BY line_no", [stage])

    def ledger(self, type_: str | None = None) -> list[dict[str, Any]]:
        if type_:
            return self.rows("SELECT * FROM ledger_events WHERE type = ? ORDER BY seq", [type_])
        return self.rows("SELECT * FROM ledger_events ORDER BY seq")

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        return {t: self.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in MY_TABLES}

    def deliver(
        self,
        d: dt.date,
        msisdn: str,
        status: str = "delivered",
        *,
        at: dt.date | None = None,
        which: str = "sent",
    ) -> str:
        """Post a receipt for the earliest ``which``-status reminder of ``msisdn``; return its id."""
        rem = self.reminders(msisdn, which)
        assert rem, f"no {which} reminder for {msisdn}"
        rid = str(rem[0]["reminder_id"])
        self.receipt(d, rid, status, at=at)
        return rid


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A fresh state file with the nightly settings, as a :class:`World`; the test folders'
    ``conftest.py`` make it their ``world`` fixture."""
    con = open_db(tmp_path / "state.duckdb")
    yield World(con)
    con.close()


def seeded(world: World, *numbers: str, **kw: Any) -> World:
    for n in numbers:
        world.subscriber(day(0), n, **kw)
    world.run(day(0))
    return world


# =========================================================================== go-live


def insert_tenure(
    con: duckdb.DuckDBPyConnection,
    tid: str,
    msisdn: str,
    start: dt.date,
    end: dt.date | None = None,
    reason: str | None = None,
    *,
    region: str = "GD",
    opened_by: str = "snapshot",
) -> None:
    """A tenures row as the lifecycle writes it, for tests that build a state by hand."""
    con.execute(
        "INSERT INTO tenures (tenure_id, msisdn, tenure_start, tenure_end, end_reason, subscriber_ref,"
        " region, opened_by, opened_logical) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [tid, msisdn, start, end, reason, f"sub-{tid}", region, opened_by, start],
    )
