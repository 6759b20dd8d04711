"""Phone-number rules in one place: E.164 normalisation and masking for display and logs."""

from __future__ import annotations

import re

import phonenumbers

# Full-width digits and plus sign (common in BSS exports typed on Chinese IMEs) -> ASCII.
_FULLWIDTH = str.maketrans("０１２３４５６７８９＋", "0123456789+")


def normalise(raw: str, default_region: str = "CN") -> str | None:
    """Return the E.164 form of ``raw`` if it is a valid number, else ``None``.

    ``raw`` may carry full-width digits, spaces, dashes, a ``+CC`` or ``00CC`` prefix.
    """
    text = raw.translate(_FULLWIDTH).strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask(e164: str) -> str:
    """Mask a number for display: ``+8613812345678`` -> ``138****5678``.

    The national significant number keeps its first three and last four digits; shorter
    numbers keep only the last two. Never log a number without passing it through here.
    """
    national = _national_digits(e164)
    if len(national) >= 9:
        return f"{national[:3]}****{national[-4:]}"
    return "*" * max(len(national) - 2, 0) + national[-2:]


def mask_contact(contact: str) -> str:
    """Mask an e-mail address or phone contact for logs: ``li.wei@example.cn`` -> ``l***@example.cn``."""
    if "@" in contact:
        local, _, domain = contact.partition("@")
        return f"{local[:1]}***@{domain}"
    return mask(contact)


# What :func:`mask_text` masks in free text: an e-mail address, and a run of seven or more
# digits (ASCII or full-width, an optional leading + or 00) - every mobile, landline and E.164
# number is one; a date (2026-03-01) or a count never is. A number typed with spaces or dashes
# inside is not seen as one: free text masked here is never a BSS field on its own.
_EMAIL = re.compile(r"[^\s,;|\"'<>()\[\]]+@[^\s,;|\"'<>()\[\]]+")
_DIGITS = re.compile(r"(?:\+|＋)?[0-9０-９]{7,}")


def mask_text(text: str) -> str:
    """``text`` (a quarantined line, a detail quoting raw fields) with every e-mail address and
    every phone-length digit run masked: ``13800138000,a.b@x.cn`` -> ``138****8000,a***@x.cn``."""
    text = _EMAIL.sub(lambda m: mask_contact(m.group(0)), text)
    return _DIGITS.sub(lambda m: mask(m.group(0).translate(_FULLWIDTH)), text)


def _national_digits(e164: str) -> str:
    try:
        parsed = phonenumbers.parse(e164, None)
        return str(parsed.national_number)
    except phonenumbers.NumberParseException:
        return "".join(ch for ch in e164 if ch.isdigit())
