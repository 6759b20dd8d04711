"""Reminder texts: both languages, every channel, never the full number."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import Settings
from pipelines.errors import ConfigError
from pipelines.reminders.templates import ReminderContext, render_reminder

NUMBER = "+8613812345678"
NATIONAL = "13812345678"
DEFAULTS = Settings()


def context(**changes: object) -> ReminderContext:
    base = ReminderContext(
        reminder_id="rem-2026-0001-abcdef",
        msisdn=NUMBER,
        channel="email",
        language="zh-CN",
        disconnected_on=dt.date(2026, 1, 31),
        release_on=dt.date(2026, 5, 1),
        reminder_no=1,
        final=False,
        carrier_name=DEFAULTS.carrier_name,
        unbind_url=DEFAULTS.unbind_url,
        national_unbind_service=DEFAULTS.national_unbind_service,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def all_text(r: object) -> str:
    return "\n".join(str(getattr(r, f)) for f in ("subject", "text", "html"))


@pytest.mark.parametrize("channel", ["email", "sms", "letter"])
@pytest.mark.parametrize("cause", ["cancel", "suspend"])
def test_zh_cn_masks_number_formats_date_and_names_unbind_services(channel: str, cause: str) -> None:
    r = render_reminder(context(channel=channel, cause=cause))
    text = all_text(r)
    assert r.language == "zh-CN"
    assert "138****5678" in r.text
    assert NATIONAL not in text and NUMBER not in text
    assert "2026年5月1日" in r.text and "重新放号" in r.text
    assert DEFAULTS.unbind_url in r.text
    assert "一证通查 / 一键解绑" in r.text
    assert "解绑" in r.text
    if channel != "sms":
        assert "尊敬的用户" in r.text
        assert "提醒编号：rem-2026-0001-abcdef" in r.text
        assert DEFAULTS.national_unbind_service in r.text  # the full name where there is room
        assert "2026年1月31日" in r.text  # the disconnection date
        assert "138****5678" in r.subject
    else:
        assert r.subject == "" and r.html is None
        assert len(r.text) <= 140
        assert r.text.startswith("【Example Mobile】")


@pytest.mark.parametrize("channel", ["email", "sms", "letter"])
def test_en_masks_number_formats_date_and_names_unbind_services(channel: str) -> None:
    r = render_reminder(context(channel=channel, language="en"))
    text = all_text(r)
    assert r.language == "en"
    assert "138****5678" in r.text
    assert NATIONAL not in text
    assert "1 May 2026" in r.text and "2026年" not in r.text
    assert DEFAULTS.unbind_url in r.text and "一证通查 / 一键解绑" in r.text
    if channel == "sms":
        assert len(r.text) <= 300
        assert "Ref rem-2026-0001-abcdef" in r.text
    else:
        assert "31 January 2026" in r.text
        assert "Reminder reference: rem-2026-0001-abcdef" in r.text
        assert "Dear customer," in r.text


def test_suspension_text_tells_the_owner_how_to_keep_the_number() -> None:
    zh = render_reminder(context(cause="suspend")).text
    en = render_reminder(context(cause="suspend", language="en")).text
    assert "欠费停机" in zh and "复机" in zh and "已注销" not in zh
    assert "non-payment" in en and "restore" in en and "cancelled" not in en


def test_which_reminder_it_is() -> None:
    assert "这是第一次提醒" in render_reminder(context(reminder_no=1)).text
    assert "这是第二次提醒" in render_reminder(context(reminder_no=2)).text
    final = render_reminder(context(reminder_no=3, final=True))
    assert "最后一次提醒" in final.text and "最后一次提醒" in final.subject
    assert "This is the second reminder." in render_reminder(context(reminder_no=2, language="en")).text
    en_final = render_reminder(context(reminder_no=3, final=True, language="en"))
    assert "final reminder" in en_final.text and "(final reminder)" in en_final.subject
    assert "Final reminder." in render_reminder(context(final=True, language="en", channel="sms")).text
    assert "这是第12次提醒" in render_reminder(context(reminder_no=12)).text


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("en", "en"),
        ("en-US", "en"),
        ("EN_gb", "en"),
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("fr", "zh-CN"),
        ("", "zh-CN"),
    ],
)
def test_unknown_language_falls_back_to_zh_cn(tag: str, expected: str) -> None:
    assert render_reminder(context(language=tag)).language == expected


def test_email_html_is_escaped_and_links_the_unbind_service() -> None:
    r = render_reminder(context(carrier_name="A&B <Mobile>"))
    assert r.html is not None
    assert "A&amp;B &lt;Mobile&gt;" in r.html and "<Mobile>" not in r.html
    assert f'<a href="{DEFAULTS.unbind_url}">' in r.html
    assert '<html lang="zh-CN">' in r.html
    assert NATIONAL not in r.html


def test_sms_drops_reference_then_greeting_before_exceeding_140_chars() -> None:
    short = render_reminder(context(channel="sms", reminder_id="r1"))
    assert "尊敬的用户" in short.text and "编号r1" in short.text
    long_id = "r-" + "0" * 60
    long = render_reminder(context(channel="sms", reminder_id=long_id))
    assert len(long.text) <= 140 and long_id not in long.text
    assert "138****5678" in long.text and "2026年5月1日" in long.text and DEFAULTS.unbind_url in long.text


def test_sms_that_cannot_fit_is_a_config_error_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match="unbind_url"):
        render_reminder(context(channel="sms", unbind_url="https://example.com/" + "x" * 150))


@settings(max_examples=60, deadline=None)
@given(
    national=st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    release=st.dates(dt.date(2024, 1, 1), dt.date(2035, 12, 31)),
    language=st.sampled_from(["zh-CN", "en"]),
    channel=st.sampled_from(["email", "sms", "letter"]),
    reminder_no=st.integers(1, 15),
    reminder_id=st.from_regex(r"[a-z0-9-]{1,40}", fullmatch=True),
)
def test_never_the_full_number_and_sms_within_budget(
    national: str, release: dt.date, language: str, channel: str, reminder_no: int, reminder_id: str
) -> None:
    r = render_reminder(
        context(
            msisdn="+86" + national,
            release_on=release,
            language=language,
            channel=channel,
            reminder_no=reminder_no,
            reminder_id=reminder_id,
        )
    )
    assert national not in all_text(r)
    assert f"{national[:3]}****{national[-4:]}" in r.text
    if channel == "sms":
        assert len(r.text) <= (140 if language == "zh-CN" else 300)


def test_context_repr_hides_the_number() -> None:
    assert NATIONAL not in repr(context())
    with pytest.raises(ValueError):
        context(reminder_no=0)


URGENT_WORDS = {"zh-CN": "紧急", "en": "URGENT"}
# What each urgent text says happened, in each language.
HAPPENED = {
    ("hold", "zh-CN"): "最早将于2026年5月1日起重新放号",
    ("hold", "en"): "may be reissued from 1 May 2026",
    ("exception", "zh-CN"): "已于2026年5月1日",
    ("exception", "en"): "on 1 May 2026",
    ("violation", "zh-CN"): "已于2026年5月1日分配给新用户",
    ("violation", "en"): "assigned to a new subscriber on 1 May 2026",
}


@pytest.mark.parametrize("channel", ["email", "sms", "letter"])
@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("kind", ["hold", "exception", "violation"])
def test_urgent_texts_say_so_what_happened_and_what_to_do_now(kind: str, language: str, channel: str) -> None:
    r = render_reminder(context(kind=kind, language=language, channel=channel))
    assert (
        URGENT_WORDS[language] in r.text
        and URGENT_WORDS[language] not in render_reminder(context(language=language, channel=channel)).text
    )
    assert HAPPENED[(kind, language)] in r.text
    assert ("放号" if language == "zh-CN" else "released") in r.text or kind != "exception"
    assert DEFAULTS.unbind_url in r.text and "138****5678" in r.text and NATIONAL not in all_text(r)
    if channel == "sms":
        assert len(r.text) <= (140 if language == "zh-CN" else 300)
    else:
        assert URGENT_WORDS[language] in r.subject
    if kind != "hold" and channel != "sms":
        # It has happened: whom to contact with which reference, and the proof to ask for.
        assert (
            "提醒编号rem-2026-0001-abcdef" if language == "zh-CN" else "quoting reference rem-2026"
        ) in r.text
        assert ("号码持有证明" if language == "zh-CN" else "signed statement of your tenure") in r.text
        assert ("忽略本提醒" if language == "zh-CN" else "disregard") not in r.text


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        context(kind="gentle")
