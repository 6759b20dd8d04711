"""Channels against real local servers: aiosmtpd (plain and STARTTLS + AUTH), HTTP gateways, files."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipelines.config import Settings, SmsSettings, SmtpSettings
from pipelines.dev.simulators import GatewaySimulator
from pipelines.errors import DataContractError
from pipelines.reminders.channels import (
    LETTER_COLUMNS,
    LetterBatchChannel,
    OutgoingReminder,
    SmsHttpChannel,
    SmtpChannel,
    letter_batch_path,
    send_with_retry,
)
from pipelines.reminders.templates import ReminderContext, render_reminder

DAY = dt.date(2026, 3, 2)
FIXED = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
DEFAULTS = Settings()


def clock() -> dt.datetime:
    return FIXED


def email_reminder(i: int, to: str | None = None, language: str = "zh-CN") -> OutgoingReminder:
    ctx = ReminderContext(
        reminder_id=f"rem-{i:04d}",
        msisdn=f"+86138{i:04d}5678",
        channel="email",
        language=language,
        disconnected_on=dt.date(2026, 1, 31),
        release_on=dt.date(2026, 5, 1),
        reminder_no=1,
        final=False,
        carrier_name=DEFAULTS.carrier_name,
        unbind_url=DEFAULTS.unbind_url,
        national_unbind_service=DEFAULTS.national_unbind_service,
    )
    r = render_reminder(ctx)
    return OutgoingReminder(
        ctx.reminder_id, "email", to or f"owner{i}@example.cn", language, r.subject, r.text, DAY, r.html
    )


def sms_reminder(i: int, to: str | None = None) -> OutgoingReminder:
    return OutgoingReminder(
        f"sms-{i:04d}", "sms", to or f"+86139{i:08d}", "zh-CN", "", f"【Example Mobile】短信{i}", DAY
    )


def letter_reminder(i: int, text: str = '正文\n第二行, "引号"') -> OutgoingReminder:
    return OutgoingReminder(f"let-{i:04d}", "letter", f"SUB{i:06d}", "zh-CN", "提醒函", text, DAY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- SMTP


def test_smtp_delivers_utf8_reminders_with_reminder_id_and_stable_message_id() -> None:
    reminders = [email_reminder(1), email_reminder(2, language="en")]
    with GatewaySimulator() as sim:
        channel = SmtpChannel(sim.smtp_settings(), clock=clock, local_hostname="client.test", connections=1)
        outcome = channel.send_batch(reminders)
        channel.send_batch(reminders[:1])  # a resend
        got = sim.received
    assert outcome.failed == () and [s.reminder_id for s in outcome.sent] == ["rem-0001", "rem-0002"]
    assert all(s.accepted_at == FIXED and s.provider_ref.startswith("sim-") for s in outcome.sent)
    assert [m.reminder_id for m in got] == ["rem-0001", "rem-0002", "rem-0001"]

    first = got[0]
    assert first.raw.isascii()  # UTF-8 subject and body travel MIME-encoded over 7-bit SMTP
    msg = message_from_bytes(first.raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    assert msg["X-Reminder-Id"] == "rem-0001"
    assert msg["Message-ID"] == "<rem-0001@carrier.example>"
    assert message_from_bytes(got[2].raw, policy=default_policy)["Message-ID"] == msg["Message-ID"]
    assert msg["Subject"] == reminders[0].subject and "138****5678" in msg["Subject"]
    assert msg["To"] == "owner1@example.cn" and first.to == "owner1@example.cn"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Content-Language"] == "zh-CN"
    body = msg.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    text = body.get_content()
    assert "尊敬的用户" in text and "138****5678" in text and "2026年5月1日" in text
    assert "13800015678" not in first.raw.decode() and "13800015678" not in text
    html = msg.get_body(("html",))
    assert isinstance(html, EmailMessage) and "138****5678" in html.get_content()


def test_smtp_550_recipient_is_permanent_and_the_batch_goes_on() -> None:
    reminders = [email_reminder(1), email_reminder(2, to="gone@example.cn"), email_reminder(3)]
    with GatewaySimulator(refuse={"gone@example.cn"}) as sim:
        outcome = SmtpChannel(sim.smtp_settings(), local_hostname="client.test").send_batch(reminders)
        got = sim.received
    assert [s.reminder_id for s in outcome.sent] == ["rem-0001", "rem-0003"]
    [failure] = outcome.failed
    assert failure.reminder_id == "rem-0002" and failure.permanent and "550" in failure.reason
    assert "gone@example.cn" not in failure.reason and "g***@example.cn" in failure.reason  # echo masked
    # The pool's connections deliver at once: the server's order of arrival is not the batch's.
    assert sorted(m.reminder_id for m in got) == ["rem-0001", "rem-0003"]


def test_smtp_reconnects_when_the_server_hangs_up_mid_batch() -> None:
    reminders = [email_reminder(i) for i in range(7)]
    with GatewaySimulator(smtp_max_per_connection=2) as sim:
        outcome = SmtpChannel(sim.smtp_settings(), local_hostname="client.test").send_batch(reminders)
        got = sim.received
    assert len(outcome.sent) == 7 and outcome.failed == ()
    assert sorted(m.reminder_id for m in got) == [r.reminder_id for r in reminders]  # each exactly once


def test_smtp_internationalised_address_and_unbuildable_message() -> None:
    broken = dataclasses.replace(email_reminder(2), subject="line\nbreak")
    with GatewaySimulator() as sim:
        outcome = SmtpChannel(sim.smtp_settings(), local_hostname="client.test").send_batch(
            [email_reminder(1, to="张伟@例子.中国"), broken]
        )
        got = sim.received
    assert [s.reminder_id for s in outcome.sent] == ["rem-0001"] and got[0].to == "张伟@例子.中国"
    assert "To: 张伟@例子.中国" in got[0].raw.decode("utf-8")  # SMTPUTF8, not RFC 2047 mangling
    [failure] = outcome.failed
    assert failure.permanent and "cannot build" in failure.reason


def test_smtp_bad_address_is_permanent_without_a_connection() -> None:
    channel = SmtpChannel(SmtpSettings(host="127.0.0.1", port=free_port()), local_hostname="client.test")
    outcome = channel.send_batch([email_reminder(1, to="not-an-address")])
    assert outcome.sent == () and outcome.failed[0].permanent


def test_smtp_server_down_is_transient_and_retried_with_backoff() -> None:
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), timeout_s=2)
    channel = SmtpChannel(settings, local_hostname="client.test")
    sleeps: list[float] = []
    reminders = [email_reminder(1), email_reminder(2), email_reminder(3, to="broken")]
    outcome = send_with_retry(channel, reminders, attempts=3, backoff_s=0.5, sleep=sleeps.append)
    assert sleeps == [0.5, 1.0]
    assert outcome.sent == ()
    assert {f.reminder_id for f in outcome.transient} == {"rem-0001", "rem-0002"}
    assert [f.reminder_id for f in outcome.permanent] == ["rem-0003"]
    assert "unreachable" in outcome.transient[0].reason and "RECYCLE_SMTP_HOST" in outcome.transient[0].reason


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for localhost/127.0.0.1: (server context, client context)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


def test_sms_over_https_verifies_the_gateway(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    with GatewaySimulator(sms_tls=server_ctx) as sim:
        settings = sim.sms_settings()
        assert settings.url.startswith("https://")
        with SmsHttpChannel(settings, ssl_context=client_ctx, concurrency=2) as channel:
            ok = channel.send_batch([sms_reminder(1), sms_reminder(2)])
        untrusted = SmsHttpChannel(settings, concurrency=1).send_batch([sms_reminder(3)])
        got = sorted(m.reminder_id for m in sim.received)
    assert sorted(s.reminder_id for s in ok.sent) == got == ["sms-0001", "sms-0002"]
    (failure,) = untrusted.failed  # an unknown certificate is refused, never sent in clear
    assert not failure.permanent and "SSLError" in failure.reason and "RECYCLE_SMS_URL" in failure.reason


def test_smtp_starttls_and_auth(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    with GatewaySimulator(smtp_tls=server_ctx, smtp_auth=("relay", "s3cret")) as sim:
        settings = sim.smtp_settings()
        assert settings.starttls and settings.user == "relay"
        ok = SmtpChannel(settings, ssl_context=client_ctx, local_hostname="client.test").send_batch(
            [email_reminder(1)]
        )
        wrong = SmtpChannel(
            SmtpSettings(**{**settings.__dict__, "password": "nope"}),
            ssl_context=client_ctx,
            local_hostname="client.test",
        ).send_batch([email_reminder(2)])
        untrusted = SmtpChannel(settings, local_hostname="client.test").send_batch([email_reminder(3)])
        plain = SmtpChannel(
            SmtpSettings(**{**settings.__dict__, "starttls": False}), local_hostname="client.test"
        ).send_batch([email_reminder(4)])
        got = sim.received
    # The server requires STARTTLS and AUTH, so an accepted message proves both happened.
    assert [s.reminder_id for s in ok.sent] == ["rem-0001"]
    assert [m.reminder_id for m in got] == ["rem-0001"]
    assert not wrong.failed[0].permanent and "RECYCLE_SMTP_PASSWORD" in wrong.failed[0].reason
    assert "s3cret" not in wrong.failed[0].reason and "nope" not in wrong.failed[0].reason
    assert not untrusted.failed[0].permanent and "TLS" in untrusted.failed[0].reason
    assert not plain.failed[0].permanent and "STARTTLS" in plain.failed[0].reason


# --------------------------------------------------------------------------- SMS


def test_sms_through_the_simulated_gateway_with_bearer_token() -> None:
    reminders = [sms_reminder(i) for i in range(12)]
    with GatewaySimulator(sms_token="tok-123") as sim:
        settings = sim.sms_settings()
        outcome = SmsHttpChannel(settings, clock=clock).send_batch(reminders)
        no_token = SmsHttpChannel(SmsSettings(url=settings.url)).send_batch([sms_reminder(99)])
        got = sim.received
    assert outcome.failed == () and len(outcome.sent) == 12
    assert {s.reminder_id for s in outcome.sent} == {r.reminder_id for r in reminders}
    by_id = {m.reminder_id: m for m in got}
    assert all(s.provider_ref == by_id[s.reminder_id].provider_ref for s in outcome.sent)
    request = json.loads(by_id["sms-0003"].raw)
    assert request == {"reminder_id": "sms-0003", "to": "+8613900000003", "text": "【Example Mobile】短信3"}
    [failure] = no_token.failed
    assert failure.permanent and "401" in failure.reason and "RECYCLE_SMS_TOKEN" in failure.reason


class ScriptedGateway:
    """An HTTP server answering each number with a scripted list of (status, body) replies."""

    def __init__(self, script: Callable[[str, int], tuple[int, dict[str, Any]]]) -> None:
        self.calls: dict[str, int] = {}
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    n = outer.calls[doc["to"]] = outer.calls.get(doc["to"], 0) + 1
                status, reply = script(doc["to"], n)
                body = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SmsSettings:
        self.thread.start()
        return SmsSettings(url=f"http://127.0.0.1:{self.server.server_address[1]}/send", timeout_s=5)

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_sms_status_codes_map_to_sent_transient_and_permanent() -> None:
    replies = {
        "+8613900000001": (200, {"id": "gw-1"}),
        "+8613900000002": (202, {"message_id": 77}),
        "+8613900000003": (200, {"status": "ok"}),
        "+8613900000004": (500, {"error": "internal"}),
        "+8613900000005": (429, {"error": "slow down"}),
        "+8613900000006": (400, {"error": "invalid number +8613900000006"}),
        "+8613900000007": (503, {}),
    }
    with ScriptedGateway(lambda to, n: replies[to]) as settings:
        outcome = SmsHttpChannel(settings, concurrency=3).send_batch([sms_reminder(i) for i in range(1, 8)])
    refs = {s.reminder_id: s.provider_ref for s in outcome.sent}
    assert refs == {"sms-0001": "gw-1", "sms-0002": "77", "sms-0003": "sms-0003"}
    assert {f.reminder_id for f in outcome.transient} == {"sms-0004", "sms-0005", "sms-0007"}
    [bad] = outcome.permanent
    assert bad.reminder_id == "sms-0006" and "400" in bad.reason
    assert "+8613900000006" not in bad.reason and "139****0006" in bad.reason  # echoed number masked


def test_sms_retry_recovers_from_503_and_does_not_retry_permanent_failures() -> None:
    def script(to: str, n: int) -> tuple[int, dict[str, Any]]:
        if to == "+8613900000009":
            return 400, {"error": "unknown subscriber"}
        return (503, {}) if n <= 2 else (200, {"id": f"ok-{to[-2:]}"})

    sleeps: list[float] = []
    with ScriptedGateway(script) as settings:
        outcome = send_with_retry(
            SmsHttpChannel(settings, concurrency=1),
            [sms_reminder(i) for i in range(1, 10)],
            attempts=3,
            backoff_s=0.25,
            sleep=sleeps.append,
        )
    assert sleeps == [0.25, 0.5]
    assert len(outcome.sent) == 8 and [f.reminder_id for f in outcome.failed] == ["sms-0009"]
    assert outcome.failed[0].permanent


def test_sms_counts_requests_per_number() -> None:
    def script(to: str, n: int) -> tuple[int, dict[str, Any]]:
        return (400, {}) if to.endswith("9") else ((503, {}) if n == 1 else (200, {}))

    gateway = ScriptedGateway(script)
    with gateway as settings:
        send_with_retry(
            SmsHttpChannel(settings), [sms_reminder(i) for i in range(1, 10)], sleep=lambda s: None
        )
    assert gateway.calls["+8613900000009"] == 1  # permanent: asked once
    assert all(n == 2 for to, n in gateway.calls.items() if not to.endswith("9"))


def test_sms_gateway_down_is_transient_and_stops_trying_early() -> None:
    channel = SmsHttpChannel(
        SmsSettings(url=f"http://127.0.0.1:{free_port()}/send", timeout_s=2),
        concurrency=1,
        max_consecutive_errors=2,
    )
    outcome = channel.send_batch([sms_reminder(i) for i in range(6)] + [sms_reminder(7, to="13900000000")])
    assert outcome.sent == ()
    assert len(outcome.transient) == 6 and all("unreachable" in f.reason for f in outcome.transient)
    assert sum("not tried" in f.reason for f in outcome.transient) == 4
    assert [f.reminder_id for f in outcome.permanent] == ["sms-0007"]  # not E.164


# --------------------------------------------------------------------------- letters


def test_letter_batch_is_idempotent_and_order_independent(tmp_path: Path) -> None:
    reminders = [letter_reminder(i) for i in (3, 1, 2)]
    first = LetterBatchChannel(tmp_path / "a", DAY, clock=clock)
    outcome = first.send_batch(reminders)
    assert outcome.failed == () and len(outcome.sent) == 3
    assert outcome.sent[0].provider_ref == "letters_2026-03-02.csv#let-0003"
    once = first.path.read_bytes()
    first.send_batch(reminders)
    assert first.path.read_bytes() == once

    other = LetterBatchChannel(tmp_path / "b", DAY)
    other.send_batch([reminders[2]])
    other.send_batch([reminders[1], reminders[0]])
    assert other.path == letter_batch_path(tmp_path / "b", DAY)
    assert other.path.read_bytes() == once

    # Rows are kept between batches, but a file another writer changed is read again.
    third = LetterBatchChannel(tmp_path / "c", DAY)
    third.send_batch([reminders[0]])
    LetterBatchChannel(tmp_path / "c", DAY).send_batch([reminders[1]])
    third.send_batch([reminders[2]])
    assert third.path.read_bytes() == once

    rows = list(csv.reader(io.StringIO(once.decode("utf-8"), newline="")))
    assert tuple(rows[0]) == LETTER_COLUMNS
    assert [r[0] for r in rows[1:]] == ["let-0001", "let-0002", "let-0003"]
    assert rows[1] == ["let-0001", "SUB000001", "zh-CN", "提醒函", '正文\n第二行, "引号"']
    assert list(tmp_path.joinpath("a").iterdir()) == [first.path]  # no temp files left behind


def test_letter_without_postal_reference_is_permanent_and_tampered_batch_stops(tmp_path: Path) -> None:
    channel = LetterBatchChannel(tmp_path, DAY)
    bad = OutgoingReminder("let-x", "letter", " ", "zh-CN", "s", "t", DAY)
    outcome = channel.send_batch([bad, letter_reminder(1)])
    assert [f.reminder_id for f in outcome.permanent] == ["let-x"] and len(outcome.sent) == 1
    channel.path.write_text("id,text\nx,y\n", encoding="utf-8")
    with pytest.raises(DataContractError, match="changed outside the pipeline"):
        channel.send_batch([letter_reminder(2)])


# --------------------------------------------------------------------------- shared rules


def test_reminder_repr_hides_address_and_batches_are_checked() -> None:
    r = sms_reminder(5)
    assert "+86139" not in repr(r)
    with pytest.raises(ValueError, match="not letter"):
        LetterBatchChannel(Path("/nonexistent"), DAY).send_batch([r])
    with pytest.raises(ValueError, match="twice"):
        SmsHttpChannel(SmsSettings()).send_batch([r, r])
    with pytest.raises(ValueError):
        OutgoingReminder("has space", "sms", "+8613900000001", "zh-CN", "", "t", DAY)
    with pytest.raises(ValueError):
        send_with_retry(SmsHttpChannel(SmsSettings()), [r], attempts=0)


# --------------------------------------------------------------------------- pools


def test_smtp_pool_sends_a_batch_over_its_connections_pipelined_and_keeps_them_for_the_next() -> None:
    odd = email_reminder(99, to="o'brien@example.cn")  # outside the fast build: email.message's bytes
    odd = dataclasses.replace(odd, text=".\n.hidden line\n..two dots")  # lines that need dot-stuffing
    with GatewaySimulator() as sim:
        channel = SmtpChannel(sim.smtp_settings(), local_hostname="client.test", connections=3)
        first = channel.send_batch([email_reminder(i) for i in range(1, 10)] + [odd])
        assert channel._idle.qsize() == 3  # three connections, back in the pool after the batch
        second = channel.send_batch([email_reminder(i) for i in range(10, 13)])
        assert channel._idle.qsize() == 3  # reused, not three more
        channel.close()
        assert channel._idle.qsize() == 0
        got = {m.reminder_id: m for m in sim.received}
    assert len(first.sent) == 10 and len(second.sent) == 3 and not first.failed
    assert sorted(got) == sorted([f"rem-{i:04d}" for i in range(1, 13)] + ["rem-0099"])
    assert got["rem-0099"].text.splitlines() == [".", ".hidden line", "..two dots"]
    assert got["rem-0005"].text == email_reminder(5).text


def test_smtp_pipelined_refusals_keep_their_stage_and_the_connection_goes_on() -> None:
    reminders = [email_reminder(1), email_reminder(2, to="gone@example.cn"), email_reminder(3)]
    with (
        GatewaySimulator(refuse={"gone@example.cn"}) as sim,
        SmtpChannel(sim.smtp_settings(), local_hostname="client.test", connections=1) as channel,
    ):
        outcome = channel.send_batch(reminders)
    assert [r.reminder_id for r in outcome.sent] == ["rem-0001", "rem-0003"]
    (failure,) = outcome.failed
    assert (
        failure.permanent and "refused the recipient: 550" in failure.reason and "gone@" not in failure.reason
    )


def test_sms_channel_keeps_its_pool_and_workers_across_batches() -> None:
    with GatewaySimulator() as sim:
        with SmsHttpChannel(sim.sms_settings(), concurrency=3) as channel:
            channel.send_batch([sms_reminder(i) for i in range(1, 5)])
            pool = channel._pool
            channel.send_batch([sms_reminder(i) for i in range(5, 9)])
            assert channel._pool is pool is not None
            assert 1 <= pool.num_connections <= 3  # keep-alive: at most one connection a worker
        assert channel._pool is None
        assert sorted(m.reminder_id for m in sim.received) == [f"sms-{i:04d}" for i in range(1, 9)]
