"""What happened on a logical date: per-file counts and the run's outcome, for operators."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.config import Settings
from pipelines.db import open_state
from pipelines.layout import Layout
from pipelines.nightly.steps import step_names


def day_status(settings: Settings, day: dt.date) -> dict[str, Any]:
    """Files ingested for ``day`` with counts and quarantine reasons, and which steps completed."""
    layout = Layout(settings.data_dir)
    files: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if layout.state_db.exists():
        with open_state(layout.state_db, read_only=True) as con:
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
            for name, kind, sha, st, rows_in, acc, quar, err in rows:
                files.append(
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
                )
            extra = _lifecycle_figures(con, day)
    steps_dir = layout.run_dir(day) / "steps"
    done = [s for s in step_names() if (steps_dir / f"{s}.json").exists()]
    missing = [s for s in step_names() if s not in done]
    failed_files = [f["file_name"] for f in files if f["status"] == "failed"]
    if not done:
        outcome = "not run"
    elif missing:
        outcome = f"incomplete: missing steps {', '.join(missing)}"
    elif failed_files:
        outcome = f"complete with failed files: {', '.join(failed_files)}"
    else:
        outcome = "complete"
    ingest_report: dict[str, Any] = {}
    if (steps_dir / "ingest.json").exists():
        ingest_report = json.loads((steps_dir / "ingest.json").read_text())
    return {
        "date": day.isoformat(),
        "outcome": outcome,
        "steps_done": done,
        "files": files,
        "ingest_report": ingest_report.get("ingest", {}),
        **extra,
    }


def _lifecycle_figures(con: Any, day: dt.date) -> dict[str, Any]:
    try:
        from pipelines.lifecycle import lifecycle_status
    except ImportError:
        return {}
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "number_state" not in tables:
        return {}
    return {"lifecycle": lifecycle_status(con, day)}


def render_lifecycle(life: dict[str, Any], console: Console) -> None:
    """Operator tables: numbers by state, the release gate and reissues, reminders by channel."""
    states = Table(title="numbers by state (last night)")
    for state in ("active", "suspended", "frozen", "held", "available", "ported_out"):
        states.add_column(state, justify="right")
    by_state = life["numbers"]["by_state"]
    states.add_row(
        *(
            str(by_state.get(s, 0))
            for s in ("active", "suspended", "frozen", "held", "available", "ported_out")
        )
    )
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
    rem = Table(title="reminders by channel and status")
    rem.add_column("channel")
    for st in statuses:
        rem.add_column(st, justify="right")
    for channel, figures in sorted(life["reminders"]["by_channel"].items()):
        rem.add_row(channel, *(str(figures["by_status"].get(st, 0)) for st in statuses))
    console.print(rem)
