"""Loopback reminder gateways for the demo, tests and benchmarks, and the receipts they send back.

:class:`GatewaySimulator` runs a real SMTP server (aiosmtpd) and a real HTTP SMS gateway on
127.0.0.1 (ephemeral ports) that take reminders through the same protocols as production
and record them. :func:`write_receipts` then writes the ``receipts_<D>.csv`` drop those
gateways (and the print house) would send back: realistic, per-channel outcomes that are a
pure function of (seed, reminder_id, address), so the same reminders give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import ssl
import tempfile
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

import duckdb
import pyarrow as pa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pipelines.config import SmsSettings, SmtpSettings
from pipelines.db import sql_str
from pipelines.layout import write_private
from pipelines.reminders.channels import LETTER_COLUMNS

RECEIPT_COLUMNS = ("reminder_id", "channel", "status", "at", "provider_ref")
_LETTER_FILE = re.compile(r"letters_(\d{4}-\d{2}-\d{2})\.csv")


@dataclass(frozen=True)
class ReceivedMessage:
    """A reminder as a simulated gateway received it; ``raw`` is the bytes on the wire."""

    order: int  # 0-based arrival order across both gateways
    channel: Literal["email", "sms"]
    reminder_id: str
    to: str = field(repr=False)
    provider_ref: str
    raw: bytes = field(repr=False)  # the RFC 5322 message / the JSON request body

    # Decoded on demand: parsing every message as it arrives would make the simulator, not the
    # channel, the bottleneck of a benchmark.
    @property
    def subject(self) -> str:
        """The decoded subject; empty for sms."""
        return str(self._email().get("Subject", "")) if self.channel == "email" else ""

    @property
    def text(self) -> str:
        """The decoded plain-text body, or the SMS text."""
        if self.channel == "sms":
            return str(json.loads(self.raw)["text"])
        body = self._email().get_body(("plain",))
        return body.get_content() if isinstance(body, EmailMessage) else ""

    def _email(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg


class AcceptedMessage(Protocol):
    """What :func:`write_receipts` needs of an accepted message (a :class:`ReceivedMessage` fits)."""

    @property
    def reminder_id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def to(self) -> str: ...
    @property
    def provider_ref(self) -> str: ...


class GatewaySimulator:
    """SMTP + HTTP SMS gateways on 127.0.0.1, as a context manager.

    ``refuse``: addresses / numbers the gateways reject for good (SMTP 550 at RCPT, HTTP 400).
    ``smtp_tls`` + ``smtp_auth``: require STARTTLS and AUTH (LOGIN/PLAIN) with that user and
    password. ``sms_token``: require ``Authorization: Bearer <token>``.
    ``smtp_max_per_connection``: answer 421 and hang up after that many messages on one
    connection, as production relays do.
    """

    def __init__(
        self,
        *,
        refuse: Collection[str] = (),
        smtp_tls: ssl.SSLContext | None = None,
        smtp_auth: tuple[str, str] | None = None,
        sms_token: str | None = None,
        sms_tls: ssl.SSLContext | None = None,
        smtp_max_per_connection: int | None = None,
        sender: str = "reminders@carrier.example",
    ) -> None:
        self._refuse = frozenset(a.lower() for a in refuse)
        self._smtp_tls = smtp_tls
        self._smtp_auth = smtp_auth
        self._sms_token = sms_token
        self._sms_tls = sms_tls
        self._max_per_connection = smtp_max_per_connection
        self._sender = sender
        self._lock = threading.Lock()
        self._received: list[ReceivedMessage] = []
        self._order = 0
        self._smtp: Controller | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> GatewaySimulator:
        try:
            self.start()
        except BaseException:
            self.stop()  # whichever server did start must not outlive the failure
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        # aiosmtpd logs every envelope address at INFO; logs must never show a full contact.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        kwargs: dict[str, Any] = {}
        if self._smtp_tls is not None:
            kwargs.update(tls_context=self._smtp_tls, require_starttls=True)
        if self._smtp_auth is not None:
            kwargs.update(
                authenticator=_Authenticator(*self._smtp_auth),
                auth_required=True,
                auth_require_tls=self._smtp_tls is not None,
            )
        if self._max_per_connection is not None:
            n = self._max_per_connection
            kwargs["command_call_limit"] = {"MAIL": n, "RCPT": n, "DATA": n, "*": 1 << 30}
        self._smtp = _EphemeralController(
            _SmtpHandler(self), hostname="127.0.0.1", port=0, server_hostname="localhost", **kwargs
        )
        self._smtp.start()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _SmsHandler)
        self._http.simulator = self  # type: ignore[attr-defined]
        if self._sms_tls is not None:  # HTTPS: every accepted connection does the TLS handshake
            self._http.socket = self._sms_tls.wrap_socket(self._http.socket, server_side=True)
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="sms-sim", daemon=True)
        self._http_thread.start()

    def stop(self) -> None:
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None

    # ----------------------------------------------------------------- endpoints

    def smtp_settings(self) -> SmtpSettings:
        if self._smtp is None:
            raise RuntimeError("the simulator is not running; use it as a context manager")
        user, password = self._smtp_auth or (None, None)
        return SmtpSettings(
            host="127.0.0.1",
            port=self._smtp.port,
            user=user,
            password=password,
            sender=self._sender,
            starttls=self._smtp_tls is not None,
            timeout_s=5.0,
        )

    def sms_settings(self) -> SmsSettings:
        if self._http is None:
            raise RuntimeError("the simulator is not running; use it as a context manager")
        port = self._http.server_address[1]
        scheme = "https" if self._sms_tls is not None else "http"
        return SmsSettings(url=f"{scheme}://127.0.0.1:{port}/send", token=self._sms_token, timeout_s=5.0)

    # ----------------------------------------------------------------- records

    @property
    def received(self) -> tuple[ReceivedMessage, ...]:
        with self._lock:
            return tuple(self._received)

    def drain(self) -> tuple[ReceivedMessage, ...]:
        """Everything received so far, forgetting it (call once per simulated day)."""
        with self._lock:
            out, self._received = tuple(self._received), []
            return out

    def _refuses(self, address: str) -> bool:
        return address.lower() in self._refuse

    def _record(self, channel: Literal["email", "sms"], reminder_id: str, to: str, raw: bytes) -> str:
        ref = _sim_ref(channel, reminder_id)
        with self._lock:
            self._received.append(ReceivedMessage(self._order, channel, reminder_id, to, ref, raw))
            self._order += 1
        return ref


def _sim_ref(channel: str, reminder_id: str) -> str:
    return "sim-" + hashlib.sha256(f"{channel}|{reminder_id}".encode()).hexdigest()[:16]


class _EphemeralController(Controller):
    """aiosmtpd's Controller bound to port 0: learn the port the OS chose before the self-check."""

    def _trigger_server(self) -> None:
        server: Any = self.server
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class _Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self._user
            and auth_data.password == self._password
        )
        # handled=False: let aiosmtpd answer 535 itself (handled=True would leave the client waiting)
        return AuthResult(success=ok, handled=False)


