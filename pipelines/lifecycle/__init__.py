"""A number's life: tenures, number state, the state machine, the release gate.

The nightly run calls, for logical date D and each inside its own DuckDB transaction,
``reminders.apply_receipts`` → :func:`advance_time` (``advance``) → :func:`apply_events`
(``events``) → ``reminders.schedule_reminders`` → ``reminders.send_reminders``. Every step is
set-based SQL (a province's night is a million rows against ten million tenures), reads time
only from ``day``, and is idempotent for its day: running it again leaves every table identical.

``sql`` holds the shared SQL building blocks, ``queue`` the facts queued for the ledger,
``views`` the operators' views, typed (:class:`NumberHistory`, :class:`LifecycleStatus`). Owns
the tables in :mod:`pipelines.lifecycle.schema`; the release gate reads the reminders tables
(:mod:`pipelines.reminders.schema`) and transitions cancel unsent reminders. See
``docs/lifecycle.md`` for states, transitions, reason codes and the gate rule.
"""

from pipelines.lifecycle.advance import AdvanceReport, advance_time
from pipelines.lifecycle.events import EventsReport, apply_events
from pipelines.lifecycle.sql import STATES, tenure_id
from pipelines.lifecycle.views import LifecycleStatus, NumberHistory, lifecycle_status, number_history

__all__ = [
    "STATES",
    "AdvanceReport",
    "EventsReport",
    "LifecycleStatus",
    "NumberHistory",
    "advance_time",
    "apply_events",
    "lifecycle_status",
    "number_history",
    "tenure_id",
]
