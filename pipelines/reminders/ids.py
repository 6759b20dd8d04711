"""What every reminders module shares: the deterministic reminder id and the states in which the
prior owner is still reminded, as SQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from pipelines.db import sql_str
from pipelines.lifecycle.sql import REMINDING_STATES

REMINDING_SQL = "(" + ", ".join(sql_str(s) for s in REMINDING_STATES) + ")"


def reminder_id(tenure_id: str, disconnected_on: dt.date, slot: str, channel: str) -> str:
    """Deterministic reminder id; equals the SQL ``nr_reminder_id`` (``lifecycle.expand_sql``)."""
    key = f"{tenure_id}|{disconnected_on.isoformat()}|{slot}|{channel}"
    return "R" + hashlib.sha256(key.encode()).hexdigest()[:20]