class _SmtpHandler:
    def __init__(self, simulator: GatewaySimulator) -> None:
        self._sim = simulator

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # aiosmtpd reads commands one line at a time, so it takes RFC 2920 pipelining as it is;
        # it only does not say so. Production relays (Postfix, Exim) offer it.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self._sim._refuses(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"  # as Postfix says it
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
        reminder_id = str(headers.get("X-Reminder-Id", "")).strip()
        if not reminder_id:
            return "554 5.6.0 Message rejected: no X-Reminder-Id header"
        ref = ""
        for rcpt in envelope.rcpt_tos:
            ref = self._sim._record("email", reminder_id, rcpt, raw)
        return f"250 2.0.0 Ok: queued as {ref}"


class _SmsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the channel's client expects
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait 40 ms for an ACK
    timeout = 30

    def do_POST(self) -> None:
        sim: GatewaySimulator = self.server.simulator  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/send":
            self._reply(404, {"error": "not found"})
            return
        if sim._sms_token is not None and self.headers.get("Authorization") != f"Bearer {sim._sms_token}":
            self._reply(401, {"error": "missing or wrong bearer token"})
            return
        try:
            doc = json.loads(raw)
        except ValueError:
            self._reply(400, {"error": "body is not JSON"})
            return
        if not isinstance(doc, dict) or not all(
            isinstance(doc.get(k), str) and doc[k] for k in ("reminder_id", "to", "text")
        ):
            self._reply(400, {"error": "reminder_id, to and text are required strings"})
            return
        if sim._refuses(doc["to"]):
            self._reply(400, {"error": "invalid destination number"})
            return
        ref = sim._record("sms", doc["reminder_id"], doc["to"], raw)
        self._reply(200, {"message_id": ref, "status": "accepted"})

    def _reply(self, status: int, doc: dict[str, str]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines are noise here; what arrived is in GatewaySimulator.received


# --------------------------------------------------------------------------- receipts


@dataclass(frozen=True)
class _Profile:
    unreachable: float  # share of addresses that never work on this channel
    delivered: float  # overall delivered share, unreachable addresses included
    failed_share: float  # of the remaining non-delivered: failed (else expired)
    acknowledged: float  # share of delivered ones the owner also acknowledges
    delay_min: int  # days from sending to the receipt
    delay_max: int


_PROFILES: dict[str, _Profile] = {
    "email": _Profile(
        unreachable=0.05, delivered=0.85, failed_share=0.6, acknowledged=0.10, delay_min=0, delay_max=0
    ),
    "sms": _Profile(
        unreachable=0.03, delivered=0.92, failed_share=0.3, acknowledged=0.0, delay_min=0, delay_max=0
    ),
    "letter": _Profile(
        unreachable=0.01, delivered=0.97, failed_share=1.0, acknowledged=0.0, delay_min=2, delay_max=5
    ),
}


def write_receipts(
    accepted: Iterable[AcceptedMessage],
    letters_dir: Path | None,
    day: dt.date,
    inbox_dir: Path,
    seed: int,
) -> Path | None:
    """Write ``inbox_dir/receipts_<day>.csv``: the receipts gateways send back for ``day``.

    ``accepted`` are the e-mails and SMS the gateways took on ``day`` (e.g.
    :meth:`GatewaySimulator.drain`); their receipts fall within ``day``. Letters are read from
    the print house batches in ``letters_dir`` and answered 2–5 days after their batch day, so
    the call for ``day`` covers the letters whose delivery falls on ``day``. Rates: e-mail ~85%
    delivered (~10% of those also acknowledged), SMS ~92%, letters ~97%; ~5% / 3% / 1% of
    addresses never work on that channel. Each outcome depends only on (seed, reminder_id,
    address), so the same input gives a byte-identical file. Returns the path, or ``None``
    when there is nothing to report.

    A file already there is never overwritten with less: its rows stay and only receipts of
    (reminder, channel) pairs it lacks are added. A replay of a night sends nothing (every
    reminder went out the first time), so without this rule its empty ``accepted`` would
    rewrite the next night's drop with the letters' receipts alone (535 lines became 81) and
    that night's rerun would refuse the changed file. A replay leaves the file byte-identical
    (not even rewritten); a write is atomic and 0600 (it is a drop of the carrier's inbox).
    """
    messages = _accepted_table(accepted)
    letter_files = _letter_batches(letters_dir, day)
    out = inbox_dir / f"receipts_{day.isoformat()}.csv"
    existing = out if out.is_file() else None
    if not messages.num_rows and not letter_files:
        return existing
    data = _receipts_csv(messages, letter_files, day, seed, out.name, existing)
    if data.count(b"\n") <= 1:
        return None  # letters read, but none of them is answered on this day
    if existing is None or data != existing.read_bytes():
        write_private(out, data)
    return out


def _accepted_table(accepted: Iterable[AcceptedMessage]) -> pa.Table:
    """The e-mails and SMS the gateways took, as the ``accepted`` table of the receipts query."""
    ids: list[str] = []
    channels: list[str] = []
    addresses: list[str] = []
    refs: list[str] = []
    for m in accepted:
        if m.channel not in ("email", "sms"):
            raise ValueError(
                f"reminder {m.reminder_id}: channel {m.channel!r}; letters come from letters_dir"
            )
        ids.append(m.reminder_id)
        channels.append(m.channel)
        addresses.append(m.to)
        refs.append(m.provider_ref)
    return pa.table(
        {
            "reminder_id": pa.array(ids, pa.string()),
            "channel": pa.array(channels, pa.string()),
            "address": pa.array(addresses, pa.string()),
            "provider_ref": pa.array(refs, pa.string()),
        }
    )


def _profiles_table() -> pa.Table:
    """:data:`_PROFILES` as the ``profiles`` table of the receipts query."""
    return pa.table(
        {
            "channel": list(_PROFILES),
            "unreachable": [p.unreachable for p in _PROFILES.values()],
            # delivered share among reachable addresses, so the overall share is the profile's
            "delivered": [p.delivered / (1 - p.unreachable) for p in _PROFILES.values()],
            "failed_share": [p.failed_share for p in _PROFILES.values()],
            "acknowledged": [p.acknowledged for p in _PROFILES.values()],
            "delay_min": [p.delay_min for p in _PROFILES.values()],
            "delay_span": [p.delay_max - p.delay_min + 1 for p in _PROFILES.values()],
        }
    )


def _letters_sql(letter_files: list[Path]) -> str:
    """The letters of the print house batches (reminder_id, address, sent_on) as SQL over ``$files``."""
    if not letter_files:
        return "SELECT NULL::VARCHAR AS reminder_id, NULL::VARCHAR AS address, NULL::DATE AS sent_on LIMIT 0"
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in LETTER_COLUMNS)
    return (
        'SELECT reminder_id, "to" AS address, '
        "regexp_extract(filename, 'letters_(\\d{4}-\\d{2}-\\d{2})\\.csv$', 1)::DATE AS sent_on "
        f"FROM read_csv($files, header = true, auto_detect = false, columns = {{{columns}}}, "
        "quote = '\"', escape = '\"', filename = true)"
    )


