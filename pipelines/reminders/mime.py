"""A reminder's e-mail bytes, built from a cached header block instead of ``email.message``.

Why: ``EmailMessage`` (headers, ``set_content``, ``add_alternative``, ``as_bytes``) cost
1,100 µs a reminder on this shared 2-core machine: the whole of the SMTP channel's 1,051 µs
CPU a message, which ran at 560 messages/s (``python benchmarks/bench_night.py
--channels-only``); twice the HTTP SMS channel's CPU. Reminders of one night share their sender, subject and language by the
thousand, so the headers that depend on those alone are encoded once (by the ``email``
package, which folds and RFC 2047-encodes them) and each message adds its own ``To``, ``Date``,
ids and base64 body parts. Measured: 14 µs a message.

The result parses to the same headers and parts as :func:`email_message_bytes` (the slow,
reference build, kept for what the fast path does not take: addresses outside plain
``local@domain`` shape, which the ``email`` package quotes); a property test holds them equal.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import SMTPUTF8 as SMTPUTF8_POLICY

# The addresses the fast path writes into ``To`` as they are: no quoting, comment or group can
# arise from them. Anything else (quotes, brackets, commas...) goes through email.message.
_PLAIN_ADDRESS = re.compile(r"[\w.+\-=]+@[\w.\-]+", re.UNICODE)
_LINE_BREAK = re.compile(r"[\r\n]")


def email_message_bytes(
    *, sender: str, to: str, subject: str, date: str, message_id: str, reminder_id: str,
    language: str, text: str, html: str | None,
) -> bytes:  # fmt: skip
    """The reference build with ``email.message`` (raises ValueError on a header with a line break)."""
    msg = EmailMessage(policy=SMTP_POLICY if to.isascii() else SMTPUTF8_POLICY)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["X-Reminder-Id"] = reminder_id
    # RFC 3834: keeps vacation responders from answering a reminder.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
    msg["Content-Language"] = language  # after set_content, which clears Content-* headers
    return msg.as_bytes()


def reminder_message_bytes(
    *, sender: str, to: str, subject: str, date: str, message_id: str, reminder_id: str,
    language: str, text: str, html: str | None,
) -> bytes:  # fmt: skip
    """The reminder as RFC 5322 bytes (CRLF lines); the fast path where it applies."""
    fields = (sender, to, subject, language, message_id, reminder_id, date)
    if any(_LINE_BREAK.search(f) for f in fields):
        raise ValueError("a header value contains a line break")
    # The email package also drops a subject's leading and trailing blanks: leave those to it.
    odd_subject = subject != subject.strip()
    if odd_subject or not _PLAIN_ADDRESS.fullmatch(to) or not sender.isascii() or not language.isascii():
        return email_message_bytes(
            sender=sender, to=to, subject=subject, date=date, message_id=message_id,
            reminder_id=reminder_id, language=language, text=text, html=html,
        )  # fmt: skip
    head = (
        _fixed_head(sender, subject)
        + f"To: {to}\r\nDate: {date}\r\nMessage-ID: {message_id}\r\nX-Reminder-Id: {reminder_id}\r\n"
        "Auto-Submitted: auto-generated\r\n"
    ).encode()
    language_line = f"Content-Language: {language}\r\n".encode()
    if html is None:
        return head + _TEXT_HEAD + language_line + b"\r\n" + _base64_lines(text)
    boundary = "===============" + hashlib.sha256(reminder_id.encode()).hexdigest()[:19] + "=="
    return (
        head
        + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\nMIME-Version: 1.0\r\n'.encode()
        + language_line
        + f"\r\n--{boundary}\r\n".encode()
        + _TEXT_HEAD
        + b"\r\n"
        + _base64_lines(text)
        + f"\r\n--{boundary}\r\n".encode()
        + _HTML_HEAD
        + b"\r\n"
        + _base64_lines(html)
        + f"\r\n--{boundary}--\r\n".encode()
    )


_TEXT_HEAD = (
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\nMIME-Version: 1.0\r\n'
)
_HTML_HEAD = (
    b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\nMIME-Version: 1.0\r\n'
)


@functools.lru_cache(maxsize=256)
def _fixed_head(sender: str, subject: str) -> str:
    """``From`` and ``Subject`` as the ``email`` package folds and encodes them, once per pair."""
    if subject.isascii() and len(subject) < 900 and subject.isprintable():
        return f"From: {sender}\r\nSubject: {subject}\r\n"
    encoded = Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")
    return f"From: {sender}\r\nSubject: {encoded}\r\n"


def _base64_lines(value: str) -> bytes:
    """``value`` as UTF-8 in base64 lines of 76 characters, each ending CRLF."""
    data = base64.b64encode(value.encode("utf-8"))
    return b"".join(data[i : i + 76] + b"\r\n" for i in range(0, len(data), 76))
