"""Reminder texts for the prior owner of a number, in zh-CN and en, per channel.

``render_reminder`` is the only way a reminder text is produced, and it only ever sees the
masked number (``138****5678``): the E.164 number in :class:`ReminderContext` is masked before
any template is filled. Languages other than en fall back to zh-CN, the language of the
subscribers a Chinese carrier serves by default.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any, Literal

from pipelines.errors import ConfigError
from pipelines.numbers import mask
from pipelines.reminders.channels import ChannelName

Language = Literal["zh-CN", "en"]
Cause = Literal["cancel", "suspend"]
# reminder: the scheduled reminders; hold: a number held at the gate (urgent, escalating);
# exception / violation: the urgent notice after a release with an exception / a violating
# reissue, naming the day it happened (release_on) and what to do now.
Kind = Literal["reminder", "hold", "exception", "violation"]

# Characters, not segments. Gateways bill per concatenated segment (67 UCS-2 characters once a
# text holds any Chinese, 153 GSM-7 otherwise), so the budget keeps a reminder to a few segments.
_SMS_MAX_CHARS: dict[Language, int] = {"zh-CN": 140, "en": 300}


@dataclass(frozen=True)
class ReminderContext:
    """Everything one reminder text says. ``msisdn`` is E.164 and never appears unmasked."""

    reminder_id: str
    msisdn: str = field(repr=False)
    channel: ChannelName
    language: str  # as recorded for the subscriber; anything but en* renders zh-CN
    disconnected_on: dt.date  # end of the tenure: cancel date, or the 双停 suspension date
    release_on: dt.date  # first day the number may be reissued
    reminder_no: int  # 1-based position of this reminder for the tenure
    final: bool  # the last reminder before release
    carrier_name: str
    unbind_url: str  # the carrier's own unbinding service (settings.unbind_url)
    national_unbind_service: str  # settings.national_unbind_service
    cause: Cause = "cancel"  # suspend: the owner can still keep the number by paying
    kind: Kind = "reminder"

    def __post_init__(self) -> None:
        if self.reminder_no < 1:
            raise ValueError(f"reminder {self.reminder_id}: reminder_no must be >= 1")
        if self.channel not in ("email", "sms", "letter"):
            raise ValueError(f"reminder {self.reminder_id}: unknown channel {self.channel!r}")
        if self.kind not in ("reminder", "hold", "exception", "violation"):
            raise ValueError(f"reminder {self.reminder_id}: unknown kind {self.kind!r}")


@dataclass(frozen=True)
class RenderedReminder:
    subject: str  # empty for sms
    text: str
    html: str | None  # email only
    language: Language  # the language actually rendered (after fallback)


def render_reminder(ctx: ReminderContext) -> RenderedReminder:
    """Render the reminder ``ctx`` describes for its channel and language.

    Raises :class:`ConfigError` when even the shortest SMS variant exceeds the length budget
    (carrier name or unbind URL too long for an SMS).
    """
    language = _language(ctx.language)
    texts = _TEXTS[language]
    values = _values(ctx, language)
    if ctx.channel == "sms":
        return RenderedReminder("", _sms(ctx, texts, values, language), None, language)
    paragraphs = _body(ctx, texts, values, language)
    urgent = texts.urgent.get(ctx.kind)
    if ctx.channel == "email":
        if urgent:
            subject = urgent.subject.substitute(values)
        else:
            subject = texts.subject.substitute(values) + (texts.subject_final if ctx.final else "")
        body = [texts.greeting, *paragraphs, *texts.email_footer(values)]
        page = _as_html(subject, body, ctx.unbind_url, language)
        return RenderedReminder(subject, _as_text(body), page, language)
    title = (urgent.letter_title if urgent else texts.letter_title).substitute(values)
    letter = [
        ctx.carrier_name,
        title,
        texts.greeting,
        *paragraphs,
        texts.reference.substitute(values),
        texts.letter_closing + "\n" + ctx.carrier_name,
    ]
    return RenderedReminder(title, _as_text(letter), None, language)


# --------------------------------------------------------------------------- texts


@dataclass(frozen=True)
class _Urgent:
    """What an urgent text says instead of a reminder's subject, title and opening."""

    subject: Template
    letter_title: Template
    lead: Template
    sms_lead: Template


