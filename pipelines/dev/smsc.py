"""A loopback SMSC: a real SMPP 3.4 server on 127.0.0.1 for the demo, tests and benchmarks.

:class:`SmscSimulator` binds transceivers (``system_id`` / ``password`` checked), answers
``submit_sm`` with message ids (after ``resp_delay_s``, so a client's window is visible: it
records the most ``submit_sm`` ever unanswered at once), answers ``ESME_RTHROTTLED`` beyond
``rate`` messages/s, drops the link once after ``drop_after`` messages (without answering that
one), answers ``enquire_link`` and ``unbind``, and sends a delivery receipt per acknowledged
message: DELIVRD or UNDELIV as a pure function of (seed, destination), after
``receipt_delay_s``; a ``late`` share is held back, as an SMSC whose receipts come after the
client left. Receipts written but not answered by ``deliver_sm_resp`` when a link ends go
again on the next bind. It uses smpplib's PDU codec, like the channel.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import heapq
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from smpplib import consts, smpp

from pipelines.config import Settings, SmppSettings
from pipelines.reminders import smpp_codec
from pipelines.reminders.smpp import SmppChannel
from pipelines.reminders.smpp_receipts import PartReceipt
from pipelines.reminders.smpp_text import decode_segment


@dataclass(frozen=True)
class Submitted:
    """A ``submit_sm`` the SMSC acknowledged (its ``submit_sm_resp`` was written)."""

    message_id: str
    destination: str = field(repr=False)
    data_coding: int
    esm_class: int
    short_message: bytes = field(repr=False)
    bind: int  # which bind (1-based) carried it


class _Seq:
    """The sequence numbers of the SMSC's own requests (deliver_sm) on one link."""

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def _u(*parts: object) -> float:
    """A uniform draw on [0, 1) from SHA-256: stable across runs and machines."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:7], "big") / 2**56


class SmscSimulator:
    """The SMSC (see the module doc), as a context manager. ``receipt_clock`` times receipts
    ("done date", written in ``zone``): the demo passes the logical night's instant."""

    def __init__(
        self,
        *,
        system_id: str = "recycle",
        password: str = "simpass",  # noqa: S107 - the loopback simulator's own, not a secret
        rate: float | None = None,
        resp_delay_s: float = 0.0,
        drop_after: int | None = None,
        delivered: float = 0.92,
        late: float = 0.0,
        receipt_delay_s: float = 0.0,
        receipt_tlv: bool = True,
        seed: int = 7,
        zone: dt.tzinfo = dt.UTC,
        receipt_clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.system_id, self.password = system_id, password
        self.rate, self.resp_delay_s, self.drop_after = rate, resp_delay_s, drop_after
        self.delivered, self.late, self.receipt_delay_s = delivered, late, receipt_delay_s
        self.receipt_tlv, self.seed, self.zone = receipt_tlv, seed, zone
        self._receipt_clock = receipt_clock or (lambda: dt.datetime.now(dt.UTC))
        self.lock = threading.Lock()
        self.submitted: list[Submitted] = []
        self.max_in_flight = self.throttled = self.enquire_links = self.binds = self.drops = 0
        self.receipts_sent: list[str] = []  # message ids whose receipt the client answered
        self._receipts: list[tuple[float, str, PartReceipt]] = []  # heap: due, message id, receipt
        self._held: list[PartReceipt] = []  # the late share, never sent on a bind
        self._tokens, self._refilled, self._count = 1.0, time.monotonic(), 0
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> SmscSimulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)  # accept() wakes to see stop(); close() alone does not wake it
        self._spawn(self._accept_loop, "smsc-accept")

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for t in self._threads:
            t.join(timeout=5)

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def settings(self, *, window: int = 50, rate: float = 500.0, **extra: Any) -> SmppSettings:
        if self._server is None:
            raise RuntimeError("the SMSC simulator is not running; use it as a context manager")
        port = self._server.getsockname()[1]
        return SmppSettings(
            host="127.0.0.1", port=port, system_id=self.system_id, password=self.password,
            source="10086", window=window, rate=rate, **extra,
        )  # fmt: skip

    # ----------------------------------------------------------------- what it saw

    def texts(self) -> list[tuple[str, str]]:
        """(destination, text) of every acknowledged message, parts joined as a handset does."""
        whole: dict[tuple[str, int | None], dict[int, str]] = {}
        order: list[tuple[str, int | None]] = []
        with self.lock:
            subs = list(self.submitted)
        for s in subs:
            seg = decode_segment(s.data_coding, s.esm_class, s.short_message)
            key = (s.destination, seg.reference if seg.reference is not None else -len(order) - 1)
            if key not in whole:
                order.append(key)
            whole.setdefault(key, {})[seg.part] = seg.text
        return [(k[0], "".join(whole[k][p] for p in sorted(whole[k]))) for k in order]

    def undelivered_receipts(self) -> list[PartReceipt]:
        """Receipts not delivered on a bind (the late share and any left over): the SMSC's export."""
        with self.lock:
            return [*self._held, *(r for _, _, r in sorted(self._receipts))]

    # ----------------------------------------------------------------- serving

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(_Link(self, conn).serve, "smsc-link")

    def _throttles(self) -> bool:
        if self.rate is None:
            return False
        now = time.monotonic()
        self._tokens = min(max(1.0, self.rate / 10), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            self.throttled += 1
            return True
        self._tokens -= 1.0
        return False

    def _acknowledged(self, sub: Submitted) -> None:
        """The submit_sm_resp went out: record the message and queue its receipt."""
        self.submitted.append(sub)
        ok = _u(self.seed, "reach", sub.destination) < self.delivered
        done = self._receipt_clock().astimezone(self.zone).strftime("%y%m%d%H%M")
        receipt = PartReceipt(sub.message_id, "delivered" if ok else "failed", done)
        if _u(self.seed, "late", sub.message_id) < self.late:
            self._held.append(receipt)
        else:
            heapq.heappush(self._receipts, (time.monotonic() + self.receipt_delay_s, sub.message_id, receipt))

    def _due_receipts(self) -> list[PartReceipt]:
        now, out = time.monotonic(), []
        while self._receipts and self._receipts[0][0] <= now:
            out.append(heapq.heappop(self._receipts)[2])
        return out

    def _requeue(self, receipts: list[PartReceipt]) -> None:
        for r in receipts:
            heapq.heappush(self._receipts, (time.monotonic(), r.message_id, r))


class _Link:
    """One client connection: a reader (this thread) and a writer thread for delayed answers."""

    def __init__(self, sim: SmscSimulator, conn: socket.socket) -> None:
        self.sim, self.conn = sim, conn
        self.seq = _Seq()
        self.bound = False
        self.bind_no = 0
        self.out: list[tuple[float, int, bytes, Submitted | None]] = []  # heap of answers
        self.n = 0
        self.unanswered = 0
        self.awaiting: dict[int, PartReceipt] = {}  # deliver_sm sequence -> receipt
        self.closed = threading.Event()  # no more reading; answers already due still go out
        self.dropped = threading.Event()  # the link is cut: nothing more goes out
        self.cv = threading.Condition(sim.lock)

    def serve(self) -> None:
        writer = threading.Thread(target=self._write_loop, name="smsc-writer", daemon=True)
        writer.start()
        try:
            while not self.closed.is_set():
                raw = self._read()
                if raw is None:
                    break
                fast = smpp_codec.decode(raw)  # the client's own fast path, checked against smpplib
                self._on_pdu(fast or smpp.parse_pdu(raw, client=self.seq, allow_unknown_opt_params=True))
        except OSError:
            pass
        finally:
            self.closed.set()
            with self.cv:
                self.cv.notify()
            writer.join(timeout=5)
            self._end()

    def _read(self) -> bytes | None:
        head = self._recv(4)
        if head is None:
            return None
        body = self._recv(struct.unpack(">L", head)[0] - 4)
        return None if body is None else head + body

    def _recv(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _answer(
        self, command: str, sequence: int, delay_s: float = 0.0, sub: Submitted | None = None, **p: Any
    ) -> None:
        if command == "submit_sm_resp":
            raw = smpp_codec.encode_submit_sm_resp(sequence, p.get("status", 0), p["message_id"])
        else:
            pdu = smpp.make_pdu(command, client=self.seq, **p)
            pdu.sequence = sequence
            raw = pdu.generate()
        with self.cv:
            self.n += 1
            heapq.heappush(self.out, (time.monotonic() + delay_s, self.n, raw, sub))
            self.cv.notify()

    def _on_pdu(self, pdu: Any) -> None:
        cmd, seq = pdu.command, pdu.sequence
        if cmd == "bind_transceiver":
            ok = pdu.system_id == self.sim.system_id.encode() and pdu.password == self.sim.password.encode()
            status = consts.SMPP_ESME_ROK if ok else consts.SMPP_ESME_RINVPASWD
            with self.sim.lock:
                self.sim.binds += ok
                self.bind_no = self.sim.binds
            self.bound = ok
            self._answer("bind_transceiver_resp", seq, status=status, system_id="SIMSMSC")
        elif cmd == "submit_sm":
            self._on_submit(pdu)
        elif cmd == "enquire_link":
            with self.sim.lock:
                self.sim.enquire_links += 1
            self._answer("enquire_link_resp", seq)
        elif cmd == "deliver_sm_resp":
            with self.sim.lock:
                done = self.awaiting.pop(seq, None)
                if done is not None:
                    self.sim.receipts_sent.append(done.message_id)
        elif cmd == "unbind":
            self._answer("unbind_resp", seq)
            self.closed.set()

    def _on_submit(self, pdu: Any) -> None:
        sim, seq = self.sim, pdu.sequence
        if not self.bound:
            self._answer("submit_sm_resp", seq, status=consts.SMPP_ESME_RINVBNDSTS, message_id="")
            return
        with sim.lock:
            throttled = sim._throttles()
            if not throttled:
                sim._count += 1
                count = sim._count
                self.unanswered += 1
                sim.max_in_flight = max(sim.max_in_flight, self.unanswered)
        if throttled:
            self._answer("submit_sm_resp", seq, status=consts.SMPP_ESME_RTHROTTLED, message_id="")
            return
        if sim.drop_after is not None and count == sim.drop_after:
            with sim.lock:
                sim.drops += 1
                sim.drop_after = None
            self.dropped.set()  # this one is never answered: the client must send it again
            self.closed.set()
            return
        message_id = f"{sim.seed:02d}{count:010X}"
        sub = Submitted(message_id, pdu.destination_addr.decode(), int(pdu.data_coding), int(pdu.esm_class),
                        bytes(pdu.short_message or b""), self.bind_no)  # fmt: skip
        self._answer("submit_sm_resp", seq, sim.resp_delay_s, sub, message_id=message_id)

    def _write_loop(self) -> None:
        while True:
            with self.cv:
                if self.dropped.is_set() or (self.closed.is_set() and not self.out):
                    return
                due = [
                    heapq.heappop(self.out)
                    for _ in range(len(self.out))
                    if self.out[0][0] <= time.monotonic()
                ]
                receipts = self.sim._due_receipts() if self.bound else []
                if not due and not receipts:
                    self.cv.wait(0.005)
                    continue
                for *_, sub in due:
                    if sub is not None:
                        self.unanswered -= 1
                        self.sim._acknowledged(sub)
            try:
                self.conn.sendall(b"".join(raw for _, _, raw, _ in due) + self._receipt_pdus(receipts))
            except OSError:
                self.dropped.set()
                return

    def _receipt_pdus(self, receipts: list[PartReceipt]) -> bytes:
        out = []
        for r in receipts:
            stat = "DELIVRD" if r.status == "delivered" else "UNDELIV"
            text = f"id:{r.message_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
            text += f"submit date:{r.done} done date:{r.done} stat:{stat} err:000 text:"
            tlv: dict[str, Any] = {}
            if self.sim.receipt_tlv:
                tlv = {"receipted_message_id": r.message_id, "message_state": 2 if stat == "DELIVRD" else 5}
            sequence = self.seq.next_sequence()
            with self.sim.lock:
                self.awaiting[sequence] = r
            out.append(
                smpp_codec.encode_deliver_sm(sequence, esm_class=0x04, short_message=text.encode(), **tlv)
            )
        return b"".join(out)

    def _end(self) -> None:
        with self.sim.lock:
            self.sim._requeue(list(self.awaiting.values()))  # never answered: send them again
            self.awaiting.clear()
        try:
            self.conn.shutdown(socket.SHUT_WR)  # answers already written still reach the client
            self.conn.settimeout(1.0)
            while self.conn.recv(65536):
                pass
        except OSError:
            pass
        self.conn.close()


@contextlib.contextmanager
def simulated_smpp(
    settings: Settings, day: dt.date, seed: int
) -> Iterator[tuple[SmscSimulator | None, SmppChannel | None]]:
    """``--simulate-gateways``: with ``[channels.smpp]`` set, an SMSC simulator and the channel
    bound to it (its window and rate); else (None, None) and SMS go to the HTTP simulator.

    The night is simulated, so receipts are timed at 20:00 of the carrier's day ``day`` (the
    logical night, not the wall clock): they then count for that day, as a real night's would."""
    if settings.smpp is None:
        yield None, None
        return
    night = settings.day_start(day) + dt.timedelta(hours=20)
    with SmscSimulator(seed=seed, zone=settings.zone, receipt_clock=lambda: night, late=0.05) as smsc:
        channel = SmppChannel(
            smsc.settings(window=settings.smpp.window, rate=settings.smpp.rate, receipt_grace_s=2.0),
            zone=settings.zone,
            clock=lambda: night,
        )
        try:
            yield smsc, channel
        finally:
            channel.close()
