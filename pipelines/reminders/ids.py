"""What every reminders module shares: the deterministic reminder id, the states in which the
prior owner is still reminded (and in which a number is closing) as SQL, and temp tables filled
from Python rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from pipelines.db import Con, sql_str
from pipelines.lifecycle.sql import REMINDING_STATES, run_sql

REMINDING_SQL = "(" + ", ".join(sql_str(s) for s in REMINDING_STATES) + ")"
# States of a number whose own tenure is closing: its prior owner is being reminded, or it
# waits to be sold again. Such a number is never an SMS address of a reminder.
CLOSING_SQL = "(" + ", ".join(sql_str(s) for s in (*REMINDING_STATES, "available")) + ")"


def reminder_id(tenure_id: str, disconnected_on: dt.date, slot: str, channel: str) -> str:
    """Deterministic reminder id; equals the SQL ``nr_reminder_id`` (``lifecycle.expand_sql``)."""
    key = f"{tenure_id}|{disconnected_on.isoformat()}|{slot}|{channel}"
    return "R" + hashlib.sha256(key.encode()).hexdigest()[:20]


def temp_table_from_rows(con: Con, name: str, rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> None:
    """``CREATE OR REPLACE TEMP TABLE name`` holding ``rows``, through an Arrow view ``<name>_arrow``."""
    view = f"{name}_arrow"
    con.register(view, pa.Table.from_pylist(list(rows), schema=schema))
    try:
        run_sql(con, f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {view}")
    finally:
        con.unregister(view)
