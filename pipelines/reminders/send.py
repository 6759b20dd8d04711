"""Step ``send``: the pending outbox through the channel adapters in batches; what each gateway
accepted or refused is recorded with the reminder and queued for the ledger.

No second send: each acceptance is appended to the night's send journal as it is heard
(:mod:`pipelines.reminders.journal`), the outbox is committed once per batch, and a rerun first
records the journal's acceptances that the state file missed (a kill inside a batch).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.config import Settings
from pipelines.db import Con, transaction
from pipelines.errors import TransientError
from pipelines.lifecycle.queue import queue_ledger
from pipelines.lifecycle.sql import drop_tables, run_sql, working_copy
from pipelines.reminders.channels import (
    BatchOutcome,
    Channel,
    OutgoingReminder,
    SendResult,
    send_with_retry,
)
from pipelines.reminders.holder_notice import record_holder_notice_results
from pipelines.reminders.ids import temp_table_from_rows
from pipelines.reminders.journal import SendJournal, read_send_journal, send_journal_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendReport:
    day: dt.date
    attempted: int
    sent: int
    failed: int  # permanent (or retried for too many nights): fallback at the next schedule step
    retry_later: int  # transient: tried again on the next run
    no_channel: int  # pending rows for a channel the caller did not pass
    batches: int
    from_journal: int = 0  # accepted by a gateway in a killed run, recorded from the send journal


# The temp tables of one send_reminders call: each created by the phase named, all dropped
# together when the call ends.
_TEMP_TABLES = (
    "_send",  # the pending outbox rows to try today, numbered per channel: _find_pending
    #           (renumbered without the journal's acceptances by _replay_journal)
    "_st",  # the tenures of their reminders: _read_ledger_facts
    "_sinfo",  # what the ledger entry of each sent reminder carries: _read_ledger_facts
    "_outcomes",  # the run's results appended per batch, emptied by each merge: _record_batch
    "_res",  # the results being merged: _merge_outcomes, _replay_journal
)

_RESULT_SCHEMA = pa.schema(
    [
        ("reminder_id", pa.string()),
        ("result", pa.string()),
        ("provider_ref", pa.string()),
        ("error", pa.string()),
    ]
)

# --------------------------------------------------------------------------- send


def send_reminders(
    con: Con,
    settings: Settings,
    day: dt.date,
    channels: Mapping[str, Channel],
    *,
    journal_dir: Path | None = None,
    batch_size: int = 1000,
    attempts: int = 3,
    backoff_s: float = 0.5,
    give_up_after_nights: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Send pending outbox rows due by ``day`` through ``channels`` (name → Channel).

    Call it OUTSIDE a transaction: it commits after every batch, so what a gateway accepted is
    recorded even if a later batch fails. Rows tried on ``day`` already are skipped, so a rerun
    sends nothing twice; with ``journal_dir`` (the nightly step always gives it) every acceptance
    is journaled before the next message goes out and replayed first, so a rerun after a kill
    inside a batch sends nothing twice either. Transient failures wait for the next run, and
    after ``give_up_after_nights`` nights count as permanent. A permanent failure marks the
    reminder failed; the next schedule step falls back to the owner's next channel. Every send
    queues a ``reminder_sent`` ledger event.
    """
    del settings  # channels are built by the caller from the settings
    _find_pending(con, day)
    _read_ledger_facts(con)
    journal, replayed = _open_journal(con, day, journal_dir)
    per_channel = _pending_per_channel(con)
    no_channel = _warn_about_missing_channels(per_channel, channels)
    counts = dict.fromkeys(("attempted", "sent", "failed", "retry", "batches"), 0)
    _new_outcomes(con)
    try:
        for name in sorted(str(c) for c in per_channel if c in channels):
            for start in range(1, int(per_channel[name]) + 1, batch_size):
                batch, nights = _read_batch(con, name, start, batch_size)
                outcome = send_with_retry(
                    channels[name],
                    batch,
                    attempts=attempts,
                    backoff_s=backoff_s,
                    sleep=sleep,
                    on_accepted=journal.record if journal else None,
                )
                if journal:
                    journal.sync()
                s, f, t = _record_batch(con, batch, outcome, nights, give_up_after_nights)
                for key, n in (("sent", s), ("failed", f), ("retry", t), ("attempted", len(batch))):
                    counts[key] += n
                counts["batches"] += 1
                if journal is None or journal.error is not None:
                    _merge_outcomes(con, day)  # no journal to replay: the state file holds each batch
                _stop_if_unjournaled(journal, day)
        _merge_outcomes(con, day)
    finally:
        if journal:
            journal.close()
        drop_tables(con, _TEMP_TABLES)
    c = counts
    return SendReport(
        day, c["attempted"], c["sent"], c["failed"], c["retry"], no_channel, c["batches"], replayed
    )


