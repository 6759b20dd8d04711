"""`recycle show`'s timeline: a number's record (:func:`pipelines.lifecycle.number_history`) as
dated rows — tenures, state transitions, reminders, receipts, releases, reissues — with every
number and contact masked, so a screen of it can be pasted into a ticket."""

from __future__ import annotations

from typing import NamedTuple

from rich.console import Console
from rich.table import Table

from pipelines.lifecycle.views import NumberHistory, ReminderRow
from pipelines.numbers import mask, mask_contact

__all__ = ["TimelineRow", "render_timeline", "timeline_rows"]

# Rows of one date in the order things happen on a day: a tenure opens, the state changes,
# a reminder goes out, its receipt comes back, the number is released, then reissued.
_ORDER = {"tenure": 0, "state": 1, "reminder": 2, "receipt": 3, "release": 4, "reissue": 5, "end": 6}


class TimelineRow(NamedTuple):
    on: str  # ISO date (a receipt: its UTC timestamp to the minute, for the order within a day)
    tenure: str  # the tenure id, shortened for the table
    kind: str  # one of _ORDER's keys
    event: str
    detail: str


def _tenure(tenure_id: str | None) -> str:
    return "" if not tenure_id else tenure_id[:9]


def timeline_rows(history: NumberHistory) -> list[TimelineRow]:
    """Everything on record about the number, oldest first; contacts masked."""
    rows: list[TimelineRow] = []
    for t in history["tenures"]:
        contacts = ", ".join(mask_contact(c) for c in (t["contact_email"], t["contact_phone"]) if c)
        rows.append(
            TimelineRow(
                t["tenure_start"],
                _tenure(t["tenure_id"]),
                "tenure",
                "tenure starts",
                f"region {t['region']}, opened by {t['opened_by']}; contacts: {contacts or 'none'}",
            )
        )
        if t["tenure_end"]:
            rows.append(
                TimelineRow(
                    t["tenure_end"], _tenure(t["tenure_id"]), "end", "tenure ends", t["end_reason"] or ""
                )
            )
    for h in history["history"]:
        late = "" if h["logical_date"] == h["on_date"] else f" (night of {h['logical_date']})"
        rows.append(
            TimelineRow(
                h["on_date"],
                _tenure(h["tenure_id"]),
                "state",
                f"{h['from_state'] or '-'} -> {h['to_state']}",
                f"{h['cause']}{late}",
            )
        )
    for r in history["reminders"]:
        rows.extend(_reminder_rows(r))
    for rel in history["releases"]:
        exception = "; released WITH EXCEPTION (too few)" if rel["exception"] else ""
        rows.append(
            TimelineRow(
                rel["released_on"],
                _tenure(rel["tenure_id"]),
                "release",
                "released",
                f"{rel['effective_reminders']} effective reminder(s){exception}",
            )
        )
    for reis in history["reissues"]:
        violation = "VIOLATION: reissued before release" if reis["violation"] else "after release"
        rows.append(
            TimelineRow(
                reis["reissue_date"],
                _tenure(reis["new_tenure_id"]),
                "reissue",
                "reissued",
                f"{violation}; prior tenure {_tenure(reis['prior_tenure_id']) or 'unknown'}",
            )
        )
    return sorted(rows, key=lambda row: (row.on[:10], _ORDER[row.kind], row.on))


def _reminder_rows(r: ReminderRow) -> list[TimelineRow]:
    """A reminder on its due date (status, sent, effective, where to), then each receipt."""
    parts = [r["status"]]
    if r["sent_on"]:
        parts.append(f"sent {r['sent_on']}")
    if r["effective_on"]:
        parts.append(f"effective {r['effective_on']}")
    parts.append(f"to {mask_contact(r['address'])}" + (" (final)" if r["final"] else ""))
    detail = "; ".join(parts)
    if r["outbox_last_error"] and r["status"] == "failed":
        detail += f"; last error: {r['outbox_last_error']}"
    rows = [
        TimelineRow(
            r["due_on"],
            _tenure(r["tenure_id"]),
            "reminder",
            f"reminder {r['reminder_no']} {r['channel']}",
            detail,
        )
    ]
    for rc in r["receipts"]:
        at = rc["at"][:16].replace("T", " ")
        rows.append(
            TimelineRow(
                at,
                _tenure(r["tenure_id"]),
                "receipt",
                f"receipt {rc['channel']}",
                f"{rc['status']} at {at[11:]} UTC, reminder {r['reminder_no']}",
            )
        )
    return rows


def render_timeline(history: NumberHistory, console: Console) -> None:
    """The timeline table, the current state above it and where to look next below it."""
    number = mask(history["msisdn"])
    state = history["state"]
    now = "no current state" if state is None else f"{state['state']} since {state['since']}"
    if state is not None and state["freeze_ends"] and state["state"] in ("suspended", "frozen", "held"):
        now += f", freeze ends {state['freeze_ends']}"
    table = Table(title=f"{number}: {now}")
    table.add_column("date", no_wrap=True)
    table.add_column("tenure", no_wrap=True)
    table.add_column("event")
    table.add_column("detail", overflow="fold")
    for row in timeline_rows(history):
        table.add_row(row.on[:10], row.tenure, row.event, row.detail)
    console.print(table)
    if history["quarantined"]:
        console.print(f"{len(history['quarantined'])} quarantined row(s) name this number: see --json")
    console.print(
        f"ledger entries: {len(history['ledger_events'])}; their proofs: "
        "recycle evidence --number NUMBER --out DIR",
        highlight=False,
    )
