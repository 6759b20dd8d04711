"""The one answer rule: the table of cases, and the array form equal to the reference form."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.feeds.answer import (
    END_REASONS,
    OPENED_BY,
    Answer,
    AnswerIndex,
    Span,
    Verdict,
    answer,
    changes,
)

D = dt.date(2026, 11, 10)


def d(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


def index_of(lives: dict[int, list[Span]]) -> AnswerIndex:
    rows = sorted(
        ((key, s.start, s) for key, spans in lives.items() for s in spans), key=lambda r: (r[0], r[1])
    )
    epoch = dt.date(1970, 1, 1)
    return AnswerIndex(
        np.array([k for k, _, _ in rows], dtype=np.int64),
        np.array([(s.start - epoch).days for _, _, s in rows], dtype=np.int32),
        np.array(
            [np.iinfo(np.int32).max if s.end is None else (s.end - epoch).days for _, _, s in rows],
            dtype=np.int32,
        ),
        np.array(
            [-1 if s.end_reason is None else END_REASONS.index(s.end_reason) for _, _, s in rows],
            dtype=np.int8,
        ),
        np.array([OPENED_BY.index(s.opened_by) for _, _, s in rows], dtype=np.int8),
    )


def via_index(spans: list[Span], day: dt.date) -> Answer:
    idx = index_of({8613800000001: spans})
    codes, first = idx.verdicts(
        np.array([8613800000001], dtype=np.int64),
        np.array([(day - dt.date(1970, 1, 1)).days], dtype=np.int32),
    )
    verdict = Verdict(int(codes[0]))
    first_date = (
        dt.date(1970, 1, 1) + dt.timedelta(days=int(first[0])) if verdict == Verdict.NO_DATA else None
    )
    return Answer(verdict, first_date)


SNAPSHOT = Span(d(-1000), None, None, "snapshot")
T, F, NO_DATA, NOT_OURS = Verdict.TRUE, Verdict.FALSE, Verdict.NO_DATA, Verdict.NOT_OURS

# (case, tenures, date, expected verdict, expected first answerable date)
CASES: list[tuple[str, list[Span], dt.date, Verdict, dt.date | None]] = [
    ("open tenure covers D", [SNAPSHOT], d(0), F, None),
    ("cancelled after D", [Span(d(-1000), d(5), "cancel", "snapshot")], d(0), T, None),
    ("cancelled on D: the end day counts", [Span(d(-1000), d(0), "cancel", "snapshot")], d(0), T, None),
    (
        "cancelled and reissued the same day",
        [Span(d(-1000), d(0), "cancel", "snapshot"), Span(d(0), None, None, "reissue")],
        d(0),
        T,
        None,
    ),
    (
        "the day after a same-day reissue is the new holder's",
        [Span(d(-1000), d(0), "cancel", "snapshot"), Span(d(0), None, None, "reissue")],
        d(1),
        F,
        None,
    ),
    ("freeze gap: nobody held it on D", [Span(d(-1000), d(-5), "cancel", "snapshot")], d(0), T, None),
    ("permanent 双停 after D", [Span(d(-1000), d(3), "suspend", "snapshot")], d(0), T, None),
    ("ported in, D before the port-in", [Span(d(2), None, None, "port_in")], d(0), NO_DATA, d(2)),
    ("ported in, D after the port-in", [Span(d(2), None, None, "port_in")], d(3), F, None),
    ("go-live snapshot start is history", [Span(d(-1000), None, None, "snapshot")], d(-999), F, None),
    (
        "before the snapshot's tenure start",
        [Span(d(-1000), None, None, "snapshot")],
        d(-1001),
        NO_DATA,
        d(-1000),
    ),
    ("ported out, never back", [Span(d(-1000), d(5), "port_out", "snapshot")], d(0), NOT_OURS, None),
    ("a port alone is never recycling", [Span(d(-1000), d(5), "port_out", "snapshot")], d(6), NOT_OURS, None),
    (
        "ported out, returned and reissued",
        [Span(d(-1000), d(-100), "port_out", "snapshot"), Span(d(5), None, None, "reissue")],
        d(-500),
        T,
        None,
    ),
    (
        "ported out, returned and reissued: the day before the reissue",
        [Span(d(-1000), d(-100), "port_out", "snapshot"), Span(d(5), None, None, "reissue")],
        d(4),
        T,
        None,
    ),
    (
        "reissued after a freeze gap: the reissue day is the new holder's",
        [Span(d(-1000), d(-90), "cancel", "snapshot"), Span(d(5), None, None, "reissue")],
        d(5),
        F,
        None,
    ),
    (
        "reissued while still held (a violation): the prior holder's last day counts",
        [Span(d(-1000), d(5), "reissue", "snapshot"), Span(d(5), None, None, "reissue")],
        d(5),
        T,
        None,
    ),
    (
        "released, reissued, then ported away: the reissue stays history",
        [Span(d(-1000), d(-30), "cancel", "snapshot"), Span(d(10), d(20), "port_out", "reissue")],
        d(0),
        T,
        None,
    ),
    (
        "released, reissued, then ported away: after the reissue",
        [Span(d(-1000), d(-30), "cancel", "snapshot"), Span(d(10), d(20), "port_out", "reissue")],
        d(12),
        NOT_OURS,
        None,
    ),
    (
        "ported out and back in: before the return is no data",
        [Span(d(-1000), d(-100), "port_out", "snapshot"), Span(d(-50), None, None, "port_in")],
        d(-500),
        NO_DATA,
        d(-50),
    ),
    ("never ours", [], d(0), NOT_OURS, None),
]


@pytest.mark.parametrize(("case", "spans", "day", "verdict", "first"), CASES, ids=[c[0] for c in CASES])
def test_the_table_of_cases(
    case: str, spans: list[Span], day: dt.date, verdict: Verdict, first: dt.date | None
) -> None:
    assert answer(spans, day) == Answer(verdict, first)
    if spans:
        assert via_index(spans, day) == Answer(verdict, first)


@st.composite
def lives(draw: st.DrawFn) -> list[Span]:
    """A number's tenures in order: each opened by something plausible, each ended or not."""
    spans: list[Span] = []
    day = d(draw(st.integers(-60, 0)))
    for i in range(draw(st.integers(0, 5))):
        if i == 0:
            opened = draw(st.sampled_from(["snapshot", "cancel", "suspend", "port_in", "reissue"]))
        elif spans[-1].end_reason == "port_out":
            opened = draw(st.sampled_from(["port_in", "reissue"]))
        else:
            opened = "reissue"
        start = day
        end_reason = draw(st.sampled_from([None, "cancel", "suspend", "port_out", "reissue"]))
        if end_reason is None:
            spans.append(Span(start, None, None, opened))
            break
        end = start + dt.timedelta(days=draw(st.integers(0, 20)))
        spans.append(Span(start, end, end_reason, opened))
        gap = 0 if end_reason == "reissue" else draw(st.integers(0, 15))
        day = end + dt.timedelta(days=gap)
    return spans