def _open_journal(con: Con, day: dt.date, journal_dir: Path | None) -> tuple[SendJournal | None, int]:
    """The night's journal, opened to append after its missed acceptances were recorded (how many)."""
    if journal_dir is None:
        return None, 0
    path = send_journal_path(journal_dir, day)
    replayed = _replay_journal(con, day, read_send_journal(path, day))
    return SendJournal(path), replayed


def _replay_journal(con: Con, day: dt.date, accepted: Mapping[str, SendResult]) -> int:
    """Record as sent the journal's acceptances whose outbox rows are still pending (a run killed
    inside a batch) and take them out of ``_send``; returns how many. O(journal) once per run."""
    if not accepted:
        return 0
    missed = run_sql(
        con,
        "SELECT reminder_id FROM _send WHERE reminder_id IN (SELECT unnest($ids)) ORDER BY reminder_id",
        {"ids": list(accepted)},
    ).fetchall()
    if not missed:
        return 0
    results = [
        {"reminder_id": rid, "result": "sent", "provider_ref": accepted[rid].provider_ref, "error": None}
        for (rid,) in missed
    ]
    with transaction(con):
        _write_results(con, day, results)
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _send AS
        SELECT * EXCLUDE (rn), row_number() OVER (PARTITION BY channel ORDER BY reminder_id) AS rn
        FROM _send ANTI JOIN _res USING (reminder_id)
        ORDER BY channel, rn
        """,
    )
    log.warning(
        "%d reminder(s) accepted by a gateway in an earlier, interrupted run of %s were recorded from "
        "the send journal and are not sent again",
        len(results),
        day,
    )
    return len(results)


def _stop_if_unjournaled(journal: SendJournal | None, day: dt.date) -> None:
    """Stop the night when the journal could not be written: the batch just recorded is safe in
    the state file, but the next one's acceptances would survive no kill."""
    if journal is not None and journal.error is not None:
        raise TransientError(
            f"could not write the send journal {journal.path} ({journal.error}); the last batch is "
            "recorded and nothing more was sent. Free disk space or fix the directory's permissions, "
            f"then run: recycle run --date {day.isoformat()}"
        )


