"""One answer: has the subscriber of number N changed after date D?

Every interface says what this module says: the CAMARA check (``phoneNumberRecycled``), the
bulk check (``yes``/``no``/``no_data``), ``recycle check`` on a pulled feed, the feed's
platform rule and the notification evidence. The rule is computed from a number's tenures at
this carrier (``docs/answers.md`` has the table of cases and what each interface says):

1. N was never ours: **not ours** (CAMARA 404 ``IDENTIFIER_NOT_FOUND``, bulk ``no_data``).
2. The subscriber changed after D: **true**. It changed at the end of a tenure by cancel,
   permanent 双停 suspension or reissue, and that end day itself counts (a binding made on the
   day a number was cancelled and sold again may be the prior owner's); and it changed before
   every tenure opened by a reissue, so every D before a reissue is true — which also covers a
   number that came back from a port and was sold (its reissue day is the new holder's).
   A port moves the *same* subscriber, so a port alone is never a change.
3. D is before the first date this carrier can speak for N: **no data** (CAMARA 400
   ``OUT_OF_RANGE`` naming that date, bulk ``no_data``). That date is the start of N's first
   tenure here (a go-live snapshot's ``tenure_start`` is history, not the go-live date), or the
   start of the latest tenure that began by a port-in or after a port-out: who held N at the
   other carrier is not known here.
4. Otherwise the tenure that covered D decides: still open: **false**; ended by a port-out
   (and N never came back): **not ours**; ended by cancel or 双停 and nobody holds N since (a
   freeze gap): **true**.

:func:`answer` is the rule over one number's tenures, written for reading; it lives in the light
client (pure Python, no numpy) because a platform's ``nrc check`` asks it too.
``pipelines.feeds.answer.AnswerIndex`` is the same rule over arrays (a province's tenures, a
250,000-pair bulk request), and property tests hold the two equal.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BULK_WORDS",
    "CHANGING_ENDS",
    "END_REASONS",
    "OPENED_BY",
    "Answer",
    "Span",
    "Verdict",
    "answer",
    "spans_from_feed",
]


class Verdict(enum.IntEnum):
    """What the rule says; the values are the bulk answer codes (see ``BULK_WORDS``)."""

    NOT_OURS = 0
    NO_DATA = 1
    FALSE = 2
    TRUE = 3


BULK_WORDS = ("no_data", "no_data", "no", "yes")  # indexed by Verdict

# How a tenure ended / began, as the lifecycle records them (tenures.end_reason, .opened_by).
END_REASONS = ("cancel", "suspend", "port_out", "reissue")
OPENED_BY = ("snapshot", "cancel", "suspend", "port_in", "reissue")
CHANGING_ENDS = frozenset({"cancel", "suspend", "reissue"})


@dataclass(frozen=True)
class Span:
    """One tenure of a number, as the rule needs it."""

    start: dt.date
    end: dt.date | None  # None: still open
    end_reason: str | None  # cancel | suspend | port_out | reissue (None while open)
    opened_by: str  # snapshot | cancel | suspend | port_in | reissue


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    first_date: dt.date | None = None  # with NO_DATA: the first date this carrier can answer

    @property
    def bulk_word(self) -> str:
        return BULK_WORDS[self.verdict]


def changes(spans: Sequence[Span]) -> list[dt.date]:
    """Rule 2: the last days on which a prior subscriber may have held the number; D on or
    before one of them is true. A tenure's end by cancel, 双停 or reissue; the day before a
    tenure opened by a reissue."""
    out = [s.end for s in spans if s.end is not None and s.end_reason in CHANGING_ENDS]
    return out + [s.start - dt.timedelta(days=1) for s in spans if s.opened_by == "reissue"]


def first_answerable(spans: Sequence[Span]) -> dt.date:
    """Rule 3's date: the start of the first tenure, or of the latest one after a port."""
    ordered = sorted(spans, key=lambda s: s.start)
    first = ordered[0].start
    for before, span in itertools.pairwise(ordered):
        after_port = before.end_reason == "port_out" and span.opened_by != "reissue"
        if span.opened_by == "port_in" or after_port:
            first = span.start
    return first


def answer(spans: Sequence[Span], day: dt.date) -> Answer:
    """Has the subscriber of the number whose tenures are ``spans`` changed after ``day``?"""
    if not spans:
        return Answer(Verdict.NOT_OURS)
    if any(c >= day for c in changes(spans)):
        return Answer(Verdict.TRUE)
    first = first_answerable(spans)
    if day < first:
        return Answer(Verdict.NO_DATA, first)
    # The latest tenure begun on or before D (of two begun the same day, the later one: a
    # number cancelled and reissued on one day belongs to the new holder from then on).
    covering = [s for s in sorted(spans, key=lambda s: s.start) if s.start <= day][-1]
    if covering.end is None:
        return Answer(Verdict.FALSE)
    if covering.end_reason == "port_out":
        return Answer(Verdict.NOT_OURS)
    return Answer(Verdict.TRUE)  # a freeze gap: the tenure ended and nobody holds the number


def spans_from_feed(rows: Sequence[tuple[str, dt.date | None, dt.date | None, str | None]]) -> list[Span]:
    """A number's tenures as far as the recycled-number feed tells them, for the same rule.

    ``rows`` are the number's feed rows in ``seq`` order as (event, disconnected_on,
    reissued_on, prior_end), the pending list's rows among them as (``pending`` or
    ``withdrawn``, disconnected_on, None, cause). A row says a tenure ended on
    ``disconnected_on`` (how: ``prior_end``, a cancel when not given) and, for ``reissued``,
    that a tenure began by a reissue on ``reissued_on``; a ``withdrawn`` row takes back the end
    its ``pending`` row announced (a restore re-opens the tenure). Start dates of ended tenures
    are not in the feed; the rule does not need them for a feed's answers, which are only ever
    "true" or "nothing listed".
    """
    spans: list[Span] = []
    withdrawn = {d for event, d, _, _ in rows if event == "withdrawn" and d is not None}
    seen_ends: set[dt.date] = set(withdrawn)
    for event, disconnected_on, reissued_on, prior_end in rows:
        if disconnected_on is not None and disconnected_on not in seen_ends:
            seen_ends.add(disconnected_on)
            spans.append(Span(disconnected_on, disconnected_on, prior_end or "cancel", "snapshot"))
        if event == "reissued" and reissued_on is not None:
            spans.append(Span(reissued_on, None, None, "reissue"))
    # A reissued tenure that later ended shows up as the next row's disconnection.
    spans.sort(key=lambda s: (s.start, s.end is None))
    out: list[Span] = []
    for span in spans:
        if out and out[-1].end is None and span.end is not None:
            out[-1] = Span(out[-1].start, span.end, span.end_reason, out[-1].opened_by)
            continue
        out.append(span)
    return out