@settings(max_examples=400, deadline=None)
@given(lives(), st.integers(-80, 120))
def test_array_form_equals_the_rule(spans: list[Span], offset: int) -> None:
    if not spans:
        return
    assert via_index(spans, d(offset)) == answer(spans, d(offset))


@settings(max_examples=300, deadline=None)
@given(lives(), st.integers(-80, 120))
def test_ports_alone_never_say_recycled_and_a_reissue_always_does_before_it(
    spans: list[Span], offset: int
) -> None:
    day = d(offset)
    got = answer(spans, day).verdict
    if not changes(spans):  # only ports (or nothing) ended tenures
        assert got != Verdict.TRUE
    for s in spans:
        if s.opened_by == "reissue" and day < s.start:
            assert got == Verdict.TRUE


def test_many_numbers_in_one_index_answer_like_one_at_a_time() -> None:
    lives_by_key = {
        8613800000001: [SNAPSHOT],
        8613800000002: [Span(d(-1000), d(0), "cancel", "snapshot"), Span(d(0), None, None, "reissue")],
        8613800000004: [Span(d(2), None, None, "port_in")],
    }
    idx = index_of(lives_by_key)
    keys = np.array(
        [8613800000001, 8613800000002, 8613800000003, 8613800000004, 8613800000002], dtype=np.int64
    )
    days = np.array([(x - dt.date(1970, 1, 1)).days for x in (d(0), d(0), d(0), d(0), d(1))], dtype=np.int32)
    codes, _ = idx.verdicts(keys, days)
    assert [Verdict(int(c)) for c in codes] == [F, T, NOT_OURS, NO_DATA, F]
