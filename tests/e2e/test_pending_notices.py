"""Pending notices end to end: drop files through the real nightly run, the server on loopback,
``recycle pull`` over real HTTP verifying and storing the pending list.

cancel → pending listed (signed, verified by the client) → restore → withdrawn record → cancel
again → not released before min_notice_days → released → reissued; and a reissue inside the
notice period is a violation the night's alerts name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from number_recycling_client.store import STATE_DB

from pipelines.client import check_local, pull
from pipelines.compliance.alerts import evaluate_compliance
from pipelines.config import Policy, load_settings
from pipelines.db import open_state
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, run_day
from pipelines.server import TokenStore, create_app

from .test_client_pull import serving

D0 = dt.date(2026, 9, 1)
A, B = "+8613800000201", "+8613800000202"
POLICY = Policy(
    freeze_days=3,
    suspend_days=2,
    reminder_offsets=(0,),
    min_effective_reminders=0,
    max_hold_days=0,
    min_notice_days=5,
)


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def drop(data: Path, n: int, kind: str, header: str, *lines: str) -> None:
    inbox = Layout(data).inbox(day(n))
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{kind}_{day(n)}.csv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")


def event(data: Path, n: int, *rows: tuple[str, str]) -> None:
    drop(
        data,
        n,
        "lifecycle",
        "msisdn,event,effective_date,region,subscriber_ref,tenure_start",
        *(f"{m},{e},{day(n)},GD,S1,2020-01-01" for m, e in rows),
    )


def notice_rows(state: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(state / STATE_DB)
    try:
        return con.execute(
            "SELECT seq, msisdn, event, disconnected_on FROM notice_rows ORDER BY seq"
        ).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_pending_withdrawn_released_reissued_through_http(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = dataclasses.replace(load_settings(env={}, data_dir=data), policies={"default": POLICY})
    # The story's nights carry only the drops it needs: the others are empty nights on purpose.
    ctx = RunContext(simulate_gateways=True, alerts_mode="record", empty_night=True)
    drop(
        data,
        0,
        "subscribers",
        "msisdn,tenure_start,region,subscriber_ref",
        f"{A},2020-01-01,GD,S1",
        f"{B},2020-01-01,GD,S1",
    )
    event(data, 1, (A, "cancel"), (B, "cancel"))
    event(data, 2, (A, "restore"))
    event(data, 3, (A, "cancel"))
    drop(data, 5, "reissue", "msisdn,reissue_date,region,subscriber_ref", f"{B},{day(5)},GD,N1")
    drop(data, 9, "reissue", "msisdn,reissue_date,region,subscriber_ref", f"{A},{day(9)},GD,N2")
    tokens = TokenStore.open(data)
    token = tokens.add("bank", ["feeds", "bulk", "check"], rate=10_000, burst=10_000)
    tokens.close()
    root = data / "feeds" / "roots" / "1.root.json"
    state = tmp_path / "client"

    def night(n: int) -> None:
        run_day(settings, day(n), ctx)
        now = dt.datetime.combine(day(n), dt.time(23), tzinfo=dt.UTC)
        pull(url, token, state, root, clock=lambda: now)

    with serving(create_app(settings, snapshot_check_s=0.05)) as url:
        night(0)
        night(1)  # A and B cancelled: listed, and the client verified and stored the list
        assert notice_rows(state) == [
            (1, A, "pending", day(1).isoformat()),
            (2, B, "pending", day(1).isoformat()),
        ]
        assert check_local(state, A, day(0)).recycled  # the feed no longer lags the server
        night(2)  # A restored: a signed withdrawal
        assert notice_rows(state)[-1] == (3, A, "withdrawn", day(1).isoformat())
        assert not check_local(state, A, day(0)).recycled
        night(3)  # A cancelled again
        assert notice_rows(state)[-1] == (4, A, "pending", day(3).isoformat())
        for n in range(4, 8):  # A's freeze ends on day 6, its notice on day 8
            night(n)
        with open_state(Layout(data).state_db) as con:
            assert con.execute("SELECT count(*) FROM releases WHERE msisdn = ?", [A]).fetchone() == (0,)
            # B was sold on day 5, four days into its notice: a violation, named by the alerts
            report = evaluate_compliance(con, settings, day(7))
        assert report.violations == 1 and report.inside_notice == 1
        night(8)
        night(9)
    con = sqlite3.connect(state / STATE_DB)
    try:
        rows = con.execute(
            "SELECT event, released_on, reissued_on, violation, risk FROM feed_rows WHERE msisdn = ? ORDER BY seq",
            [A],
        ).fetchall()
        b_rows = con.execute("SELECT event, violation, risk FROM feed_rows WHERE msisdn = ?", [B]).fetchall()
    finally:
        con.close()
    # released on day 8 (listed on day 3, 5 days' notice), one simulated reminder reached A: medium
    # the light client's sqlite3 store: dates as ISO text, booleans as 0/1
    assert rows == [
        ("released", day(8).isoformat(), None, 0, "medium"),
        ("reissued", day(8).isoformat(), day(9).isoformat(), 0, "medium"),
    ]
    assert b_rows == [("reissued", 1, "high")]
