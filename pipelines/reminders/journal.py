"""The send journal: each gateway's acceptance on disk before the next message goes out.

The send step commits the outbox once per batch (one DuckDB transaction per 1,000 messages);
a process killed inside a batch would lose the acceptances of that batch and the next run
would send them again. So every acceptance is also appended to a per-night journal,
``<data>/outbox/journal/send_<D>.jsonl`` (0600 in a 0700 directory: it names reminders, never
a number or contact), with ONE ``os.write`` of one line per message, from the thread that
heard the gateway, before that thread hands the gateway its next message. A SIGKILL cannot
lose a completed ``write``: the bytes are in the kernel's page cache. ``fsync`` once per batch
covers power loss too, at one disk flush per 1,000 messages instead of one per message.

At the start of the send step the night's journal is replayed: an acceptance whose outbox
row is still pending is recorded as sent (with the gateway's reference) and is not sent again.

Why a journal file and not a DuckDB commit per message: a commit costs a transaction and a WAL
fsync, 1.0–3.8 ms measured on this shared 2-core machine, so 100,000 reminders would spend
minutes committing; the journal costs 21–26 µs a message (a 9 µs JSON line, a 3 µs write and
a 3.5 ms fsync per 1,000), within the 50 µs a reminder the send step may spend on bookkeeping
(``python benchmarks/bench_send_journal.py``; docs/lifecycle.md, "Sending, and never twice").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
from pathlib import Path
from types import TracebackType

from pipelines.errors import DataContractError
from pipelines.layout import open_private_append, private_dir
from pipelines.reminders.channels import CHANNELS, SendResult

log = logging.getLogger(__name__)


def send_journal_path(journal_dir: Path, day: dt.date) -> Path:
    """The send journal of night ``day``: ``<journal_dir>/send_<YYYY-MM-DD>.jsonl``."""
    return journal_dir / f"send_{day.isoformat()}.jsonl"


# Values that stand in a JSON string as they are (no quote, backslash or control character).
_PLAIN = re.compile(r"[A-Za-z0-9_.:@#+=/-]*")


def journal_line(result: SendResult) -> bytes:
    """One acceptance as one JSON line (the reminder, its channel, the gateway's reference).

    Ids and references of plain characters are written by an f-string, the rest by ``json``:
    the same bytes (a test holds them equal), 3 µs a line instead of 12 (a tenth of the send
    step's bookkeeping per reminder)."""
    at = result.accepted_at.astimezone(dt.UTC)
    if at.tzinfo is dt.UTC and all(_PLAIN.fullmatch(v) for v in (result.reminder_id, result.provider_ref)):
        stamp = at.isoformat().replace("+00:00", "Z")
        return (
            f'{{"reminder_id":"{result.reminder_id}","channel":"{result.channel}",'
            f'"provider_ref":"{result.provider_ref}","accepted_at":"{stamp}"}}\n'
        ).encode()
    return _json_line(result)


def _json_line(result: SendResult) -> bytes:
    doc = {
        "reminder_id": result.reminder_id,
        "channel": result.channel,
        "provider_ref": result.provider_ref,
        "accepted_at": result.accepted_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class SendJournal:
    """Appends acceptances to one night's journal; a context manager (the file closes at exit).

    :meth:`record` is the channels' ``on_accepted`` hook: thread-safe (the SMS channel calls it
    from its workers) and it never raises — a failed write (disk full) is kept in :attr:`error`,
    later acceptances are not written, and the send step stops after recording the batch in
    the state file (where the acceptances are then safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        self._fd = open_private_append(path)
        self._lock = threading.Lock()
        self.error: OSError | None = None

    def record(self, result: SendResult) -> None:
        line = journal_line(result)
        with self._lock:
            if self.error is not None:
                return
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write: {written} of {len(line)} bytes")
            except OSError as exc:
                self.error = exc

    def sync(self) -> None:
        """Flush the journal to the disk (once per batch: power loss, not only a kill)."""
        with self._lock:
            if self.error is None:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self.error = exc

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> SendJournal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_send_journal(path: Path, day: dt.date) -> dict[str, SendResult]:
    """The acceptances in ``path`` by reminder id (none when it does not exist).

    A last line without its newline is a write cut by power loss: it is cut off the file (so the
    next append starts a clean line) and its message counts as not heard from the gateway.
    Any other line that does not parse means the file was edited: a DataContractError naming it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        log.warning(
            "%s: its last %d byte(s) are a cut write (power loss); cutting them off — that message "
            "may be sent again",
            path,
            len(data) - complete,
        )
        os.truncate(path, complete)
    found: dict[str, SendResult] = {}
    for line_no, line in enumerate(data[:complete].splitlines(), start=1):
        result = _parse_line(line, path, line_no, day)
        found.setdefault(result.reminder_id, result)
    return found


def _parse_line(line: bytes, path: Path, line_no: int, day: dt.date) -> SendResult:
    try:
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        rid, channel, ref, at = (doc[k] for k in ("reminder_id", "channel", "provider_ref", "accepted_at"))
        if not all(isinstance(v, str) and v for v in (rid, ref, at)) or channel not in CHANNELS:
            raise ValueError(
                "reminder_id, provider_ref and accepted_at must be texts, channel one of "
                + ", ".join(CHANNELS)
            )
        return SendResult(rid, channel, ref, dt.datetime.fromisoformat(at))
    except (ValueError, KeyError) as exc:
        raise DataContractError(
            f"{path} line {line_no}: not a send journal entry ({type(exc).__name__}: {exc}); the file was "
            "changed outside the pipeline. Restore it, or move it aside (the acceptances it held are then "
            f"sent again) and run: recycle run --date {day.isoformat()}"
        ) from exc
