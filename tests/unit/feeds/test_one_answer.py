"""One answer across the interfaces, for random lives played through the real nightly steps.

A life is a go-live snapshot row (or a first-seen cancel, or a port-in) and then, day by day,
cancels, 双停 suspensions, restores, ports both ways and reissues, several on one day at times.
The lifecycle decides what is legal; whatever state it reaches, every interface must say what
the one rule (:func:`pipelines.feeds.answer.answer` over the number's tenures) says:
the CAMARA check and the bulk check (over HTTP, in process), and the feed's rule as
``recycle check`` applies it to the published rows and pending list (which lists a
disconnection the night it happens and withdraws it on a restore, so the feed never lags).
The bulk answer's risk grade of a "yes" is the grade of the number's latest feed row.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifecycle_testkit import World, open_db

from pipelines.config import Policy, Settings
from pipelines.feeds.answer import Span, Verdict, answer, spans_from_feed
from pipelines.feeds.grade import GRADES, risk_grade
from pipelines.feeds.publish import DAILY_PARQUET, NOTICES_PARQUET, FeedPaths, publish_feed
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.server import TokenStore, create_app

D0 = dt.date(2026, 3, 1)
DAYS = 12
GO_LIVE_START = dt.date(2021, 6, 1)  # a snapshot row's tenure_start: years of history
NUMBERS = [f"+86138000001{i:02d}" for i in range(4)]
# Short policy so that lives reach release (freeze 3 days, hold 1 day, then an exception).
# A 4-day notice outlasts the freeze, so the notice period decides some releases.
POLICY = Policy(
    freeze_days=3,
    suspend_days=2,
    reminder_offsets=(0,),
    min_effective_reminders=2,
    max_hold_days=1,
    min_notice_days=4,
)
ACTIONS = ("cancel", "suspend", "restore", "port_out", "port_in", "reissue")


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


life = st.tuples(
    st.sampled_from(["snapshot", "first_cancel", "port_in"]),
    st.lists(st.tuples(st.integers(1, DAYS - 1), st.sampled_from(ACTIONS)), max_size=7),
)


def play(world: World, number: str, start: str, actions: list[tuple[int, str]]) -> None:
    """Write the ingest rows of one life; the steps judge them night by night."""
    if start == "snapshot":
        world.subscriber(day(0), number, start=GO_LIVE_START, ref="S0")
    elif start == "first_cancel":
        world.event(day(0), number, "cancel", ref="S0", start=GO_LIVE_START)
    else:
        world.event(day(0), number, "port_in", ref="S0", start=None)
    refs = itertools.count(1)
    for n, action in sorted(actions):
        if action == "reissue":
            world.reissue(day(n), number, ref=f"N{next(refs)}")
        elif action == "port_in":
            world.event(day(n), number, "port_in", ref=f"P{next(refs)}", start=None)
        else:
            # lifecycle rows name the tenure on record; a wrong guess is quarantined, as in life
            world.event(day(n), number, action, ref="S0", start=GO_LIVE_START)


def tenure_spans(world: World, number: str) -> list[Span]:
    rows = world.rows(
        "SELECT tenure_start, tenure_end, end_reason, opened_by FROM tenures WHERE msisdn = ? "
        "ORDER BY tenure_start, tenure_end NULLS LAST, tenure_id",
        [number],
    )
    return [Span(r["tenure_start"], r["tenure_end"], r["end_reason"], r["opened_by"]) for r in rows]


def grade_code_of(row: dict[str, Any]) -> int:
    """A feed row's grade, from its published columns (which must agree with its ``risk``)."""
    grade = risk_grade(row["reminders_reached"], row["release_exception"], row["violation"], row["prior_end"])
    assert grade.level == row["risk"], row
    return GRADES.index(grade)


def feed_rows(paths: FeedPaths, number: str) -> list[dict[str, Any]]:
    return [
        r
        for d in paths.published_days()
        for r in pq.read_table(paths.day_dir(d) / DAILY_PARQUET).to_pylist()
        if r["msisdn"] == number
    ]


