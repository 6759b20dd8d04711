"""The night's SMPP delivery receipts: recorded as a ``receipts_*`` drop and applied the same night.

After the send step the SMPP channel closes (waiting ``receipt_grace_s`` for receipts still
owed). What arrived on the bind is first written to the next night's inbox as
``receipts_smpp-<D>-<hash>.csv`` (the record, and the way they still count if this night stops
before applying them), then applied at once by :func:`pipelines.reminders.receipts.apply_bind_receipts`
(one rule for every receipt), so the reminder is effective on its carrier day and its
``reminder_effective`` entry goes into this night's checkpoint. The next night ingests the
record and judges it again: nothing changes, the reminder is effective already.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.db import Con
from pipelines.layout import atomic_write_bytes
from pipelines.reminders.receipts import ReceiptsReport, apply_bind_receipts
from pipelines.reminders.smpp import SmppChannel
from pipelines.reminders.smpp_receipts import BindReceipt, PartReceipt

RECEIPT_COLUMNS = ("reminder_id", "channel", "status", "at", "provider_ref")


@dataclass(frozen=True)
class BindReceiptsReport:
    on_bind: int  # receipts that arrived on the bind
    applied: ReceiptsReport | None
    record: str | None  # the receipts drop they were recorded in
    late_file: str | None = None  # simulated SMSC export of receipts that came after the bind closed


def receipts_csv(receipts: Sequence[BindReceipt]) -> bytes:
    """The receipts as a ``receipts_*`` drop (DESIGN.md, Inputs), sorted, so equal sets give equal bytes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RECEIPT_COLUMNS)
    for r in sorted(receipts, key=lambda r: (r.reminder_id, r.status)):
        writer.writerow((r.reminder_id, "sms", r.status, r.at.strftime("%Y-%m-%dT%H:%M:%SZ"), r.provider_ref))
    return buf.getvalue().encode()


def write_receipts_drop(receipts: Sequence[BindReceipt], inbox_dir: Path, stem: str) -> tuple[Path, bytes]:
    """``inbox_dir/<stem>-<sha256[:12]>.csv``: named by content, so a rerun of the night that
    receives other receipts writes another file instead of changing one already ingested."""
    data = receipts_csv(receipts)
    path = inbox_dir / f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}.csv"
    atomic_write_bytes(path, data)
    return path, data


def finish_smpp_night(
    con: Con,
    settings: Settings,
    day: dt.date,
    channel: SmppChannel,
    next_inbox: Path,
    late: Sequence[PartReceipt] = (),
) -> BindReceiptsReport:
    """Close ``channel``, record and apply the receipts of its bind; ``late``: receipts an SMSC
    simulator held back, written as its export to the next night's inbox (applied then)."""
    channel.close()
    receipts = channel.receipts
    late_file = None
    if late and (late_receipts := channel.late_receipts(late)):
        late_file = str(write_receipts_drop(late_receipts, next_inbox, f"receipts_smsc-{day}")[0])
    if not receipts:
        return BindReceiptsReport(0, None, None, late_file)
    path, data = write_receipts_drop(receipts, next_inbox, f"receipts_smpp-{day}")
    sha = hashlib.sha256(data).hexdigest()
    rows: list[dict[str, Any]] = [
        {
            "file_sha256": sha,
            "line_no": line,
            "logical_date": day,
            "reminder_id": r.reminder_id,
            "channel": "sms",
            "status": r.status,
            "at": r.at.astimezone(dt.UTC).replace(tzinfo=None),
            "provider_ref": r.provider_ref,
        }
        for line, r in enumerate(sorted(receipts, key=lambda r: (r.reminder_id, r.status)), start=2)
    ]
    applied = apply_bind_receipts(con, settings, day, rows)
    return BindReceiptsReport(len(receipts), applied, str(path), late_file)