@dataclass(frozen=True)
class _Texts:
    greeting: str
    lead: dict[Cause, Template]
    risk: str
    steps_intro: str
    steps: tuple[Template, Template]
    ordinal: Template
    ordinal_final: str
    done: str
    reference: Template
    automatic: str
    subject: Template
    subject_final: str
    letter_title: Template
    letter_closing: str
    # SMS: the parts, dropped from the end of ``sms_optional`` until the text fits.
    sms_lead: dict[Cause, Template]
    sms_unbind: Template
    sms_unbind_local_only: Template
    sms_ordinal: Template
    sms_ordinal_final: str
    sms_reference: Template
    sms_greeting: str
    ordinals: tuple[str, ...]
    urgent: dict[Kind, _Urgent]
    # After an exception or violation: whom to contact, and the proof the owner can ask for.
    contact_step: Template
    sms_contact: str

    def email_footer(self, values: dict[str, str]) -> list[str]:
        return [
            self.reference.substitute(values) + "\n" + values["carrier"],
            self.automatic,
        ]


_ZH = _Texts(
    greeting="尊敬的用户：",
    lead={
        "cancel": Template(
            "您好！您在${carrier}已注销的手机号码${number}（销号日期：${disconnected}）"
            "将于${release}起重新放号，届时可能分配给其他用户使用。"
        ),
        "suspend": Template(
            "您好！您在${carrier}的手机号码${number}自${disconnected}起因欠费停机。"
            "如您仍需使用该号码，请尽快缴清欠费办理复机；否则该号码将被收回，"
            "并于${release}起重新放号，届时可能分配给其他用户使用。"
        ),
    },
    risk=(
        "如果您的银行卡、支付、网盘、社交、借贷等账户仍绑定该号码，新号主可能收到您的验证码和通知，"
        "甚至登录您的账户。"
    ),
    steps_intro="为保护您的资金和个人信息安全，请尽快将这些账户解绑，或更换为您正在使用的手机号码：",
    steps=(
        Template("1. ${carrier}号码解绑服务：${unbind_url}"),
        Template("2. ${national}：可一次查询并解绑该号码关联的互联网账户。"),
    ),
    ordinal=Template("这是第${nth}次提醒。"),
    ordinal_final="这是该号码重新放号前的最后一次提醒。",
    done="如您已完成解绑，请忽略本提醒。",
    reference=Template("提醒编号：${reminder_id}（咨询或反馈时请提供）"),
    automatic="此邮件由系统自动发送，请勿直接回复。",
    subject=Template("【${carrier}】重要提醒：号码${number}将于${release}起重新放号，请尽快解绑相关账户"),
    subject_final="（最后一次提醒）",
    letter_title=Template("关于手机号码${number}重新放号的提醒函"),
    letter_closing="特此函告。",
    sms_lead={
        "cancel": Template("您已注销的号码${number}将于${release}起重新放号，"),
        "suspend": Template("您的号码${number}已欠费停机，如不复机将于${release}起重新放号，"),
    },
    sms_unbind=Template("请尽快解绑银行、支付、网盘等账户：${unbind_url}，或使用${national_short}。"),
    sms_unbind_local_only=Template("请尽快解绑银行、支付、网盘等账户：${unbind_url}。"),
    sms_ordinal=Template("第${nth}次提醒。"),
    sms_ordinal_final="最后一次提醒。",
    sms_reference=Template("编号${reminder_id}"),
    sms_greeting="尊敬的用户，",
    ordinals=("一", "二", "三", "四", "五", "六", "七", "八", "九", "十"),
    urgent={
        "hold": _Urgent(
            subject=Template(
                "【${carrier}】紧急：未能确认您收到提醒，号码${number}最早将于${release}起重新放号，请立即解绑账户"
            ),
            letter_title=Template("紧急：关于手机号码${number}即将重新放号的提醒函"),
            lead=Template(
                "紧急提醒：您在${carrier}的原手机号码${number}（销号日期：${disconnected}）冻结期已满。"
                "我们尚未确认您收到了此前的提醒，因此暂缓放号；但该号码最早将于${release}起重新放号，"
                "届时可能分配给其他用户使用。请立即处理。"
            ),
            sms_lead=Template("紧急：未能确认您收到提醒，您的原号码${number}最早将于${release}起重新放号，"),
        ),
        "exception": _Urgent(
            subject=Template("【${carrier}】紧急通知：号码${number}已于${release}放号，请立即解绑账户"),
            letter_title=Template("紧急通知：手机号码${number}已重新放号"),
            lead=Template(
                "紧急通知：您在${carrier}的原手机号码${number}（销号日期：${disconnected}）已于${release}"
                "重新放号，可能很快分配给新用户。我们多次提醒，但未能确认您已收到。"
            ),
            sms_lead=Template("紧急：您的原号码${number}已于${release}放号，可能很快分配给新用户，"),
        ),
        "violation": _Urgent(
            subject=Template(
                "【${carrier}】紧急通知：号码${number}已于${release}分配给新用户，请立即解绑账户"
            ),
            letter_title=Template("紧急通知：手机号码${number}已分配给新用户"),
            lead=Template(
                "紧急通知：您在${carrier}的原手机号码${number}已于${release}分配给新用户，"
                "早于规定的提醒和冻结期满。我们对此深表歉意。"
            ),
            sms_lead=Template("紧急：您的原号码${number}已于${release}分配给新用户，"),
        ),
    },
    contact_step=Template(
        "3. 联系${carrier}客服并提供提醒编号${reminder_id}；如有平台要求您证明曾持有该号码，"
        "可向${carrier}申请一份签名的号码持有证明。"
    ),
    sms_contact="如有疑问请联系客服。",
)