def feed_spans(paths: FeedPaths, number: str) -> list[Span]:
    """The number's spans as ``recycle check`` sees them: the recycled rows and the pending list."""
    rows = [
        (r["event"], r["disconnected_on"], r["reissued_on"], r["prior_end"]) for r in feed_rows(paths, number)
    ]
    for d in paths.published_days():
        for r in pq.read_table(paths.day_dir(d) / NOTICES_PARQUET).to_pylist():
            if r["msisdn"] == number:
                rows.append((r["event"], r["disconnected_on"], None, r["cause"]))
    return spans_from_feed(rows)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lives=st.lists(life, min_size=len(NUMBERS), max_size=len(NUMBERS)))
def test_every_interface_gives_the_one_answer(
    tmp_path_factory: pytest.TempPathFactory, lives: list[tuple[str, list[tuple[int, str]]]]
) -> None:
    base: Path = tmp_path_factory.mktemp("life")
    cfg: Settings = replace(Settings(), data_dir=base / "data", policies={"default": POLICY})
    con = open_db(base / "state.duckdb")
    world = World(con, settings=cfg)
    for number, (start, actions) in zip(NUMBERS, lives, strict=True):
        play(world, number, start, actions)
    for n in range(DAYS):
        world.run(day(n))
        publish_feed(cfg, day(n), con)
    last = day(DAYS - 1)
    publish_snapshot(cfg, last, con)
    spans = {n: tenure_spans(world, n) for n in NUMBERS}
    con.close()

    tokens = TokenStore.open(cfg.data_dir)
    token = tokens.add("bank", ["check", "bulk"], rate=100_000, burst=100_000)
    tokens.close()
    now = dt.datetime.combine(last, dt.time(12), tzinfo=dt.UTC)
    client = TestClient(create_app(cfg, clock=lambda: now))
    auth = {"Authorization": f"Bearer {token}"}
    dates = [GO_LIVE_START - dt.timedelta(days=1), GO_LIVE_START, *(day(n) for n in range(-1, DAYS))]
    pairs = [(n, d) for n in [*NUMBERS, "+8613999999999"] for d in dates]
    bulk = client.post(
        "/number-recycling/v0.2/bulk-check",
        json={"queries": [{"phoneNumber": n, "specifiedDate": d.isoformat()} for n, d in pairs]},
        headers=auth,
    )
    assert bulk.status_code == 200, bulk.text
    paths = FeedPaths.of(cfg)
    for (number, d), word, risk in zip(pairs, bulk.json()["results"], bulk.json()["risk"], strict=True):
        rule = answer(spans.get(number, []), d)
        r = client.post(
            "/number-recycling/v0.2/check",
            json={"phoneNumber": number, "specifiedDate": d.isoformat()},
            headers=auth,
        )
        camara = {
            200: lambda: Verdict.TRUE if r.json()["phoneNumberRecycled"] else Verdict.FALSE,
            404: lambda: Verdict.NOT_OURS,
            400: lambda: Verdict.NO_DATA,
        }[r.status_code]()
        where = (number[-2:], d, rule, lives)
        assert camara == rule.verdict, where
        assert word == rule.bulk_word, where
        # with the pending list the feed no longer lags the server, frozen or not
        feed = answer(feed_spans(paths, number), d).verdict == Verdict.TRUE
        assert feed == (rule.verdict == Verdict.TRUE), where
        # the bulk grade of a yes is the grade of the number's latest feed row
        latest = feed_rows(paths, number)[-1:] or [None]
        expected = None if latest[0] is None else GRADES[grade_code_of(latest[0])].to_json()
        assert risk == (expected if word == "yes" else None), where
        # no port alone ever says recycled; a reissue does for every date before it
        if not any(
            s.end_reason in ("cancel", "suspend", "reissue") or s.opened_by == "reissue"
            for s in spans.get(number, [])
        ):
            assert rule.verdict != Verdict.TRUE, where
        if any(s.opened_by == "reissue" and d < s.start for s in spans.get(number, [])):
            assert rule.verdict == Verdict.TRUE, where