def _receipts_csv(
    messages: pa.Table,
    letter_files: list[Path],
    day: dt.date,
    seed: int,
    file_name: str,
    existing: Path | None,
) -> bytes:
    """The receipts file's bytes, as DuckDB's CSV writer produces them (header line included);
    with ``existing``, its rows and the new receipts of (reminder, channel) pairs it lacks."""
    params: dict[str, object] = {"seed": str(seed), "day": day}
    if letter_files:
        params["files"] = [str(f) for f in letter_files]
    query = _RECEIPTS_SQL.replace("{letters}", _letters_sql(letter_files))
    if existing is not None:
        params["existing"] = str(existing)
        query = _MERGE_SQL.format(fresh=query)
    con = duckdb.connect()
    try:
        con.register("accepted", messages)
        con.register("profiles", _profiles_table())
        with tempfile.TemporaryDirectory(prefix="receipts-") as tmp:
            tmp_csv = Path(tmp) / file_name
            con.execute(
                f"COPY ({query}) TO {sql_str(tmp_csv)} (FORMAT csv, HEADER true, DELIMITER ',')",
                params,
            )
            return tmp_csv.read_bytes()
    finally:
        con.close()


# Draws are uniform on [0, 1) from 52-bit slices of SHA-256, so outcomes are stable across
# runs, machines and DuckDB versions (DuckDB's own hash() is not). One digest per message
# gives four independent draws; reachability hashes the address alone, so the same address
# always fails on that channel.
_U = "(('0x' || substr({h}, {at}, 13))::UBIGINT / 4503599627370496.0)"
_RECEIPTS_SQL = f"""
WITH sources AS (
    SELECT reminder_id, channel, address, provider_ref, $day::DATE AS sent_on FROM accepted
    UNION ALL
    SELECT reminder_id, 'letter', address, NULL, sent_on FROM ({{letters}})
),
msgs AS (
    -- a message a gateway took twice (a resend after a dropped connection) has one fate
    SELECT reminder_id, channel, address, min(provider_ref) AS provider_ref, min(sent_on) AS sent_on
    FROM sources GROUP BY reminder_id, channel, address
),
hashed AS (
    SELECT *,
        sha256($seed || '|reach|' || channel || '|' || address) AS h_reach,
        sha256($seed || '|' || channel || '|' || reminder_id || '|' || address) AS h
    FROM msgs
),
drawn AS (
    SELECT m.*, p.*,
        {_U.format(h="h_reach", at=1)} AS u_reach,
        {_U.format(h="h", at=1)} AS u_outcome,
        {_U.format(h="h", at=14)} AS u_time,
        {_U.format(h="h", at=27)} AS u_ack,
        {_U.format(h="h", at=40)} AS u_delay
    FROM hashed m JOIN profiles p USING (channel)
),
due AS (
    SELECT *,
        CASE
            WHEN u_reach < unreachable THEN 'failed'
            WHEN u_outcome < delivered THEN 'delivered'
            WHEN u_outcome < delivered + (1 - delivered) * failed_share THEN 'failed'
            ELSE 'expired'
        END AS status,
        -- receipts arrive within the first 20 hours, leaving room for a later acknowledgement
        floor(u_time * 72000)::BIGINT AS offset_s,
        coalesce(provider_ref, 'PH' || upper(substr(sha256('letter|' || reminder_id), 1, 14))) AS ref
    FROM drawn
    WHERE sent_on + (delay_min + floor(u_delay * delay_span))::INTEGER = $day
),
receipts AS (
    SELECT reminder_id, channel, status, offset_s, ref FROM due
    UNION ALL
    -- u_ack / acknowledged is again uniform on [0, 1) for the acknowledged ones
    SELECT reminder_id, channel, 'acknowledged', offset_s + 60
        + floor((u_ack / acknowledged) * (86339 - offset_s - 60))::BIGINT, ref
    FROM due WHERE status = 'delivered' AND u_ack < acknowledged
)
SELECT reminder_id, channel, status,
    strftime($day::TIMESTAMP + to_seconds(offset_s), '%Y-%m-%dT%H:%M:%SZ') AS at,
    ref AS provider_ref
FROM receipts
ORDER BY offset_s, reminder_id, channel, status
"""


