"""What happened on a logical date: per-file counts and the run's outcome, for operators."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from rich.console import Console
from rich.table import Table

from pipelines.config import Settings
from pipelines.db import Con, open_state
from pipelines.layout import Layout
from pipelines.lifecycle import STATES, LifecycleStatus, lifecycle_status
from pipelines.nightly.preflight import read_record, steps_done
from pipelines.nightly.steps import steps_here


class FileStatus(TypedDict):
    """One drop file of the day as ingest recorded it."""

    file_name: str
    kind: str
    sha256: str
    status: str  # ingested | failed
    rows_in: int
    accepted: int
    quarantined: int
    quarantined_by_reason: dict[str, int]
    error: str | None


class DayStatus(TypedDict):
    date: str
    outcome: str  # not run | incomplete: ... | complete with failed files: ... | complete
    steps_done: list[str]
    files: list[FileStatus]
    ingest_report: dict[str, Any]  # the ingest step's report, as its step file holds it
    lifecycle: NotRequired[LifecycleStatus]  # absent while there is no state (no night has run)
    preflight: NotRequired[dict[str, Any]]  # the night's recorded grounds (an --empty-night waiver)


def day_status(settings: Settings, day: dt.date) -> DayStatus:
    """Files ingested for ``day`` with counts and quarantine reasons, and which steps completed."""
    layout = Layout(settings.data_dir)
    files: list[FileStatus] = []
    life: LifecycleStatus | None = None
    if layout.state_db.exists():
        with open_state(layout.state_db, read_only=True) as con:
            files = _files(con, day)
            life = _lifecycle_figures(con, day)
    steps_dir = layout.run_dir(day) / "steps"
    done = steps_done(layout, day, steps_here(settings))
    ingest_report: dict[str, Any] = {}
    if (steps_dir / "ingest.json").exists():
        ingest_report = json.loads((steps_dir / "ingest.json").read_text())
    status: DayStatus = {
        "date": day.isoformat(),
        "outcome": _outcome(done, files, steps_here(settings)),
        "steps_done": done,
        "files": files,
        "ingest_report": ingest_report.get("ingest", {}),
    }
    preflight = read_record(layout, day)
    if preflight is not None:
        status["preflight"] = preflight
    # The state holds the latest night's figures: a date no step ran for must not show them.
    if life is not None and done:
        status["lifecycle"] = life
    return status


def _files(con: Con, day: dt.date) -> list[FileStatus]:
    """The drop files of ``day``, each with its ingest quarantine counts by reason."""
    rows = con.execute(
        """
        SELECT file_name, kind, sha256, status, rows_in, accepted, quarantined, error
        FROM files WHERE logical_date = ? ORDER BY file_name, sha256
        """,
        [day],
    ).fetchall()
    reasons = con.execute(
        """
        SELECT file_sha256, reason, count(*) FROM quarantine
        WHERE logical_date = ? AND stage = 'ingest' GROUP BY ALL ORDER BY ALL
        """,
        [day],
    ).fetchall()
    by_file: dict[str, dict[str, int]] = {}
    for sha, reason, n in reasons:
        by_file.setdefault(sha, {})[reason] = n
    return [
        {
            "file_name": name,
            "kind": kind,
            "sha256": sha,
            "status": st,
            "rows_in": rows_in,
            "accepted": acc,
            "quarantined": quar,
            "quarantined_by_reason": by_file.get(sha, {}),
            "error": err,
        }
        for name, kind, sha, st, rows_in, acc, quar, err in rows
    ]


def _outcome(done: list[str], files: list[FileStatus], names: Sequence[str]) -> str:
    missing = [s for s in names if s not in done]
    failed_files = [f["file_name"] for f in files if f["status"] == "failed"]
    if not done:
        return "not run"
    if missing:
        return f"incomplete: missing steps {', '.join(missing)}"
    if failed_files:
        return f"complete with failed files: {', '.join(failed_files)}"
    return "complete"


def _lifecycle_figures(con: Con, day: dt.date) -> LifecycleStatus | None:
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "number_state" not in tables:
        return None
    return lifecycle_status(con, day)


def render_files(report: Mapping[str, Any], console: Console) -> None:
    """The day's drop files as a table that fits 80 columns, then each file's quarantine reasons
    and each failed file's error on lines of their own (long text wraps there, not in a cell).

    ``report`` is a :class:`DayStatus`, or the same read back from JSON. The kind is the file
    name's prefix (``lifecycle_*``), so the table leaves it out; ``--json`` has it."""
    table = Table(title=f"drop files {report['date']}")
    # A long name folds onto a second line rather than two names both ending in "lifecycl…".
    table.add_column("file", overflow="fold")
    table.add_column("status", no_wrap=True)
    for col in ("rows_in", "accepted", "quarantined"):
        table.add_column(col, justify="right", no_wrap=True)
    files = report["files"]
    for f in files:
        table.add_row(
            f["file_name"], f["status"], str(f["rows_in"]), str(f["accepted"]), str(f["quarantined"])
        )
    console.print(table)
    for f in files:
        if f["quarantined_by_reason"]:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(f["quarantined_by_reason"].items()))
            console.print(f"{f['file_name']} quarantined: {reasons}", highlight=False, soft_wrap=True)
    for f in files:
        if f["status"] == "failed":
            console.print(
                f"[red]{f['file_name']} failed:[/red] {f['error'] or 'no reason recorded'}",
                highlight=False,
                soft_wrap=True,
            )


def render_lifecycle(life: Mapping[str, Any], console: Console) -> None:
    """Operator tables: numbers by state, the release gate and reissues, reminders by channel.

    ``life`` is a :class:`~pipelines.lifecycle.LifecycleStatus`, or the same read back from JSON."""
    states = Table(title="numbers by state (last night)")
    for state in STATES:
        states.add_column(state, justify="right")
    by_state = life["numbers"]["by_state"]
    states.add_row(*(str(by_state.get(s, 0)) for s in STATES))
    console.print(states)
    gate = Table(title="release gate and reissues (all nights)")
    for col in ("released", "of which with exception", "held now", "reissued", "reissue violations"):
        gate.add_column(col, justify="right")
    rel, reis = life["releases"]["all_time"], life["reissues"]["all_time"]
    gate.add_row(
        str(rel["total"]),
        str(rel["with_exception"]),
        str(life["held"]["now"]),
        str(reis["total"]),
        str(reis["violations"]),
    )
    console.print(gate)
    statuses = ("scheduled", "sent", "delivered", "acknowledged", "failed", "expired", "cancelled")
    # A status per row and a channel per column: seven status columns did not fit 80 columns.
    rem = Table(title="reminders by status and channel")
    rem.add_column("status")
    channels = sorted(life["reminders"]["by_channel"].items())
    for channel, _ in channels:
        rem.add_column(channel, justify="right")
    for st in statuses:
        rem.add_row(st, *(str(figures["by_status"].get(st, 0)) for _, figures in channels))
    console.print(rem)
