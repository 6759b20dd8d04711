"""Reminding the prior owner: receipts that make reminders effective, the schedule with its
fallbacks, rendered texts (zh-CN/en) in the outbox with idempotency keys, and the channel
adapters (SMTP, HTTP SMS, letter batch). Owns the tables in :mod:`pipelines.reminders.schema`.
"""

from pipelines.reminders.core import (
    ReceiptsReport,
    ScheduleReport,
    SendReport,
    apply_receipts,
    reminder_id,
    schedule_reminders,
    send_reminders,
)

__all__ = [
    "ReceiptsReport",
    "ScheduleReport",
    "SendReport",
    "apply_receipts",
    "reminder_id",
    "schedule_reminders",
    "send_reminders",
]
