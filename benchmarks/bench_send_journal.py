"""The send journal's cost per message, and what a DuckDB commit per message would cost instead.
Run: ``python benchmarks/bench_send_journal.py`` (docs/lifecycle.md, "Sending, and never twice").
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

import duckdb

from pipelines.reminders.channels import SendResult
from pipelines.reminders.journal import SendJournal, send_journal_path

MESSAGES = 100_000
BATCH = 1000  # send_reminders' batch: one fsync each
COMMITS = 300


def main() -> None:
    at = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    results = [SendResult(f"R{i:020x}", "sms", f"sim-{i:016x}", at) for i in range(MESSAGES)]
    with tempfile.TemporaryDirectory(prefix="journal-", dir=Path.cwd()) as tmp:
        with SendJournal(send_journal_path(Path(tmp), at.date())) as journal:
            started = time.perf_counter()
            for i, result in enumerate(results, 1):
                journal.record(result)
                if i % BATCH == 0:
                    journal.sync()
            per_message = (time.perf_counter() - started) / MESSAGES
        con = duckdb.connect(str(Path(tmp) / "state.duckdb"))
        con.execute("CREATE TABLE sent (reminder_id VARCHAR, provider_ref VARCHAR)")
        started = time.perf_counter()
        for result in results[:COMMITS]:
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT INTO sent VALUES (?, ?)", [result.reminder_id, result.provider_ref])
            con.execute("COMMIT")
        per_commit = (time.perf_counter() - started) / COMMITS
        con.close()
    print(f"send journal: {per_message * 1e6:.1f} µs a message ({MESSAGES:,}, fsync every {BATCH})")
    print(f"a DuckDB commit per message instead: {per_commit * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
