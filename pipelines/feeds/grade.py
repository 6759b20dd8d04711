"""The risk grade of a recycled number: how hard a platform should step up for its new holder.

One function, :func:`risk_grade`, decides it from four facts of the number's latest release or
reissue (the latest row the recycled feed lists for it):

* ``reminders_reached``: effective reminders that reached the prior owner, capped at 2 (the
  regulators' "at least two"): 0, 1 or 2 (meaning 2 or more);
* ``release_exception``: the release needed a compliance exception (``max_hold_days`` ran out);
* ``violation``: the number was reissued before the release gate let it go;
* ``prior_port``: the prior tenure ended by a port-out (the number came back and was sold; its
  prior subscriber was never this carrier's to remind).

and the ``level`` that sums them up for a bank: **high** when the prior owner was never reached
(or was not ours to reach) or the reissue was a violation, **medium** when reached once or
released by exception, **low** otherwise. Every interface (the feed's columns, the bulk answer,
the query snapshot) reads the grade through :data:`GRADES` / :func:`grade_code`, so the rule
lives only here; the arrays form is a lookup into the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GRADES", "LEVELS", "RiskGrade", "grade_code", "grade_codes", "risk_grade"]

LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class RiskGrade:
    reminders_reached: int  # 0, 1, or 2 for "2 or more"
    release_exception: bool
    violation: bool
    prior_port: bool

    @property
    def level(self) -> str:
        if self.violation or self.prior_port or self.reminders_reached == 0:
            return "high"
        if self.reminders_reached == 1 or self.release_exception:
            return "medium"
        return "low"

    def to_json(self) -> dict[str, Any]:
        """The bulk answer's form (camelCase, as the rest of the API)."""
        return {
            "level": self.level,
            "remindersReached": self.reminders_reached,
            "releaseException": self.release_exception,
            "violation": self.violation,
            "priorPort": self.prior_port,
        }


def grade_code(reached: int, exception: bool, violation: bool, prior_port: bool) -> int:
    """The grade's index in :data:`GRADES` (reached is capped at 2): :func:`grade_codes` of one."""
    one = grade_codes(
        np.array([reached]), np.array([exception]), np.array([violation]), np.array([prior_port])
    )
    return int(one[0])


GRADES: tuple[RiskGrade, ...] = tuple(
    RiskGrade(r, e, v, p)
    for r in range(3)
    for e in (False, True)
    for v in (False, True)
    for p in (False, True)
)


def risk_grade(
    effective_reminders: int, exception: bool, violation: bool, prior_end: str | None
) -> RiskGrade:
    """The grade of a release or reissue (see the module doc)."""
    return GRADES[grade_code(effective_reminders, exception, violation, prior_end == "port_out")]


def grade_codes(
    effective: npt.NDArray[np.int64],
    exception: npt.NDArray[np.bool_],
    violation: npt.NDArray[np.bool_],
    prior_port: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int8]:
    """:func:`grade_code` over arrays (a night's feed rows, a snapshot's numbers)."""
    reached = np.clip(effective, 0, 2)
    return np.asarray(reached * 8 + exception * 4 + violation * 2 + prior_port, dtype=np.int8)