_EN = _Texts(
    greeting="Dear customer,",
    lead={
        "cancel": Template(
            "The mobile number ${number}, which you cancelled with ${carrier} on ${disconnected}, "
            "will be reissued from ${release} and may then be assigned to a new subscriber."
        ),
        "suspend": Template(
            "Your mobile number ${number} with ${carrier} has been suspended for non-payment since "
            "${disconnected}. If you want to keep it, please settle the balance and restore the "
            "service as soon as possible; otherwise the number will be reclaimed, reissued from "
            "${release} and may then be assigned to a new subscriber."
        ),
    },
    risk=(
        "If your bank cards, payment apps, cloud drives, social media or loan accounts are still "
        "linked to this number, its new holder could receive your verification codes and notices, "
        "or even sign in to your accounts."
    ),
    steps_intro=(
        "To protect your money and personal data, please unlink these accounts, or change them to "
        "a number you still use, as soon as possible:"
    ),
    steps=(
        Template("1. ${carrier} number unlinking service: ${unbind_url}"),
        Template(
            "2. ${national}: look up and unlink, in one step, the internet accounts linked to this number."
        ),
    ),
    ordinal=Template("This is the ${nth} reminder."),
    ordinal_final="This is the final reminder before the number is reissued.",
    done="If you have already done this, please disregard this reminder.",
    reference=Template("Reminder reference: ${reminder_id} (please quote it if you contact us)"),
    automatic="This message was sent automatically; please do not reply to it.",
    subject=Template("${carrier}: mobile number ${number} will be reissued from ${release}"),
    subject_final=" (final reminder)",
    letter_title=Template("Reissue of mobile number ${number}: please unlink your accounts"),
    letter_closing="Yours faithfully,",
    sms_lead={
        "cancel": Template("Your former number ${number} will be reissued from ${release}. "),
        "suspend": Template(
            "Your number ${number} is suspended for non-payment; unless restored it will be "
            "reissued from ${release}. "
        ),
    },
    sms_unbind=Template(
        "Please unlink your bank, payment, cloud-drive and other accounts from it now: "
        "${unbind_url} or ${national_short}. "
    ),
    sms_unbind_local_only=Template(
        "Please unlink your bank, payment, cloud-drive and other accounts from it now: ${unbind_url}. "
    ),
    sms_ordinal=Template("${nth_cap} reminder. "),
    sms_ordinal_final="Final reminder. ",
    sms_reference=Template("Ref ${reminder_id}"),
    sms_greeting="",  # an English SMS opens with the carrier's name; a salutation only costs room
    ordinals=(
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
    ),
    urgent={
        "hold": _Urgent(
            subject=Template(
                "URGENT ${carrier}: we could not confirm you got our reminders; mobile number ${number} "
                "may be reissued from ${release}"
            ),
            letter_title=Template("URGENT: mobile number ${number} may soon be reissued"),
            lead=Template(
                "URGENT: the freeze of the mobile number ${number}, which you cancelled with ${carrier} "
                "on ${disconnected}, is over. We could not confirm that you received our reminders, so "
                "we are holding the number back, but it may be reissued from ${release} and then be "
                "assigned to a new subscriber. Please act now."
            ),
            sms_lead=Template(
                "URGENT: we could not confirm you got our reminders; your former number ${number} may "
                "be reissued from ${release}. "
            ),
        ),
        "exception": _Urgent(
            subject=Template(
                "URGENT ${carrier}: mobile number ${number} was released for reissue on ${release}"
            ),
            letter_title=Template("URGENT: mobile number ${number} has been released for reissue"),
            lead=Template(
                "URGENT: the mobile number ${number}, which you cancelled with ${carrier} on "
                "${disconnected}, was released for reissue on ${release} and may soon be assigned to a "
                "new subscriber. We reminded you several times but could not confirm that you "
                "received our reminders."
            ),
            sms_lead=Template(
                "URGENT: your former number ${number} was released on ${release} and may soon go to a "
                "new subscriber. "
            ),
        ),
        "violation": _Urgent(
            subject=Template("URGENT ${carrier}: mobile number ${number} was assigned to a new subscriber"),
            letter_title=Template("URGENT: mobile number ${number} has been assigned to a new subscriber"),
            lead=Template(
                "URGENT: the mobile number ${number}, which you held with ${carrier}, was assigned to a "
                "new subscriber on ${release}, before the required reminders and freeze were complete. "
                "We apologise."
            ),
            sms_lead=Template(
                "URGENT: your former number ${number} was assigned to a new subscriber on ${release}. "
            ),
        ),
    },
    contact_step=Template(
        "3. Contact ${carrier} quoting reference ${reminder_id}. If a platform asks you to prove that "
        "the number was yours, ask ${carrier} for a signed statement of your tenure."
    ),
    sms_contact="Questions: contact us. ",
)

