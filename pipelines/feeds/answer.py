"""One answer, over arrays: :class:`AnswerIndex` is the rule of
:mod:`number_recycling_client.answer` (the one place it is written, shared with the light
client) over many numbers at once, for the server's checks and bulk answers. Property tests
hold the two equal. The rule's names are re-exported here for the carrier's modules.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from number_recycling_client.answer import (
    BULK_WORDS,
    CHANGING_ENDS,
    END_REASONS,
    OPENED_BY,
    Answer,
    Span,
    Verdict,
    answer,
    changes,
    first_answerable,
    spans_from_feed,
)

__all__ = [
    "BULK_WORDS",
    "END_REASONS",
    "OPENED_BY",
    "Answer",
    "AnswerIndex",
    "Span",
    "Verdict",
    "answer",
    "changes",
    "first_answerable",
    "spans_from_feed",
]


# --------------------------------------------------------------------------- arrays

_NEVER = np.iinfo(np.int32).min  # "no change" / no first date
_OPEN = np.iinfo(np.int32).max  # an open tenure ends "never"
_DAY_BIAS = 1 << 31  # int32 day -> non-negative, to pack (number, day) into one int64


class AnswerIndex:
    """:func:`answer` over many numbers: tenures in arrays sorted by (number, start).

    Dates are days since 1970 (int32); ``ends`` holds ``_OPEN`` for an open tenure;
    ``end_codes`` index :data:`END_REASONS` (-1 while open), ``opened_codes`` :data:`OPENED_BY`.
    Per number it keeps the last change and the first answerable day, so a question is two
    binary searches: the number, then the tenure that covered the day.
    """

    def __init__(
        self,
        keys: npt.NDArray[np.int64],
        starts: npt.NDArray[np.int32],
        ends: npt.NDArray[np.int32],
        end_codes: npt.NDArray[np.int8],
        opened_codes: npt.NDArray[np.int8],
    ) -> None:
        n = len(keys)
        if n and np.any((keys[1:] < keys[:-1]) | ((keys[1:] == keys[:-1]) & (starts[1:] < starts[:-1]))):
            raise ValueError("tenures must be sorted by (number, start)")
        self.starts, self.ends, self.end_codes = starts, ends, end_codes
        bounds = np.flatnonzero(keys[1:] != keys[:-1]) + 1 if n else np.empty(0, np.int64)
        self.first = np.concatenate(([0], bounds)).astype(np.int64) if n else np.empty(0, np.int64)
        self.numbers = keys[self.first] if n else np.empty(0, np.int64)
        number_of = np.repeat(np.arange(len(self.first)), np.diff(np.append(self.first, n)))
        self._packed = number_of.astype(np.int64) << 32 | (starts.astype(np.int64) + _DAY_BIAS)
        changing = np.isin(end_codes, [END_REASONS.index(r) for r in CHANGING_ENDS])
        change = np.where(changing, ends, _NEVER)
        reissued = opened_codes == OPENED_BY.index("reissue")
        change = np.maximum(change, np.where(reissued, starts - 1, _NEVER))
        self.last_change = np.maximum.reduceat(change, self.first) if n else np.empty(0, np.int32)
        self.first_day = (
            self._first_days(starts, end_codes, opened_codes, number_of) if n else np.empty(0, np.int32)
        )

    def _first_days(
        self,
        starts: npt.NDArray[np.int32],
        end_codes: npt.NDArray[np.int8],
        opened_codes: npt.NDArray[np.int8],
        number_of: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int32]:
        """Rule 3 per number: the first tenure's start, or the latest start after a port."""
        prev_port = np.concatenate(([False], end_codes[:-1] == END_REASONS.index("port_out")))
        same_number = np.concatenate(([False], number_of[1:] == number_of[:-1]))
        reissue = opened_codes == OPENED_BY.index("reissue")
        restart = (opened_codes == OPENED_BY.index("port_in")) | (prev_port & same_number & ~reissue)
        restart[self.first] = True
        return np.maximum.reduceat(np.where(restart, starts, _NEVER), self.first).astype(np.int32)

    def verdicts(
        self, keys: npt.NDArray[np.int64], days: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int32]]:
        """Verdict codes and, for NO_DATA, the first answerable day, for aligned keys and days."""
        out = np.full(len(keys), Verdict.NOT_OURS, dtype=np.int8)
        first = np.full(len(keys), _NEVER, dtype=np.int32)
        if not len(self.numbers) or not len(keys):
            return out, first
        at = np.minimum(np.searchsorted(self.numbers, keys), len(self.numbers) - 1)
        ours = self.numbers[at] == keys
        changed = ours & (self.last_change[at] >= days)
        early = ours & ~changed & (days < self.first_day[at])
        rest = ours & ~changed & ~early
        j = np.searchsorted(
            self._packed, at.astype(np.int64) << 32 | (days.astype(np.int64) + _DAY_BIAS), "right"
        )
        j = np.maximum(j - 1, 0)
        open_ = self.ends[j] == _OPEN
        ported = self.end_codes[j] == END_REASONS.index("port_out")
        out[changed] = Verdict.TRUE
        out[early] = Verdict.NO_DATA
        first[early] = self.first_day[at][early]
        out[rest & open_] = Verdict.FALSE
        out[rest & ~open_ & ~ported] = Verdict.TRUE
        return out, first
