"""SMS to the carrier's SMSC over SMPP 3.4: a transceiver bind, windowed ``submit_sm``, and the
delivery receipts that come back on the same bind.

Library: ``smpplib`` 2.2.4 (2025; LGPL; pure Python, one dependency: six), for its PDU codec
only; the framing and the session logic (window, rate, throttling, rebind, receipts) are here,
and the four PDUs a segment costs (``submit_sm`` and its answer, the receipt and ours) take a
``struct`` fast path checked against smpplib (:mod:`smpp_codec`: 40 µs -> 2 µs a PDU).
Chosen over ``aiosmpplib`` 0.7.4 (asyncio) because the channel contract is a synchronous
``send_batch`` that must say, per reminder, what the SMSC took: aiosmpplib runs its own broker,
correlator, retry timer and throttle policy in a long-lived event loop and reports through hooks,
so a batch outcome (and "resubmit only what was never acknowledged") would be rebuilt on top of
its internals; with smpplib the window is a dict of sequence numbers and one ``select`` loop.
The same codec serves the SMSC simulator (:mod:`pipelines.dev.smsc`).

The bind stays open across batches (``send_reminders`` calls :meth:`SmppChannel.send_batch`
per 1,000 reminders) and :meth:`SmppChannel.close` waits ``receipt_grace_s`` for the receipts
still owed, then unbinds; receipts the SMSC sends later reach us on the next night's bind or
the SMSC's receipts export (the next night's ``receipts_*`` drop), judged by the same rule.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from smpplib import consts, smpp

from pipelines.config import SmppSettings
from pipelines.errors import GatewayError, PermanentDeliveryError
from pipelines.numbers import mask_contact
from pipelines.reminders import smpp_codec
from pipelines.reminders.channels import (
    E164,
    AcceptedHook,
    BatchOutcome,
    ChannelName,
    OutgoingReminder,
    SendFailure,
    SendResult,
    check_batch,
    summarise,
    utc_now,
)
from pipelines.reminders.smpp_receipts import BindReceipt, PartReceipt, ReceiptBook, parse_receipt
from pipelines.reminders.smpp_text import Segment, segments

log = logging.getLogger(__name__)

# submit_sm_resp statuses that say "not now": back off and resend the same PDU.
_BACK_OFF = {consts.SMPP_ESME_RTHROTTLED, consts.SMPP_ESME_RMSGQFUL}
# ... and those that say "never to this address": the reminder falls back to the next channel.
_PERMANENT = {consts.SMPP_ESME_RINVDSTADR, 0x0A, 0x33}  # bad destination, bad source, bad dest flag
_BACKOFF_START_S, _BACKOFF_MAX_S = 0.05, 2.0


class _LinkDown(Exception):
    """The TCP link or the bind is gone; what was in flight is resubmitted after a rebind."""


@dataclass
class _Part:
    reminder: OutgoingReminder
    segment: Segment


@dataclass
class _Batch:
    """What one ``send_batch`` call still owes and has learnt."""

    queue: deque[_Part] = field(default_factory=deque)
    inflight: dict[int, tuple[_Part, float]] = field(default_factory=dict)  # seq -> part, sent at
    acked: dict[str, dict[int, str]] = field(default_factory=dict)  # reminder -> part -> message id
    failed: dict[str, SendFailure] = field(default_factory=dict)
    accepted_at: dict[str, dt.datetime] = field(default_factory=dict)
    on_accepted: AcceptedHook | None = None  # the send journal, told when a reminder's last part is in


class _Seq:
    """Sequence numbers of our requests on one link (what smpplib's codec asks a client for)."""

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = self.sequence % 0x7FFFFFFF + 1
        return self.sequence


class _Link:
    """One TCP connection bound as transceiver. Framing is ours: one ``recv`` takes every PDU that
    arrived and one ``sendall`` a window's worth (measured: smpplib's client does two ``recv``
    and one ``sendall`` per PDU, and with the simulator in the same process that was half of
    the time per message). The night's four hot PDUs go through :mod:`smpp_codec` (checked
    against smpplib); smpplib encodes and decodes the rest."""

    def __init__(self, settings: SmppSettings) -> None:
        where = f"SMSC {settings.host}:{settings.port}"
        self.seq = _Seq()
        self._buf = b""
        self._replies: list[bytes] = []  # answers owed, sent with the next request or before a wait
        self._timeout = settings.timeout_s
        try:
            self.sock = socket.create_connection((settings.host, settings.port), timeout=settings.timeout_s)
        except OSError as exc:
            raise GatewayError(
                f"{where} unreachable ({type(exc).__name__}); check that it runs and RECYCLE_SMPP_HOST / _PORT"
            ) from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.send([self.pdu("bind_transceiver", system_id=settings.system_id,
                                password=settings.password or "", interface_version=0x34)])  # fmt: skip
            resp = self.read(settings.timeout_s)
        except _LinkDown as exc:
            self.close()
            raise GatewayError(
                f"{where} dropped the link while binding ({exc}); check the SMSC's log"
            ) from exc
        if (
            resp is None
            or resp.command != "bind_transceiver_resp"
            or int(resp.status) != consts.SMPP_ESME_ROK
        ):
            self.close()
            status = (
                "no answer"
                if resp is None
                else f"0x{int(resp.status):08X} {consts.DESCRIPTIONS.get(int(resp.status), '')}"
            )
            raise GatewayError(
                f"{where} refused the bind ({status}); check RECYCLE_SMPP_SYSTEM_ID and RECYCLE_SMPP_PASSWORD"
            )

    def pdu(self, command: str, **params: Any) -> bytes:
        """A request through smpplib (bind, enquire_link, unbind), encoded."""
        data: bytes = smpp.make_pdu(command, client=self.seq, **params).generate()
        return data

    def send(self, pdus: Sequence[bytes]) -> None:
        """``pdus``, after the answers owed, in one ``sendall``."""
        data = b"".join([*self._replies, *pdus])
        self._replies.clear()
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise _LinkDown(f"{type(exc).__name__}: {exc}") from exc

    def reply(self, command_id: int, sequence: int) -> None:
        """Owe an answer: it leaves with the next requests, or before this link waits to read
        (one ``sendall`` a window's worth, not one a receipt: measured 13 µs each)."""
        self._replies.append(smpp_codec.encode_response(command_id, sequence))

    def buffered(self) -> Any | None:
        """The next PDU already received whole, or None (the socket is not touched)."""
        if len(self._buf) < 4 or len(self._buf) < int.from_bytes(self._buf[:4], "big"):
            return None
        return self.read(0.0)

    def read(self, timeout_s: float) -> Any | None:
        """The next PDU, or None when none arrives within ``timeout_s``."""
        while len(self._buf) < 4 or len(self._buf) < int.from_bytes(self._buf[:4], "big"):
            if self._replies:
                self.send([])  # the SMSC may be waiting for them before it sends more
            try:
                ready, _, _ = select.select([self.sock], [], [], max(timeout_s, 0.0))
                if not ready:
                    return None
                chunk = self.sock.recv(65536)
            except (OSError, ValueError) as exc:
                raise _LinkDown(f"{type(exc).__name__}: {exc}") from exc
            if not chunk:
                raise _LinkDown("the SMSC closed the connection")
            self._buf += chunk
            timeout_s = self._timeout  # the rest of a PDU that began to arrive
        size = int.from_bytes(self._buf[:4], "big")
        raw, self._buf = self._buf[:size], self._buf[size:]
        fast = smpp_codec.decode(raw)  # the night's own PDUs; smpplib reads the rest
        if fast is not None:
            return fast
        try:
            return smpp.parse_pdu(raw, client=self.seq, allow_unknown_opt_params=True)
        except Exception as exc:  # smpplib raises bare exceptions of several kinds on bad bytes
            raise _LinkDown(f"unreadable PDU from the SMSC ({type(exc).__name__})") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class SmppChannel:
    """SMS through the carrier's SMSC (see the module doc). Use as a context manager, or call
    :meth:`close`; :attr:`receipts` holds the delivery receipts that arrived on the bind."""

    name: ChannelName = "sms"

    def __init__(
        self,
        settings: SmppSettings,
        *,
        zone: dt.tzinfo,
        clock: Callable[[], dt.datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._s = settings
        self._clock = clock
        self._now = monotonic
        self._link: _Link | None = None
        self._book = ReceiptBook(zone, clock)
        self._tokens = 1.0
        self._refilled = monotonic()
        self._paused_until = 0.0
        self._backoff = _BACKOFF_START_S
        self._idle_since = monotonic()
        self.binds = 0  # how many binds this channel made (1 + rebinds)

    @property
    def receipts(self) -> tuple[BindReceipt, ...]:
        """Receipts that arrived on the bind so far, one per reminder whose every part reported."""
        return self._book.complete()

    def late_receipts(self, parts: Sequence[PartReceipt]) -> tuple[BindReceipt, ...]:
        """The reminders' receipts that ``parts`` (come after the bind closed) complete."""
        return self._book.with_late(parts)

    def __enter__(self) -> SmppChannel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- sending

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome:
        check_batch(self.name, reminders)
        batch = _Batch(on_accepted=on_accepted)
        for r in reminders:
            if not E164.fullmatch(r.to):
                batch.failed[r.reminder_id] = self._failure(r, True, "not an E.164 number")
                continue
            try:
                batch.queue.extend(_Part(r, seg) for seg in segments(r.text, r.reminder_id))
            except PermanentDeliveryError as exc:
                batch.failed[r.reminder_id] = self._failure(r, True, str(exc))
        drops = 0
        while batch.queue or batch.inflight:
            try:
                self._ensure_bound()
                self._pump(batch)
            except GatewayError as exc:
                self._give_up(batch, str(exc))
                break
            except _LinkDown as exc:
                drops += 1
                self._drop_link(batch, str(exc))
                if drops > self._s.max_rebinds:
                    self._give_up(batch, f"SMSC {self._s.host}:{self._s.port} dropped the link {drops} times")
                    break
        return self._outcome(reminders, batch)

    def _ensure_bound(self) -> None:
        if self._link is None:
            self._link = _Link(self._s)
            self.binds += 1
            self._idle_since = self._now()

    def _pump(self, batch: _Batch) -> None:
        """Submit while the window, the rate and any throttling allow; then read one PDU."""
        link = self._link
        assert link is not None
        out = []
        while batch.queue and len(batch.inflight) < self._s.window and self._may_send():
            part = batch.queue.popleft()
            sequence = link.seq.next_sequence()
            out.append(self._submit_pdu(sequence, part))
            batch.inflight[sequence] = (part, self._now())
        if out:
            link.send(out)
            self._idle_since = self._now()
        wait = self._wait_s(batch)
        pdu = link.read(wait)
        if pdu is not None:
            self._idle_since = self._now()
            while pdu is not None:  # every PDU that came in the same read, then submit again
                self._handle(link, pdu, batch)
                pdu = link.buffered()
        elif batch.inflight and self._now() - min(t for _, t in batch.inflight.values()) > self._s.timeout_s:
            raise _LinkDown(f"no submit_sm_resp within {self._s.timeout_s:g}s")
        else:
            self._keep_alive(link)

    def _submit_pdu(self, sequence: int, part: _Part) -> bytes:
        seg = part.segment
        return smpp_codec.encode_submit_sm(
            sequence,
            source_addr_ton=5 if not self._s.source.isdigit() else 0,  # alphanumeric or short code
            source_addr_npi=0 if not self._s.source.isdigit() else 1,
            source_addr=self._s.source,
            dest_addr_ton=1,  # international, E.164 digits without the '+'
            dest_addr_npi=1,
            destination_addr=part.reminder.to.lstrip("+"),
            esm_class=seg.esm_class,
            registered_delivery=1,  # a final delivery receipt, success or failure
            data_coding=seg.data_coding,
            short_message=seg.short_message,
        )

    def _may_send(self) -> bool:
        """A token bucket at ``rate`` per second, at most a tenth of a second's worth at once, and
        no sending while a throttling answer's backoff runs."""
        now = self._now()
        if now < self._paused_until:
            return False
        capacity = max(1.0, self._s.rate / 10)
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * self._s.rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _wait_s(self, batch: _Batch) -> float:
        """How long to wait for a PDU: until a token or the backoff's end lets us send again."""
        if not batch.queue or len(batch.inflight) >= self._s.window:
            return 0.2 if batch.inflight else 0.0
        until_token = max(0.0, (1.0 - self._tokens) / self._s.rate)
        return max(until_token, self._paused_until - self._now(), 0.0)

    def _keep_alive(self, link: _Link) -> None:
        if self._now() - self._idle_since >= self._s.enquire_link_s:
            link.send([link.pdu("enquire_link")])
            self._idle_since = self._now()

    # ----------------------------------------------------------------- answers

    def _handle(self, link: _Link, pdu: Any, batch: _Batch | None) -> None:
        command = pdu.command
        if command == "deliver_sm":
            receipt = parse_receipt(pdu)
            if receipt is not None:
                self._book.arrived(receipt)
            link.reply(smpp_codec.DELIVER_SM_RESP, pdu.sequence)
        elif command == "enquire_link":
            link.reply(smpp_codec.ENQUIRE_LINK_RESP, pdu.sequence)
        elif command == "unbind":
            link.reply(smpp_codec.UNBIND_RESP, pdu.sequence)
            link.send([])  # the answer before we go
            raise _LinkDown("the SMSC unbound")
        elif command in ("submit_sm_resp", "generic_nack") and batch is not None:
            entry = batch.inflight.pop(pdu.sequence, None)
            if entry is not None:
                self._answered(batch, entry[0], pdu)

    def _answered(self, batch: _Batch, part: _Part, pdu: Any) -> None:
        r = part.reminder
        status = int(pdu.status)
        if status == consts.SMPP_ESME_ROK and pdu.command == "submit_sm_resp":
            message_id = _text(pdu.message_id)
            batch.acked.setdefault(r.reminder_id, {})[part.segment.part] = message_id
            self._book.expect(message_id, r.reminder_id, part.segment.part, part.segment.parts)
            batch.accepted_at[r.reminder_id] = self._clock()
            self._backoff = _BACKOFF_START_S
            if batch.on_accepted and len(batch.acked[r.reminder_id]) == part.segment.parts:
                # Every part is in: the journal records it before the next submit_sm goes out.
                parts = batch.acked[r.reminder_id]
                batch.on_accepted(SendResult(r.reminder_id, self.name, parts[min(parts)], self._clock()))
        elif status in _BACK_OFF:
            batch.queue.appendleft(part)  # the same segment again, once the backoff ends
            self._paused_until = self._now() + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
        elif r.reminder_id not in batch.failed:
            desc = consts.DESCRIPTIONS.get(status, "unknown status")
            reason = f"SMSC {self._s.host}:{self._s.port} refused the message: 0x{status:08X} {desc}"
            batch.failed[r.reminder_id] = self._failure(r, status in _PERMANENT, reason)
            batch.queue = deque(p for p in batch.queue if p.reminder.reminder_id != r.reminder_id)

    def _drop_link(self, batch: _Batch, why: str) -> None:
        """Forget the link; what it had in flight was never acknowledged: submit it again."""
        log.warning(
            "SMSC %s:%s link lost (%s); rebinding, %d unacknowledged part(s) go again",
            self._s.host,
            self._s.port,
            why,
            len(batch.inflight),
        )
        batch.queue.extendleft(p for p, _ in reversed(list(batch.inflight.values())))
        batch.inflight.clear()
        if self._link is not None:
            self._link.close()
        self._link = None

    def _give_up(self, batch: _Batch, reason: str) -> None:
        log.error("%s", reason)
        for p in [*batch.queue, *(p for p, _ in batch.inflight.values())]:
            batch.failed.setdefault(p.reminder.reminder_id, self._failure(p.reminder, False, reason))
        batch.queue.clear()
        batch.inflight.clear()
        if self._link is not None:
            self._link.close()
            self._link = None

    def _outcome(self, reminders: Sequence[OutgoingReminder], batch: _Batch) -> BatchOutcome:
        sent: list[SendResult] = []
        for r in reminders:
            parts = batch.acked.get(r.reminder_id, {})
            if r.reminder_id in batch.failed or not parts:
                continue
            # provider_ref: the SMSC's id of the first part; every part's receipt maps back anyway.
            sent.append(
                SendResult(r.reminder_id, self.name, parts[min(parts)], batch.accepted_at[r.reminder_id])
            )
        return summarise(self.name, sent, list(batch.failed.values()))

    def _failure(self, r: OutgoingReminder, permanent: bool, reason: str) -> SendFailure:
        if permanent:
            log.warning("sms %s to %s failed for good: %s", r.reminder_id, mask_contact(r.to), reason)
        return SendFailure(r.reminder_id, self.name, permanent, reason)

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        """Wait up to ``receipt_grace_s`` for the receipts still owed, then unbind."""
        link = self._link
        if link is None:
            return
        deadline = self._now() + self._s.receipt_grace_s
        try:
            while self._book.outstanding() and self._now() < deadline:
                self._serve(link, min(0.2, max(0.0, deadline - self._now())))
            link.send([link.pdu("unbind")])
            deadline = self._now() + min(self._s.timeout_s, 2.0)
            while self._now() < deadline and self._serve(link, deadline - self._now()) != "unbind_resp":
                pass
        except _LinkDown as exc:
            log.warning("SMSC link lost while waiting for receipts (%s); the rest come later", exc)
        owed = self._book.outstanding()
        if owed:
            log.info(
                "%d reminder(s) still owe a receipt after %.1fs: they come on a later bind or drop",
                owed,
                self._s.receipt_grace_s,
            )
        link.close()
        self._link = None

    def _serve(self, link: _Link, wait_s: float) -> str | None:
        """Read and answer one PDU outside a batch; returns its command (None: nothing came)."""
        pdu = link.read(wait_s)
        if pdu is None:
            self._keep_alive(link)
            return None
        self._idle_since = self._now()
        self._handle(link, pdu, None)
        return str(pdu.command)


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")