_TEXTS: dict[Language, _Texts] = {"zh-CN": _ZH, "en": _EN}
_EN_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _language(tag: str) -> Language:
    return "en" if tag.strip().lower().replace("_", "-").split("-")[0] == "en" else "zh-CN"


def _date(day: dt.date, language: Language) -> str:
    if language == "en":
        return f"{day.day} {_EN_MONTHS[day.month - 1]} {day.year}"
    return f"{day.year}年{day.month}月{day.day}日"


def _values(ctx: ReminderContext, language: Language) -> dict[str, str]:
    texts = _TEXTS[language]
    n = ctx.reminder_no
    nth = (
        texts.ordinals[n - 1] if n <= len(texts.ordinals) else (str(n) if language == "zh-CN" else f"no. {n}")
    )
    national = ctx.national_unbind_service.strip()
    # The configured name may carry an explanatory suffix in brackets; an SMS has no room for it.
    national_short = national.split(" (")[0].split("（")[0].strip() or national
    return {
        "carrier": ctx.carrier_name,
        "number": mask(ctx.msisdn),
        "disconnected": _date(ctx.disconnected_on, language),
        "release": _date(ctx.release_on, language),
        "unbind_url": ctx.unbind_url,
        "national": national,
        "national_short": national_short,
        "reminder_id": ctx.reminder_id,
        "nth": nth,
        "nth_cap": nth[:1].upper() + nth[1:],
    }


def _body(ctx: ReminderContext, texts: _Texts, values: dict[str, str], language: Language) -> list[str]:
    ordinal = texts.ordinal_final if ctx.final else texts.ordinal.substitute(values)
    sentence_gap = " " if language == "en" else ""
    urgent = texts.urgent.get(ctx.kind)
    steps = [s.substitute(values) for s in texts.steps]
    closing = ordinal + sentence_gap + texts.done
    if ctx.kind in ("exception", "violation"):
        # It has happened: no "which reminder" and no "ignore this", but whom to contact.
        steps.append(texts.contact_step.substitute(values))
        closing = ""
    lead = urgent.lead if urgent else texts.lead[ctx.cause]
    blocks = [
        lead.substitute(values),
        texts.risk,
        "\n".join([texts.steps_intro, *("  " + s for s in steps)]),
        closing,
    ]
    return [b for b in blocks if b]


