"""Numbers through their lives: tenures and number state from the day's snapshot rows,
lifecycle events and reissues; time advancing (suspensions become final, freezes end, the
release gate); the queue of facts for the ledger; operators' views. Owns the tables in
:mod:`pipelines.lifecycle.schema`.
"""

from pipelines.lifecycle.core import (
    STATES,
    AdvanceReport,
    EventsReport,
    advance_time,
    apply_events,
    lifecycle_status,
    number_history,
    tenure_id,
)

__all__ = [
    "STATES",
    "AdvanceReport",
    "EventsReport",
    "advance_time",
    "apply_events",
    "lifecycle_status",
    "number_history",
    "tenure_id",
]
