"""Reminding the prior owner: receipts that make reminders effective, the schedule with its
fallbacks, rendered texts (zh-CN/en) in the outbox with idempotency keys, the channel adapters
(SMTP, HTTP SMS, letter batch) and sending.

Steps of the night (see :mod:`pipelines.lifecycle` for the order): :func:`apply_receipts`
(``receipts``), :func:`schedule_reminders` (``schedule``) and :func:`send_reminders`
(``send``). Reminder ids are deterministic (``'R' + sha256(tenure|disconnected_on|slot|channel)[:20]``)
and are the outbox idempotency key, so a rerun never schedules, renders or sends a reminder
twice. Owns the tables in :mod:`pipelines.reminders.schema`.
"""

from pipelines.reminders.ids import reminder_id
from pipelines.reminders.receipts import ReceiptsReport, apply_receipts
from pipelines.reminders.schedule import ScheduleReport, schedule_reminders
from pipelines.reminders.send import SendReport, send_reminders

__all__ = [
    "ReceiptsReport",
    "ScheduleReport",
    "SendReport",
    "apply_receipts",
    "reminder_id",
    "schedule_reminders",
    "send_reminders",
]