def _sms(ctx: ReminderContext, texts: _Texts, values: dict[str, str], language: Language) -> str:
    signature = f"【{values['carrier']}】" if language == "zh-CN" else f"{values['carrier']}: "
    urgent = texts.urgent.get(ctx.kind)
    lead = (urgent.sms_lead if urgent else texts.sms_lead[ctx.cause]).substitute(values)
    unbind = texts.sms_unbind.substitute(values)
    local_only = texts.sms_unbind_local_only.substitute(values)
    ordinal = texts.sms_ordinal_final if ctx.final else texts.sms_ordinal.substitute(values)
    if ctx.kind in ("exception", "violation"):
        ordinal = texts.sms_contact  # it has happened: whom to ask, not which reminder
    reference = texts.sms_reference.substitute(values)
    greeting = texts.sms_greeting
    # Most to least complete; the first that fits is sent. The number, release date and the
    # carrier's unbinding service are never dropped: they are the point of the message.
    candidates = [
        (greeting, unbind, ordinal, reference),
        ("", unbind, ordinal, reference),
        (greeting, unbind, ordinal, ""),
        ("", unbind, ordinal, ""),
        ("", local_only, ordinal, ""),
        ("", local_only, "", ""),
    ]
    limit = _SMS_MAX_CHARS[language]
    for greet, how, nth, ref in candidates:
        text = (signature + greet + lead + how + nth + ref).strip()
        if len(text) <= limit:
            return text
    raise ConfigError(
        f"reminder {ctx.reminder_id}: the shortest {language} SMS is {len(text)} characters, over the "
        f"{limit}-character limit; shorten carrier_name or unbind_url in the configuration"
    )


def _as_text(blocks: list[str]) -> str:
    return "\n\n".join(blocks) + "\n"


