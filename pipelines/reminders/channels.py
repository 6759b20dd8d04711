"""Reminder channels: SMTP e-mail, an HTTP SMS gateway and the print house's daily letter batch.

Every channel takes a *batch* (one SMTP connection or HTTP client serves many messages) and
reports per reminder: sent with the provider's reference, or failed — *transient* (worth a
retry: gateway down, 4xx, 429/5xx) or *permanent* (this address will never work on this
channel: fall back to the next one). :func:`send_with_retry` retries the transient ones with
exponential backoff. Credentials come from the settings object only; logs show masked
addresses (:func:`pipelines.numbers.mask_contact`), never a full number or address.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import email.utils
import hashlib
import io
import json
import logging
import queue
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Self

import urllib3

from pipelines.config import SmsSettings, SmtpSettings
from pipelines.errors import DataContractError, GatewayError, PermanentDeliveryError
from pipelines.layout import write_private
from pipelines.numbers import mask, mask_contact
from pipelines.reminders.mime import reminder_message_bytes
from pipelines.spreadsheet import csv_safe_cell

log = logging.getLogger(__name__)

ChannelName = Literal["email", "sms", "letter"]
CHANNELS: tuple[ChannelName, ...] = ("email", "sms", "letter")
LETTER_COLUMNS = ("reminder_id", "to", "language", "subject", "text")

E164 = re.compile(r"\+[1-9]\d{5,14}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DOT_ATOM = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_TOKEN = re.compile(r"\S+")
_LEADING_DOT = re.compile(rb"(?m)^\.")  # RFC 5321 4.5.2: a line starting with a dot gets another
_QUEUED_AS = re.compile(r"queued as\s+(\S+)", re.IGNORECASE)
_DIGIT_RUN = re.compile(r"\+?\d{7,}")  # any phone number, in whatever format a gateway echoes it


def utc_now() -> dt.datetime:
    # Acceptance by a gateway is a real event in time, not a business date: the one place in
    # this module where the wall clock is meant. Tests inject a fixed clock.
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class OutgoingReminder:
    """One rendered reminder ready for a channel. ``to``: e-mail address, E.164 number or postal ref."""

    reminder_id: str
    channel: ChannelName
    to: str = field(repr=False)
    language: str
    subject: str
    text: str = field(repr=False)
    due_on: dt.date
    html: str | None = field(default=None, repr=False)  # e-mail alternative part, when rendered

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"reminder {self.reminder_id!r}: unknown channel {self.channel!r}")
        # The id travels in mail headers, CSV cells and JSON: keep it one printable token.
        # (a regex, not a per-character generator: 10 of the send step's ~50 µs a reminder)
        if not self.reminder_id.isprintable() or not _TOKEN.fullmatch(self.reminder_id):
            raise ValueError(
                f"reminder id {self.reminder_id!r} must be non-empty printable text without spaces"
            )


@dataclass(frozen=True)
class SendResult:
    reminder_id: str
    channel: ChannelName
    provider_ref: str  # the gateway's id for the message (queue id, message id, batch line)
    accepted_at: dt.datetime  # UTC, when the gateway took it


@dataclass(frozen=True)
class SendFailure:
    reminder_id: str
    channel: ChannelName
    permanent: bool  # True: this address never works on this channel; use the next channel
    reason: str  # for the operator; addresses in it are masked


@dataclass(frozen=True)
class BatchOutcome:
    sent: tuple[SendResult, ...] = ()
    failed: tuple[SendFailure, ...] = ()

    @property
    def transient(self) -> tuple[SendFailure, ...]:
        return tuple(f for f in self.failed if not f.permanent)

    @property
    def permanent(self) -> tuple[SendFailure, ...]:
        return tuple(f for f in self.failed if f.permanent)


AcceptedHook = Callable[[SendResult], None]
"""Called with each acceptance as soon as the gateway's answer is read, before the caller's thread
hands the gateway its next message (the send journal's ``record``); it must be thread-safe."""


class Channel(Protocol):
    """A reminder channel. ``send_batch`` never raises for one bad message; it reports it.

    ``on_accepted``, when given, is called with every acceptance before the next message of the
    same thread goes out (:mod:`pipelines.reminders.journal`: no second send after a kill)."""

    @property
    def name(self) -> ChannelName: ...

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome: ...


def send_with_retry(
    channel: Channel,
    reminders: Sequence[OutgoingReminder],
    *,
    attempts: int = 3,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    on_accepted: AcceptedHook | None = None,
) -> BatchOutcome:
    """Send ``reminders``, retrying transient failures ``attempts - 1`` times with backoff.

    Waits ``backoff_s``, ``2 * backoff_s``, ... between attempts. The returned outcome holds
    every send and what still failed (permanent, or transient after the last attempt) so the
    caller can fall back to the next channel. ``on_accepted`` goes to the channel; it is not
    passed when None, so a channel written without the hook (a test's) still works.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    pending = list(reminders)
    sent: list[SendResult] = []
    permanent: list[SendFailure] = []
    transient: list[SendFailure] = []
    for attempt in range(attempts):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            log.info(
                "%s: retrying %d reminder(s) in %.1fs (attempt %d of %d)",
                channel.name,
                len(pending),
                delay,
                attempt + 1,
                attempts,
            )
            sleep(delay)
        outcome = channel.send_batch(pending, on_accepted) if on_accepted else channel.send_batch(pending)
        sent.extend(outcome.sent)
        permanent.extend(outcome.permanent)
        transient = list(outcome.transient)
        if not transient:
            break
        retry = {f.reminder_id for f in transient}
        pending = [r for r in pending if r.reminder_id in retry]
    if transient:
        log.warning(
            "%s: %d reminder(s) still failing after %d attempt(s), e.g. %s",
            channel.name,
            len(transient),
            attempts,
            transient[0].reason,
        )
    return BatchOutcome(tuple(sent), tuple(permanent + transient))


def check_batch(channel: ChannelName, reminders: Sequence[OutgoingReminder]) -> None:
    seen: set[str] = set()
    for r in reminders:
        if r.channel != channel:
            raise ValueError(f"reminder {r.reminder_id} is for {r.channel}, not {channel}")
        if r.reminder_id in seen:
            raise ValueError(f"reminder {r.reminder_id} appears twice in one {channel} batch")
        seen.add(r.reminder_id)


def summarise(channel: ChannelName, sent: list[SendResult], failed: list[SendFailure]) -> BatchOutcome:
    if sent or failed:
        log.info(
            "%s batch: %d sent, %d transient failure(s), %d permanent failure(s)",
            channel,
            len(sent),
            sum(not f.permanent for f in failed),
            sum(f.permanent for f in failed),
        )
    return BatchOutcome(tuple(sent), tuple(failed))


# --------------------------------------------------------------------------- e-mail


class _Pooled:
    """What the pooled channels share: worker threads started on first use and kept across
    batches, stopped by :meth:`close` (also on leaving ``with``); the channel can be used again."""

    _workers: ThreadPoolExecutor | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None


class SmtpChannel(_Pooled):
    """E-mail over SMTP (stdlib ``smtplib``): a pool of ``connections`` kept open across batches,
    each batch split among them, reconnecting on a drop; use as a context manager (or call
    :meth:`close`) to say goodbye to the server.

    Why threads over ``aiosmtplib``: the channel contract is a synchronous ``send_batch`` that
    reports per reminder and calls ``on_accepted`` before the same connection's next message;
    threads keep smtplib's tested STARTTLS/AUTH/SMTPUTF8 handling and that contract as it is,
    and the GIL costs nothing here because a thread waits on the server most of the time (the
    CPU a message costs was the ``email`` package's, now :mod:`pipelines.reminders.mime`).
    When the server offers PIPELINING (RFC 2920) MAIL, RCPT and DATA go in one write: two round
    trips a message instead of four. Measured with the simulators in another process
    (``python benchmarks/bench_night.py --channels-only``): 560 messages/s on one connection with
    ``email.message`` and four round trips before; see docs/lifecycle.md for the figures after.

    ``ssl_context`` verifies the server on STARTTLS (default: the system trust store; pass
    one that trusts a private or test CA). Every message carries ``X-Reminder-Id`` and a
    ``Message-ID`` derived from the reminder id, so a resend is recognisably the same message.
    """

    name: ChannelName = "email"

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        local_hostname: str | None = None,
        connections: int | None = None,
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._clock = clock
        self._local_hostname = local_hostname or socket.getfqdn()
        self._where = f"SMTP server {settings.host}:{settings.port}"
        _, _, domain = settings.sender.rpartition("@")
        self._domain = domain or "localhost"
        self._connections = connections or settings.connections
        if self._connections < 1:
            raise ValueError("connections must be at least 1")
        self._idle: queue.SimpleQueue[smtplib.SMTP] = queue.SimpleQueue()

    def close(self) -> None:
        """QUIT every idle connection and stop the worker threads (the channel can be used again)."""
        super().close()
        while True:
            try:
                _quit(self._idle.get_nowait())
            except queue.Empty:
                return

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome:
        check_batch(self.name, reminders)
        n = max(1, min(self._connections, len(reminders)))
        size = -(-len(reminders) // n)
        slices = [reminders[i : i + size] for i in range(0, len(reminders), size)]
        if len(slices) <= 1:
            done = [self._send_slice(reminders, on_accepted)]
        else:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(self._connections, thread_name_prefix="smtp")
            done = list(self._workers.map(lambda part: self._send_slice(part, on_accepted), slices))
        return summarise(self.name, [s for ok, _ in done for s in ok], [f for _, bad in done for f in bad])

    def _send_slice(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None
    ) -> tuple[list[SendResult], list[SendFailure]]:
        """One connection's share of a batch, in order; the connection goes back to the pool."""
        sent: list[SendResult] = []
        failed: list[SendFailure] = []
        conn: smtplib.SMTP | None = None
        with contextlib.suppress(queue.Empty):
            conn = self._idle.get_nowait()
        try:
            for index, reminder in enumerate(reminders):
                if not _EMAIL.fullmatch(reminder.to):
                    failed.append(self._failure(reminder, True, "not an e-mail address"))
                    continue
                try:
                    message = self._message(reminder)
                except ValueError as exc:  # e.g. a line break in the subject: a rendering bug
                    failed.append(self._failure(reminder, True, f"cannot build the e-mail: {exc}"))
                    continue
                # A dropped connection (server restart, idle or per-connection message limit)
                # gets one reconnect per message; the same Message-ID makes a resend harmless.
                for attempt in range(2):
                    if conn is None:
                        try:
                            conn = self._connect()
                        except GatewayError as exc:
                            log.error("%s", exc)
                            failed.extend(
                                self._failure(r, False, str(exc))
                                if _EMAIL.fullmatch(r.to)
                                else self._failure(r, True, "not an e-mail address")
                                for r in reminders[index:]
                            )
                            return sent, failed
                    try:
                        ref = self._deliver(conn, reminder, message)
                    except PermanentDeliveryError as exc:
                        failed.append(self._failure(reminder, True, str(exc)))
                    except GatewayError as exc:
                        dropped = conn.sock is None
                        if dropped:
                            conn = None
                            if attempt == 0:
                                continue
                        failed.append(self._failure(reminder, False, str(exc)))
                    else:
                        sent.append(SendResult(reminder.reminder_id, self.name, ref, self._clock()))
                        if on_accepted:  # before this connection's next MAIL FROM: the journal has it
                            on_accepted(sent[-1])
                        log.debug("email %s accepted for %s", reminder.reminder_id, mask_contact(reminder.to))
                    break
        except BaseException:
            if conn is not None:
                _quit(conn)
            raise
        if conn is not None and conn.sock is not None:
            self._idle.put(conn)
        return sent, failed

    def _failure(self, reminder: OutgoingReminder, permanent: bool, reason: str) -> SendFailure:
        if permanent:
            log.warning(
                "email %s to %s failed for good: %s", reminder.reminder_id, mask_contact(reminder.to), reason
            )
        return SendFailure(reminder.reminder_id, self.name, permanent, reason)

    def _connect(self) -> smtplib.SMTP:
        s = self._settings
        unreachable = (
            f"{self._where} unreachable ({{}}); check that it runs and RECYCLE_SMTP_HOST / RECYCLE_SMTP_PORT"
        )
        try:
            # Connecting in the constructor also records the host STARTTLS verifies the certificate for.
            conn = smtplib.SMTP(s.host, s.port, local_hostname=self._local_hostname, timeout=s.timeout_s)
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise GatewayError(unreachable.format(f"{type(exc).__name__}: {exc}")) from exc
        try:
            conn.ehlo_or_helo_if_needed()
            if s.starttls:
                if not conn.has_extn("starttls"):
                    raise GatewayError(
                        f"{self._where} does not offer STARTTLS although starttls is configured; "
                        "fix the server or RECYCLE_SMTP_STARTTLS (credentials are never sent in clear)"
                    )
                conn.starttls(context=self._ssl_context or ssl.create_default_context())
                conn.ehlo()
            if s.user:
                conn.login(s.user, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            _quit(conn)
            raise GatewayError(
                f"{self._where} rejected the credentials ({exc.smtp_code}); "
                "check RECYCLE_SMTP_USER / RECYCLE_SMTP_PASSWORD or the Airflow Connection"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            _quit(conn)
            raise GatewayError(
                f"{self._where} does not offer AUTH; servers often offer it only after STARTTLS "
                "(set RECYCLE_SMTP_STARTTLS=true) — credentials are configured but cannot be used"
            ) from exc
        except ssl.SSLError as exc:
            _quit(conn)
            raise GatewayError(
                f"{self._where}: TLS failed ({exc.reason}); check the server certificate and the CA trusted"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            _quit(conn)
            raise GatewayError(unreachable.format(f"{type(exc).__name__}: {exc}")) from exc
        except GatewayError:
            _quit(conn)
            raise
        return conn

    def _message(self, r: OutgoingReminder) -> bytes:
        # An internationalised address needs UTF-8 headers (RFC 6532), sent with SMTPUTF8.
        return reminder_message_bytes(
            sender=self._settings.sender, to=r.to, subject=r.subject,
            date=email.utils.format_datetime(self._clock()), message_id=self._message_id(r.reminder_id),
            reminder_id=r.reminder_id, language=r.language, text=r.text, html=r.html,
        )  # fmt: skip

    def _message_id(self, reminder_id: str) -> str:
        token = (
            reminder_id
            if _DOT_ATOM.fullmatch(reminder_id)
            else ("r." + hashlib.sha256(reminder_id.encode()).hexdigest()[:32])
        )
        return f"<{token}@{self._domain}>"

    def _deliver(self, conn: smtplib.SMTP, r: OutgoingReminder, message: bytes) -> str:
        options: list[str] = []
        if not r.to.isascii():
            if not conn.has_extn("smtputf8"):
                raise PermanentDeliveryError(f"{self._where} cannot take the non-ASCII address (no SMTPUTF8)")
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        reply: bytes | str
        try:
            if conn.has_extn("pipelining"):
                code, reply = self._pipelined(conn, r.to, message, options)
            else:
                code, reply = conn.mail(self._settings.sender, options)
                if code != 250:
                    self._refused(conn, code, reply, "sender", r.to)
                code, reply = conn.rcpt(r.to)
                if code not in (250, 251):
                    self._refused(conn, code, reply, "recipient", r.to)
                try:
                    code, reply = conn.data(message)
                except smtplib.SMTPDataError as exc:
                    code, reply = exc.smtp_code, exc.smtp_error
            if code != 250:
                self._refused(conn, code, reply, "message", r.to)
        except smtplib.SMTPResponseException as exc:
            conn.close()
            raise GatewayError(f"{self._where} answered {exc.smtp_code} unexpectedly") from exc
        except OSError as exc:  # smtplib's SMTPServerDisconnected is one
            conn.close()
            raise GatewayError(f"{self._where} dropped the connection ({exc})") from exc
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        queued = _QUEUED_AS.search(text)
        return queued.group(1) if queued else self._message_id(r.reminder_id).strip("<>")

    def _pipelined(
        self, conn: smtplib.SMTP, to: str, message: bytes, options: list[str]
    ) -> tuple[int, bytes]:
        """RFC 2920: MAIL, RCPT and DATA in one write, their three replies read, then the content;
        the content's reply is returned. A refusal is raised by stage once all replies are read."""
        extra = "".join(" " + o for o in options)
        encoding = "utf-8" if options else "ascii"
        commands = f"MAIL FROM:{smtplib.quoteaddr(self._settings.sender)}{extra}\r\n"
        commands += f"RCPT TO:{smtplib.quoteaddr(to)}\r\nDATA\r\n"
        conn.send(commands.encode(encoding))
        (mail, mail_reply), (rcpt, rcpt_reply), (data, data_reply) = (conn.getreply() for _ in range(3))
        if data == 354 and (mail != 250 or rcpt not in (250, 251)):
            conn.send(b".\r\n")  # a server that opened DATA anyway gets an empty message, refused below
            conn.getreply()
        if mail != 250:
            self._refused(conn, mail, mail_reply, "sender", to)
        if rcpt not in (250, 251):
            self._refused(conn, rcpt, rcpt_reply, "recipient", to)
        if data != 354:
            self._refused(conn, data, data_reply, "message", to)
        body = _LEADING_DOT.sub(b"..", message)
        conn.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return conn.getreply()

    def _refused(self, conn: smtplib.SMTP, code: int, reply: bytes | str, stage: str, to: str) -> None:
        text = _scrub(reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply), to)
        if code == 421:
            conn.close()  # the server is closing the channel; the caller reconnects
        else:
            try:
                conn.rset()
            except (smtplib.SMTPException, OSError):
                conn.close()
        detail = f"{self._where} refused the {stage}: {code} {text[:200]}"
        # 5xx on the recipient or the message is about this address or content: retrying on this
        # channel cannot help. A refused sender is our configuration (RECYCLE_SMTP_FROM), not
        # the subscriber's address, so it stays transient and visible.
        if code >= 500 and stage != "sender":
            raise PermanentDeliveryError(detail)
        raise GatewayError(detail if stage != "sender" else detail + "; check RECYCLE_SMTP_FROM")


def _scrub(reply: str, contact: str) -> str:
    """A gateway's reply with the contact masked: servers echo the recipient in their errors."""
    reply = re.sub(re.escape(contact), mask_contact(contact), reply, flags=re.IGNORECASE)
    return _DIGIT_RUN.sub(lambda m: mask(m.group()), reply)


def _quit(conn: smtplib.SMTP) -> None:
    try:
        if conn.sock is not None:
            conn.quit()
    except (smtplib.SMTPException, OSError):
        conn.close()


# --------------------------------------------------------------------------- SMS


class SmsHttpChannel(_Pooled):
    """SMS through an HTTP gateway: JSON ``{"reminder_id", "to", "text"}`` POSTed to ``settings.url``.

    2xx is sent (the provider reference is the response's ``id`` or ``message_id``); 408, 425,
    429, 5xx, redirects and network errors are transient; any other 4xx is permanent. Up to
    ``concurrency`` (default ``[channels.sms] concurrency``) requests are in flight from as many
    worker threads over one keep-alive connection pool; pool and threads are kept across
    batches (use as a context manager, or call :meth:`close`). After ``max_consecutive_errors``
    network errors in a row the rest of the batch is not tried (reported transient), so a dead
    gateway costs seconds, not one timeout per message. Redirects are not followed and nothing
    is retried inside a request: a retry is a new attempt of :func:`send_with_retry`, and the
    gateway deduplicates on ``reminder_id``.

    On urllib3's connection pool, not httpx: against the loopback gateway simulator a request
    cost this process 738-896 µs of CPU through ``httpx.Client`` and 297-342 µs through
    ``urllib3.HTTPConnectionPool`` (``python benchmarks/bench_night.py --channels-only``), and
    HTTP SMS carries about half a night's reminders. urllib3 keeps what a pool is for: a
    connection the gateway closed while idle is noticed before reuse, TLS verified by default.
    """

    name: ChannelName = "sms"

    def __init__(
        self,
        settings: SmsSettings,
        *,
        concurrency: int | None = None,
        max_consecutive_errors: int = 5,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        concurrency = concurrency or settings.concurrency
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._settings = settings
        self._concurrency = concurrency
        self._max_errors = max_consecutive_errors
        self._ssl_context = ssl_context
        self._clock = clock
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._target = urllib3.util.parse_url(settings.url).request_uri  # path and query
        self._headers = {"Content-Type": "application/json"}
        if settings.token:
            self._headers["Authorization"] = f"Bearer {settings.token}"

    def close(self) -> None:
        """Stop the worker threads and close the pool's connections (usable again after)."""
        super().close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _open(self) -> tuple[urllib3.HTTPConnectionPool, ThreadPoolExecutor | None]:
        if self._pool is None:
            extra: dict[str, object] = {}
            if self._ssl_context is not None and self._settings.url.startswith("https:"):
                extra["ssl_context"] = self._ssl_context
            self._pool = urllib3.connection_from_url(
                self._settings.url,
                maxsize=self._concurrency,
                block=True,
                retries=False,
                timeout=urllib3.Timeout(total=self._settings.timeout_s),
                **extra,
            )
        if self._workers is None and self._concurrency > 1:
            self._workers = ThreadPoolExecutor(self._concurrency, thread_name_prefix="sms")
        return self._pool, self._workers

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome:
        check_batch(self.name, reminders)
        if not reminders:
            return BatchOutcome()
        breaker = _Breaker(self._max_errors)
        pool, workers = self._open()

        def one(reminder: OutgoingReminder) -> SendResult | SendFailure:
            result = self._send_one(pool, breaker, reminder)
            if on_accepted and isinstance(result, SendResult):
                on_accepted(result)  # in this worker, before it takes its next message
            return result

        results = [one(r) for r in reminders] if workers is None else list(workers.map(one, reminders))
        sent = [r for r in results if isinstance(r, SendResult)]
        failed = [r for r in results if isinstance(r, SendFailure)]
        return summarise(self.name, sent, failed)

    def _send_one(
        self, pool: urllib3.HTTPConnectionPool, breaker: _Breaker, r: OutgoingReminder
    ) -> SendResult | SendFailure:
        url = self._settings.url
        if not E164.fullmatch(r.to):
            return self._failure(r, True, "not an E.164 number")
        if breaker.open:
            return self._failure(r, False, f"not tried: SMS gateway {url} unreachable in this batch")
        body = json.dumps({"reminder_id": r.reminder_id, "to": r.to, "text": r.text}, ensure_ascii=False)
        try:
            resp = pool.urlopen(
                "POST", self._target, body=body.encode("utf-8"), headers=self._headers, redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            breaker.record(ok=False)
            return self._failure(
                r,
                False,
                f"SMS gateway {url} unreachable ({_cause(exc)}); check that it runs and RECYCLE_SMS_URL",
            )
        breaker.record(ok=True)
        status = resp.status
        if 200 <= status < 300:
            return SendResult(
                r.reminder_id, self.name, _provider_ref(resp.data) or r.reminder_id, self._clock()
            )
        text = _scrub(resp.data[:200].decode("utf-8", "replace"), r.to)
        reason = f"SMS gateway {url} answered {status}: {text}"
        if status in (401, 403):
            reason += "; check RECYCLE_SMS_TOKEN"
        transient = status in (408, 425, 429) or status >= 500 or 300 <= status < 400
        return self._failure(r, not transient, reason)

    def _failure(self, reminder: OutgoingReminder, permanent: bool, reason: str) -> SendFailure:
        if permanent:
            log.warning(
                "sms %s to %s failed for good: %s", reminder.reminder_id, mask_contact(reminder.to), reason
            )
        return SendFailure(reminder.reminder_id, self.name, permanent, reason)


def _cause(exc: urllib3.exceptions.HTTPError) -> str:
    """The kind of a network error, unwrapped from urllib3's wrapper (e.g. ``ConnectTimeoutError``,
    ``SSLError``): the operator's first clue, never a message that might quote the request."""
    inner = getattr(exc, "reason", None)
    return type(inner if isinstance(inner, Exception) else exc).__name__


class _Breaker:
    """Consecutive network errors within one batch, shared by its worker threads."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._errors = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        with self._lock:
            return self._errors >= self._limit

    def record(self, *, ok: bool) -> None:
        with self._lock:
            self._errors = 0 if ok else self._errors + 1


def _provider_ref(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict):
        for key in ("id", "message_id"):
            value = doc.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
    return None


# --------------------------------------------------------------------------- letters


def _csv_line(row: Sequence[str]) -> bytes:
    """One RFC 4180 row (CRLF; quoted fields keep their newlines), UTF-8."""
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    return buf.getvalue().encode("utf-8")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def letter_batch_path(out_dir: Path, day: dt.date) -> Path:
    """The print house's batch file for ``day``: ``<out_dir>/letters_<YYYY-MM-DD>.csv``."""
    return out_dir / f"letters_{day.isoformat()}.csv"


# The letters CSV carries the subscriber's postal reference, language, subject and text: free
# text from the carrier's systems, every cell neutralised by the one rule (pipelines.spreadsheet).
# An E.164 number is no exception: ``+8613800000001`` unescaped is a formula too; the print
# house strips one leading ``'`` before ``= + - @`` TAB or CR. Only ``reminder_id`` is written as
# is: the pipeline's own key (``_read`` upserts by it), never starting with any of them.


class LetterBatchChannel:
    """Letters for the print house: one UTF-8 CSV per day (columns :data:`LETTER_COLUMNS`, cells
    neutralised by :func:`csv_safe_cell`).

    Sending upserts into the day's file, ordered by reminder id, and replaces it atomically:
    sending the same reminders again, in any order or batching, yields the same bytes. The rows
    are kept between batches, encoded, and the file read again only when someone else changed
    it (its size or mtime): reading it back and writing every row again each batch made a
    night's 53,603 letters 2,275/s (3,411/s without the reading).
    """

    name: ChannelName = "letter"

    def __init__(self, out_dir: Path, day: dt.date, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.path = letter_batch_path(out_dir, day)
        self._clock = clock
        self._rows: dict[str, bytes] = {}  # reminder id -> its CSV line, encoded
        self._stamp: tuple[int, int] | None = None  # (size, mtime_ns) of the file we last wrote

    def send_batch(
        self, reminders: Sequence[OutgoingReminder], on_accepted: AcceptedHook | None = None
    ) -> BatchOutcome:
        check_batch(self.name, reminders)
        failed = [
            SendFailure(r.reminder_id, self.name, True, "no postal reference")
            for r in reminders
            if not r.to.strip()
        ]
        good = [r for r in reminders if r.to.strip()]
        if not good:
            return summarise(self.name, [], failed)
        lines = self._current()
        for r in good:
            cells = (r.to, r.language, r.subject, r.text)
            lines[r.reminder_id] = _csv_line((r.reminder_id, *(csv_safe_cell(c) for c in cells)))
        body = b"".join([_csv_line(LETTER_COLUMNS), *(lines[k] for k in sorted(lines))])
        try:
            write_private(self.path, body)  # names and addresses: 0600 in 0700
            self._stamp = _stamp(self.path)
        except OSError as exc:
            reason = f"could not write the letter batch {self.path} ({exc}); check disk space and permissions"
            log.error("%s", reason)
            failed.extend(SendFailure(r.reminder_id, self.name, False, reason) for r in good)
            self._stamp = None  # what is on disk is not what we hold: read it again
            return summarise(self.name, [], failed)
        accepted_at = self._clock()
        sent = [
            SendResult(r.reminder_id, self.name, f"{self.path.name}#{r.reminder_id}", accepted_at)
            for r in good
        ]
        if on_accepted:  # the whole batch is in the file at once: it was accepted at once
            for result in sent:
                on_accepted(result)
        return summarise(self.name, sent, failed)

    def _current(self) -> dict[str, bytes]:
        """The file's rows (reminder id -> its CSV line): those we hold, unless the file is not
        the one we wrote last."""
        if self._stamp is None or _stamp(self.path) != self._stamp:
            self._rows = {key: _csv_line(row) for key, row in self._read().items()}
        return self._rows

    def _read(self) -> dict[str, tuple[str, ...]]:
        if not self.path.exists():
            return {}
        with self.path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is not None and tuple(header) != LETTER_COLUMNS:
                raise DataContractError(
                    f"{self.path}: header {header} is not {list(LETTER_COLUMNS)}; the batch file was "
                    "changed outside the pipeline — restore it or move it aside and rerun the send step"
                )
            return {row[0]: tuple(row) for row in reader if row}