def _find_pending(con: Con, day: dt.date) -> None:
    run_sql(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _send AS
        SELECT *, row_number() OVER (PARTITION BY channel ORDER BY reminder_id) AS rn
        FROM (SELECT reminder_id, channel, contact_open(address) AS address, language, subject, text,
                     due_on, html, attempts
              FROM outbox
              WHERE status = 'pending' AND due_on <= $d
                AND (last_attempt_on IS NULL OR last_attempt_on < $d))
        WHERE address IS NOT NULL  -- NULL: opened to nothing, its key was erased (never sent)
        ORDER BY channel, rn
        """,
        {"d": day},
    )


def _read_ledger_facts(con: Con) -> None:
    # What the ledger entry of a sent reminder carries, read once for the run instead of
    # joining the ten-million-row tenures for every batch; none of it changes while sending.
    with transaction(con):
        working_copy(
            con,
            "_st",
            "tenures",
            "tenure_id",
            "SELECT m.tenure_id FROM reminders m SEMI JOIN _send USING (reminder_id)",
            "t.tenure_id, t.tenure_start, t.tenure_end",
        )
        run_sql(
            con,
            """
            CREATE OR REPLACE TEMP TABLE _sinfo AS
            SELECT m.reminder_id, m.msisdn, m.tenure_id, t.tenure_start,
                   coalesce(t.tenure_end, m.disconnected_on) AS tenure_end, m.channel, m.slot,
                   m.reminder_no, m.final, m.due_on, m.disconnected_on
            FROM reminders m SEMI JOIN _send USING (reminder_id)
            JOIN _st t ON t.tenure_id = m.tenure_id
            """,
        )


def _pending_per_channel(con: Con) -> dict[str, int]:
    return dict(run_sql(con, "SELECT channel, count(*) FROM _send GROUP BY channel").fetchall())


def _warn_about_missing_channels(per_channel: Mapping[str, int], channels: Mapping[str, Channel]) -> int:
    """Log the pending rows no adapter of this run can send; returns how many there are."""
    no_channel = sum(int(n) for ch, n in per_channel.items() if ch not in channels)
    if no_channel:
        log.warning(
            "%d pending reminder(s) for channel(s) %s that this run has no adapter for; they stay pending",
            no_channel,
            ", ".join(sorted(str(c) for c in per_channel if c not in channels)),
        )
    return no_channel


def _read_batch(
    con: Con, channel: str, start: int, batch_size: int
) -> tuple[list[OutgoingReminder], dict[str, int]]:
    """The ``batch_size`` rows of ``channel`` from number ``start`` on, and the night each is tried."""
    rows = run_sql(
        con,
        """
        SELECT reminder_id, channel, address, language, subject, text, due_on, html, attempts
        FROM _send WHERE channel = $ch AND rn BETWEEN $a AND $b ORDER BY rn
        """,
        {"ch": channel, "a": start, "b": start + batch_size - 1},
    ).fetchall()
    batch = [
        OutgoingReminder(
            reminder_id=r[0],
            channel=r[1],
            to=r[2],
            language=r[3],
            subject=r[4],
            text=r[5],
            due_on=r[6],
            html=r[7],
        )
        for r in rows
    ]
    return batch, {r[0]: int(r[8]) + 1 for r in rows}


def _new_outcomes(con: Con) -> None:
    """``_outcomes``: the run's results not yet in the outbox (see :func:`_record_batch`)."""
    run_sql(
        con,
        "CREATE OR REPLACE TEMP TABLE _outcomes "
        "(reminder_id VARCHAR, result VARCHAR, provider_ref VARCHAR, error VARCHAR)",
    )


def _record_batch(
    con: Con,
    batch: Sequence[OutgoingReminder],
    outcome: BatchOutcome,
    nights: Mapping[str, int],
    give_up_after_nights: int,
) -> tuple[int, int, int]:
    """Append what the gateway did with ``batch`` to ``_outcomes``; returns (sent, failed, retry).

    O(batch): an append to a temp table. The outbox, the reminders and the ledger queue take the
    run's outcomes in ONE merge (:func:`_merge_outcomes`), because each UPDATE joins the whole
    outbox or reminders table: merged per batch that was a scan of both per 1,000 reminders.
    Measured with a null channel, 50,000 pending on a 3M-row outbox, reminders, tenures and
    ledger queue (load 4.3-4.7 on the shared 2 cores; ``benchmarks/bench_night.py
    --bookkeeping``): 578 µs a reminder wall, 240 µs CPU merged per batch; 48 µs wall, 38 µs CPU
    merged once (with the faster journal line and reminder check). Safe: every acceptance
    is in the send journal before the next message goes out, so a run killed before the merge is
    finished by the next one (:func:`_replay_journal`); its failures are simply tried again.
    """
    results = _batch_results(batch, outcome, nights, give_up_after_nights)
    con.register("_outcomes_arrow", pa.Table.from_pylist(results, schema=_RESULT_SCHEMA))
    try:
        run_sql(con, "INSERT INTO _outcomes SELECT * FROM _outcomes_arrow")
    finally:
        con.unregister("_outcomes_arrow")
    counts = {"sent": 0, "failed": 0, "retry": 0}
    for res in results:
        counts[str(res["result"])] += 1
    return counts["sent"], counts["failed"], counts["retry"]


def _merge_outcomes(con: Con, day: dt.date) -> None:
    """The appended outcomes into the outbox, the reminders and the ledger queue, in one
    transaction; ``_outcomes`` is then empty again."""
    if not run_sql(con, "SELECT count(*) FROM _outcomes").fetchone()[0]:  # type: ignore[index]
        return
    with transaction(con):
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _res AS SELECT * FROM _outcomes ORDER BY reminder_id")
        _apply_results(con, day)
        run_sql(con, "DELETE FROM _outcomes")


def _batch_results(
    batch: Sequence[OutgoingReminder],
    outcome: BatchOutcome,
    nights: Mapping[str, int],
    give_up_after_nights: int,
) -> list[dict[str, Any]]:
    """One result per reminder of ``batch`` (sent, failed or retry), by reminder id."""
    results: dict[str, dict[str, Any]] = {}
    for failure in outcome.failed:
        permanent = failure.permanent or nights[failure.reminder_id] >= give_up_after_nights
        results[failure.reminder_id] = {
            "reminder_id": failure.reminder_id,
            "result": "failed" if permanent else "retry",
            "provider_ref": None,
            "error": ("" if failure.permanent else f"transient for {nights[failure.reminder_id]} night(s): ")
            + failure.reason,
        }
    for ok in outcome.sent:
        results[ok.reminder_id] = {
            "reminder_id": ok.reminder_id,
            "result": "sent",
            "provider_ref": ok.provider_ref,
            "error": None,
        }
    for r in batch:
        # A channel that reports nothing for a reminder has not sent it: try again next run.
        results.setdefault(
            r.reminder_id,
            {
                "reminder_id": r.reminder_id,
                "result": "retry",
                "provider_ref": None,
                "error": "the channel reported no outcome",
            },
        )
    return sorted(results.values(), key=lambda x: str(x["reminder_id"]))


def _write_results(con: Con, day: dt.date, results: list[dict[str, Any]]) -> None:
    """``_res`` from ``results``; the outbox rows and reminders updated, the sends queued."""
    temp_table_from_rows(con, "_res", results, _RESULT_SCHEMA)
    _apply_results(con, day)


def _apply_results(con: Con, day: dt.date) -> None:
    """The outbox rows and reminders of ``_res`` updated, its sends queued for the ledger."""
    p = {"d": day}
    run_sql(
        con,
        """
        UPDATE outbox SET
            status = CASE r.result WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'failed' ELSE 'pending' END,
            attempts = outbox.attempts + 1, last_attempt_on = $d, last_error = r.error
        FROM _res r WHERE outbox.reminder_id = r.reminder_id
        """,
        p,
    )
    run_sql(
        con,
        """
        UPDATE reminders SET
            status = CASE WHEN reminders.status <> 'scheduled' THEN reminders.status
                          WHEN r.result = 'sent' THEN 'sent'
                          WHEN r.result = 'failed' THEN 'failed' ELSE 'scheduled' END,
            sent_on = CASE WHEN r.result = 'sent' THEN $d ELSE reminders.sent_on END,
            -- The schedule step of this night has run: fall back at the next one.
            fallback_due = CASE WHEN reminders.status = 'scheduled' AND r.result = 'failed'
                                THEN $d + 1 ELSE reminders.fallback_due END,
            provider_ref = coalesce(reminders.provider_ref, r.provider_ref),
            attempts = reminders.attempts + 1
        FROM _res r WHERE reminders.reminder_id = r.reminder_id
        """,
        p,
    )
    queue_ledger(
        con,
        day,
        """
        SELECT concat('reminder_sent:', m.reminder_id), $d, 'reminder_sent', m.msisdn, m.tenure_id,
               m.tenure_start, m.tenure_end,
               json_object('reminder_id', m.reminder_id, 'channel', m.channel, 'slot', m.slot,
                           'reminder_no', m.reminder_no, 'final', m.final, 'due_on', m.due_on,
                           'sent_on', $d, 'provider_ref', r.provider_ref,
                           'disconnected_on', m.disconnected_on)
        FROM _res r JOIN _sinfo m USING (reminder_id)
        WHERE r.result = 'sent'
        """,
    )
    record_holder_notice_results(con, day)  # the new holder's notices have no reminders row