def _as_html(subject: str, blocks: list[str], unbind_url: str, language: Language) -> str:
    link = f'<a href="{html.escape(unbind_url)}">{html.escape(unbind_url)}</a>'
    parts = []
    for block in blocks:
        escaped = html.escape(block).replace(html.escape(unbind_url), link)
        parts.append("<p>" + escaped.replace("\n", "<br>\n") + "</p>")
    return (
        f'<!DOCTYPE html>\n<html lang="{language}"><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- the new holder's notice

# A notice to the new holder is sent once per sale and must carry a list of platforms, so it may
# take more segments than a reminder: 5 UCS-2 segments (67 characters each) in Chinese, 4 GSM-7
# segments (153) in English. Past that, named platforms are folded into the counts (below).
_HOLDER_SMS_MAX_CHARS: dict[Language, int] = {"zh-CN": 335, "en": 612}
_ANSWER_WORDS: dict[Language, dict[str, str]] = {
    "zh-CN": {"unbound": "已确认解绑", "no_account": "无相关账户", "step_up_enabled": "已加强验证"},
    "en": {
        "unbound": "confirmed unbinding",
        "no_account": "no account",
        "step_up_enabled": "step-up enabled",
    },
}
_NOT_ANSWERED: dict[Language, str] = {"zh-CN": "尚未答复", "en": "not answered yet"}


@dataclass(frozen=True)
class HolderNoticeContext:
    """What the new holder's notice says. ``outcomes`` is
    :func:`pipelines.compliance.notifications.platform_outcomes` for the number: platform names
    only of those that agreed to be named, nothing about the prior holder."""

    notice_id: str
    msisdn: str = field(repr=False)
    language: str
    outcomes: Mapping[str, Any]  # PlatformOutcomes
    carrier_name: str


def render_holder_notice(ctx: HolderNoticeContext) -> RenderedReminder:
    """The SMS to a recycled number's new holder: the number was used before, what the
    platforms told of it answered as of a day (named when they agreed, else counted), what to do.

    Raises :class:`ConfigError` when even the shortest variant is over the length budget."""
    language = _language(ctx.language)
    zh = language == "zh-CN"
    o = ctx.outcomes
    number, as_of = mask(ctx.msisdn), _date(dt.date.fromisoformat(o["as_of"]), language)
    head = (
        f"【{ctx.carrier_name}】您好，您的号码{number}为二次放号号码，此前曾由他人使用，可能仍绑定他人的网络账户。"
        if zh
        else f"{ctx.carrier_name}: your number {number} is recycled: it was used before and may still be "
        "linked to someone else's online accounts. "
    )
    advice = (
        "如收到他人的验证码或通知，请勿使用，并联系该平台解绑；最新进展请咨询客服。"
        if zh
        else "If you receive someone else's codes or notices, do not use them; ask that platform to "
        "unlink the number. Our customer service has the latest answers. "
    )
    ref = f"编号{ctx.notice_id}" if zh else f"Ref {ctx.notice_id}"
    full, counted = _platform_sentences(o, language, as_of)
    limit = _HOLDER_SMS_MAX_CHARS[language]
    # Most to least complete; a list of named platforms too long for the budget becomes counts.
    for platforms, how, reference in ((full, advice, ref), (counted, advice, ref), (counted, advice, "")):
        text = (head + platforms + how + reference).strip()
        if len(text) <= limit:
            return RenderedReminder("", text, None, language)
    raise ConfigError(
        f"holder notice {ctx.notice_id}: the shortest {language} SMS is {len(text)} characters, over "
        f"the {limit}-character limit; shorten carrier_name in the configuration"
    )


def _platform_sentences(o: Mapping[str, Any], language: Language, as_of: str) -> tuple[str, str]:
    """(named platforms and counts, counts only) as one sentence each."""
    zh = language == "zh-CN"
    named = list(o["named"])
    if not named and not o["others"]["platforms"]:
        quiet = (
            f"截至{as_of}，尚无平台下载或答复该号码的变更通知。"
            if zh
            else (f"As of {as_of} no platform has yet downloaded or answered the notice of the change. ")
        )
        return quiet, quiet
    words = _ANSWER_WORDS[language]
    sep = "、" if zh else ", "

    def answered(answers: Sequence[str]) -> str:
        return sep.join(words[a] for a in answers) or _NOT_ANSWERED[language]

    listed = [
        f"{p['platform']}{answered(p['answers']) if zh else ': ' + answered(p['answers'])}" for p in named
    ]
    others = _counts_phrase(o["others"], language)
    all_counted = _counts_phrase(_fold(o), language, other=False)
    if zh:
        lead = f"截至{as_of}，已通知的平台答复："
        rest = f"；另有{others}" if o["others"]["platforms"] else ""
        return lead + "；".join(listed) + rest + "。", lead + all_counted + "。"
    lead = f"As of {as_of}, the platforms told answered: "
    rest = f"; {others}" if o["others"]["platforms"] else ""
    return lead + "; ".join(listed) + rest + ". ", lead + all_counted + ". "


def holder_lines(named: Sequence[Mapping[str, Any]], others: Mapping[str, Any]) -> list[str]:
    """What ``recycle new-owner`` prints under its counts, in the notice's English words: one
    line per platform that agreed to be named, one for the others, counted."""
    words = _ANSWER_WORDS["en"]
    lines = [
        f"{p['platform']}: " + (", ".join(words[a] for a in p["answers"]) or _NOT_ANSWERED["en"])
        for p in named
    ]
    if others["platforms"]:
        lines.append(_counts_phrase(others, "en"))
    return lines


def _counts_phrase(c: Mapping[str, Any], language: Language, *, other: bool = True) -> str:
    """``3家平台：1家已确认解绑、2家尚未答复`` / ``3 other platforms: 1 confirmed unbinding, …``"""
    zh = language == "zh-CN"
    parts = [
        (f"{c[k]}家{w}" if zh else f"{c[k]} {w}")
        for k, w in (*_ANSWER_WORDS[language].items(), ("not_answered", _NOT_ANSWERED[language]))
        if c[k]
    ]
    if zh:
        return f"{c['platforms']}家平台：" + "、".join(parts)
    return f"{c['platforms']} {'other ' if other else ''}platform(s): " + ", ".join(parts)


def _fold(o: Mapping[str, Any]) -> dict[str, int]:
    """Every platform counted, the named ones too (when a list of names does not fit)."""
    c = dict(o["others"])
    for p in o["named"]:
        c["platforms"] += 1
        for a in p["answers"]:
            c[a] += 1
        c["not_answered"] += 0 if p["answers"] else 1
    return c
