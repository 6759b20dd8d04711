"""SMPP delivery receipts: a ``deliver_sm`` read as a receipt, and the book that matches them to
reminders through the ``submit_sm_resp`` message ids.

A receipt is a ``deliver_sm`` whose ``esm_class`` message type is "SMSC delivery receipt"
(bits 2–5 = 0001). Its message id is the ``receipted_message_id`` TLV, or the ``id:`` field of
the text (SMPP 3.4 Appendix B: ``id:… sub:… dlvrd:… submit date:… done date:… stat:… err:…``);
its state is the ``message_state`` TLV, or ``stat:``. Only final states are receipts here:
DELIVRD → delivered, EXPIRED → expired, UNDELIV / REJECTD / DELETED → failed (ENROUTE,
ACCEPTD and UNKNOWN say nothing yet). A long reminder went out in parts, each with its own
message id and receipt: it is delivered when every part is; otherwise it takes the state of
its first part that was not, at the time of the last part's receipt.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

_STATES = {"DELIVRD": "delivered", "EXPIRED": "expired", "UNDELIV": "failed", "REJECTD": "failed"}
_STATES["DELETED"] = "failed"
# SMPP 3.4 section 5.2.28 message_state values for the same final states.
_STATE_CODES = {2: "delivered", 3: "expired", 4: "failed", 5: "failed", 8: "failed"}
_ID = re.compile(rb"\bid:(\S+)")
_STAT = re.compile(rb"\bstat:(\w+)")
_DONE = re.compile(rb"\bdone date:(\d{10}(?:\d{2})?)")


@dataclass(frozen=True)
class PartReceipt:
    """One ``deliver_sm`` receipt as it arrived."""

    message_id: str
    status: str  # delivered | failed | expired
    done: str | None  # the SMSC's "done date" (YYMMDDhhmm[ss], its local time), if given


@dataclass(frozen=True)
class BindReceipt:
    """A reminder's receipt from the bind, in the ``receipts_*`` drop's terms."""

    reminder_id: str
    status: str
    at: dt.datetime  # aware UTC
    provider_ref: str  # the SMSC message id of the reminder's first part


def parse_receipt(pdu: Any) -> PartReceipt | None:
    """The receipt a ``deliver_sm`` carries, or None (a mobile-originated message, a non-final state)."""
    if (int(pdu.esm_class or 0) & 0x3C) >> 2 != 1:
        return None
    text = pdu.short_message or b""
    text = text if isinstance(text, bytes) else str(text).encode()
    message_id = _as_text(getattr(pdu, "receipted_message_id", None))
    if not message_id and (m := _ID.search(text)):
        message_id = m.group(1).decode("ascii", "replace")
    state_code = getattr(pdu, "message_state", None)
    status = _STATE_CODES.get(int(state_code)) if state_code is not None else None
    if status is None and (m := _STAT.search(text)):
        status = _STATES.get(m.group(1).decode("ascii", "replace").upper())
    if not message_id or status is None:
        return None
    done = _DONE.search(text)
    return PartReceipt(message_id, status, done.group(1).decode() if done else None)


@functools.lru_cache(maxsize=4096)
def _done_at(done: str, zone: dt.tzinfo) -> dt.datetime:
    """The SMSC's local "done date" (YYMMDDhhmm[ss]) in UTC. Cached: a night's receipts share
    a few thousand minutes, and strptime cost ~17 µs a receipt (two a Chinese reminder)."""
    fmt = "%y%m%d%H%M%S" if len(done) == 12 else "%y%m%d%H%M"
    return dt.datetime.strptime(done, fmt).replace(tzinfo=zone).astimezone(dt.UTC)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Reminder:
    parts: int
    message_ids: dict[int, str] = field(default_factory=dict)  # part -> message id
    states: dict[int, tuple[str, dt.datetime]] = field(default_factory=dict)  # part -> status, at


class ReceiptBook:
    """Which message id belongs to which reminder's part, and the receipts seen for them.

    ``zone``: the SMSC's "done date" is in the carrier's local time (the carrier's own SMSC);
    without one, the receipt is timed when it arrived (``clock``)."""

    def __init__(self, zone: dt.tzinfo, clock: Callable[[], dt.datetime]) -> None:
        self._zone = zone
        self._clock = clock
        self._by_id: dict[str, tuple[str, int]] = {}
        self._reminders: dict[str, _Reminder] = {}
        self._early: dict[str, PartReceipt] = {}  # a receipt may overtake its submit_sm_resp

    def expect(self, message_id: str, reminder_id: str, part: int, parts: int) -> None:
        self._by_id[message_id] = (reminder_id, part)
        entry = self._reminders.setdefault(reminder_id, _Reminder(parts))
        entry.message_ids[part] = message_id
        if (early := self._early.pop(message_id, None)) is not None:
            self.arrived(early)

    def arrived(self, receipt: PartReceipt) -> None:
        owner = self._by_id.get(receipt.message_id)
        if owner is None:
            self._early[receipt.message_id] = receipt  # or an earlier night's message: kept aside
            return
        reminder_id, part = owner
        self._reminders[reminder_id].states.setdefault(part, (receipt.status, self._at(receipt.done)))

    def outstanding(self) -> int:
        """Reminders sent on this bind whose receipt is not complete yet."""
        return sum(len(r.states) < r.parts for r in self._reminders.values())

    def complete(self) -> tuple[BindReceipt, ...]:
        out = []
        for reminder_id, r in sorted(self._reminders.items()):
            if len(r.states) < r.parts:
                continue
            states = [r.states[p] for p in sorted(r.states)]
            status = next((s for s, _ in states if s != "delivered"), "delivered")
            out.append(
                BindReceipt(
                    reminder_id, status, max(at for _, at in states), r.message_ids[min(r.message_ids)]
                )
            )
        return tuple(out)

    def _at(self, done: str | None) -> dt.datetime:
        if done is None:
            return self._clock().astimezone(dt.UTC)
        return _done_at(done, self._zone)

    def with_late(self, parts: Iterable[PartReceipt]) -> tuple[BindReceipt, ...]:
        """The receipts that ``parts`` (arriving after the bind closed) complete; this book is unchanged."""
        book = copy.deepcopy(self)
        before = {r.reminder_id for r in book.complete()}
        for part in parts:
            book.arrived(part)
        return tuple(r for r in book.complete() if r.reminder_id not in before)