# ------------------------------------------------------------------ the cases seen, by hand

N = {k: f"+86139000000{i:02d}" for i, k in enumerate("ABCDEFG")}


def _seen(world: World) -> None:
    """The lives of the edges issue, one number each (snapshot rows carry years of history)."""
    for k in "BCDEF":
        world.subscriber(day(0), N[k], start=GO_LIVE_START, ref="S0")
    world.event(day(5), N["A"], "port_in", ref="P1", start=None)  # A: ported in on day 5
    world.event(day(2), N["B"], "cancel", ref="S0", start=GO_LIVE_START)  # B: cancelled and
    world.reissue(day(2), N["B"], ref="N1")  # reissued the same day
    world.event(day(1), N["C"], "port_out", ref="S0", start=GO_LIVE_START)  # C: ported out,
    world.reissue(day(4), N["C"], ref="N1")  # came back and was sold
    world.event(day(1), N["D"], "cancel", ref="S0", start=GO_LIVE_START)  # D: released,
    world.reissue(day(6), N["D"], ref="N1")  # reissued,
    world.event(day(8), N["D"], "port_out", ref="N1", start=day(6))  # then ported away
    world.event(day(1), N["F"], "cancel", ref="S0", start=GO_LIVE_START)  # F: released, unsold


# (number, date, CAMARA /check, bulk, recycle check on the feed)
SEEN = [
    ("A", day(3), "400 OUT_OF_RANGE", "no_data", "no"),  # before its port-in: another carrier's
    ("A", day(6), "false", "no", "no"),
    ("B", day(2), "true", "yes", "yes"),  # cancelled and reissued that very day
    ("B", day(3), "false", "no", "no"),  # the new holder's
    ("C", day(0), "true", "yes", "yes"),  # before a reissue after a port-out return
    ("C", day(4), "false", "no", "no"),  # the sale day is the new holder's
    ("D", day(3), "true", "yes", "yes"),  # the reissue stays history after the port-out
    ("D", day(7), "404", "no_data", "no"),  # the reissued holder ported away
    ("E", dt.date(2023, 1, 1), "false", "no", "no"),  # before go-live, within its snapshot tenure
    ("E", GO_LIVE_START - dt.timedelta(days=1), "400 OUT_OF_RANGE", "no_data", "no"),
    ("F", day(6), "true", "yes", "yes"),  # released, nobody holds it (freeze gap)
    ("G", day(6), "404", "no_data", "no"),  # never ours
]


def test_the_cases_seen_through_every_interface(tmp_path: Path) -> None:
    cfg: Settings = replace(Settings(), data_dir=tmp_path / "data", policies={"default": POLICY})
    con = open_db(tmp_path / "state.duckdb")
    world = World(con, settings=cfg)
    _seen(world)
    for n in range(10):
        world.run(day(n))
        publish_feed(cfg, day(n), con)
    publish_snapshot(cfg, day(9), con)
    con.close()
    tokens = TokenStore.open(cfg.data_dir)
    token = tokens.add("bank", ["check", "bulk"])
    tokens.close()
    now = dt.datetime.combine(day(9), dt.time(12), tzinfo=dt.UTC)
    client = TestClient(create_app(cfg, clock=lambda: now))
    auth = {"Authorization": f"Bearer {token}"}
    got = []
    for k, d, *_ in SEEN:
        body = {"phoneNumber": N[k], "specifiedDate": d.isoformat()}
        r = client.post("/number-recycling/v0.2/check", json=body, headers=auth)
        camara = (
            str(r.json()["phoneNumberRecycled"]).lower()
            if r.status_code == 200
            else f"{r.status_code} {r.json()['code']}"
            if r.status_code == 400
            else str(r.status_code)
        )
        bulk = client.post("/number-recycling/v0.2/bulk-check", json={"queries": [body]}, headers=auth)
        feed = answer(feed_spans(FeedPaths.of(cfg), N[k]), d).verdict == Verdict.TRUE
        got.append((k, d, camara, bulk.json()["results"][0], "yes" if feed else "no"))
    assert got == SEEN
