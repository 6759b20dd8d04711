"""The hand-built reminder e-mail parses to what ``email.message`` builds (pipelines.reminders.mime)."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.reminders.mime import email_message_bytes, reminder_message_bytes

HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "X-Reminder-Id",
    "Auto-Submitted",
    "Content-Language",
)
no_breaks = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=120)
addresses = st.sampled_from(
    ["owner1@example.cn", "a.b+c=d@mail.example.com", "用户@例子.中国", '"x y"@example.cn']
)
bodies = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)


def parsed(raw: bytes) -> tuple[dict[str, str], str, str | None]:
    msg = message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert isinstance(plain, EmailMessage)
    return (
        {h: str(msg[h]) for h in HEADERS},
        plain.get_content(),
        html.get_content() if isinstance(html, EmailMessage) else None,
    )


@settings(max_examples=300, deadline=None)
@given(
    to=addresses,
    subject=no_breaks,
    text=bodies,
    html=st.none() | bodies,
    language=st.sampled_from(["zh-CN", "en"]),
)
def test_the_fast_build_parses_to_the_email_packages_headers_and_parts(
    to: str, subject: str, text: str, html: str | None, language: str
) -> None:
    fields = dict(
        sender="reminders@carrier.example", to=to, subject=subject, date="Mon, 02 Mar 2026 08:00:00 +0000",
        message_id="<R1@carrier.example>", reminder_id="R1", language=language, text=text, html=html,
    )  # fmt: skip
    fast, reference = parsed(reminder_message_bytes(**fields)), parsed(email_message_bytes(**fields))
    assert fast[0] == reference[0]
    # set_content normalises line ends to \n; base64 keeps the text as it was: compare like that.
    assert lines(fast[1]) == lines(reference[1])
    assert (fast[2] is None) == (reference[2] is None)
    assert lines(fast[2] or "") == lines(reference[2] or "")


def lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def test_a_header_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        reminder_message_bytes(
            sender="s@example.cn", to="o@example.cn", subject="a\r\nBcc: x@evil.example", date="d",
            message_id="<m>", reminder_id="R1", language="en", text="t", html=None,
        )  # fmt: skip