# The rows of an existing receipts file (read as the texts they are) and the fresh receipts of the
# pairs it lacks, in the receipts query's order: ``at`` is a fixed-width text of its offset_s.
_MERGE_SQL = (
    "WITH old AS (SELECT * FROM read_csv($existing, header = true, auto_detect = false, columns = {{"
    + ", ".join(f"'{c}': 'VARCHAR'" for c in RECEIPT_COLUMNS)
    + """}}, quote = '"', escape = '"')),
fresh AS ({fresh})
SELECT * FROM old
UNION ALL
SELECT * FROM fresh ANTI JOIN old USING (reminder_id, channel)
ORDER BY "at", reminder_id, channel, status
"""
)


def _letter_batches(letters_dir: Path | None, day: dt.date) -> list[Path]:
    """The print house batches whose letters may be answered on ``day`` (sent 2–5 days before)."""
    if letters_dir is None or not letters_dir.is_dir():
        return []
    profile = _PROFILES["letter"]
    found = []
    for path in sorted(letters_dir.glob("letters_*.csv")):
        match = _LETTER_FILE.fullmatch(path.name)
        if (
            match
            and profile.delay_min <= (day - dt.date.fromisoformat(match.group(1))).days <= profile.delay_max
        ):
            found.append(path)
    return found
