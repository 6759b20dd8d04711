"""SMS text on SMPP: the alphabet a text needs and its concatenated segments (3GPP TS 23.038/23.040).

A text goes out in the smallest alphabet that holds it, because a segment of GSM 7-bit holds 160
characters, Latin-1 140 and UCS-2 only 70 (the Chinese reminder of 140 characters is three UCS-2
segments; the English one of up to 300 is two GSM segments). Longer texts are split into parts
that each carry a concatenation header (UDH, IEI 0x00: reference, total, sequence) and
``esm_class`` UDHI. The reference is derived from the reminder id, so a resend of the same
reminder carries the same reference and a handset that got some parts before a link drop still
joins them. Splits never cut a GSM escape pair or a UTF-16 surrogate pair.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pipelines.errors import PermanentDeliveryError

DATA_CODING_GSM = 0x00  # the SMSC default alphabet: GSM 03.38, one septet per octet (unpacked)
DATA_CODING_LATIN1 = 0x03
DATA_CODING_UCS2 = 0x08
ESM_CLASS_UDHI = 0x40

# 3GPP TS 23.038 default alphabet (position = septet value; 0x1B escapes to the extension table).
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E}
GSM_EXTENSION |= {"|": 0x40, "€": 0x65}
_GSM_INDEX = {c: i for i, c in enumerate(GSM_BASIC) if c != "\x1b"}
_GSM_FROM_EXT = {v: k for k, v in GSM_EXTENSION.items()}
_GSM_CHARS = frozenset(_GSM_INDEX) | frozenset(GSM_EXTENSION)
# str.translate table: a character to its septet, or to the escape and its extension septet.
_GSM_TABLE = {ord(c): chr(i) for c, i in _GSM_INDEX.items()} | {
    ord(c): "\x1b" + chr(i) for c, i in GSM_EXTENSION.items()
}

# Payload octets of one segment: alone, and beside the 6-octet concatenation header. GSM counts
# septets: 160 alone, 153 with the header (48 bits of header take 7 septets).
_LIMITS = {DATA_CODING_GSM: (160, 153), DATA_CODING_LATIN1: (140, 134), DATA_CODING_UCS2: (140, 134)}
MAX_SEGMENTS = 255


@dataclass(frozen=True)
class Segment:
    """One ``submit_sm``'s message: ``short_message`` holds the UDH when ``esm_class`` has UDHI."""

    data_coding: int
    esm_class: int
    short_message: bytes
    part: int  # 1-based
    parts: int


def choose_coding(text: str) -> int:
    """GSM 7-bit when every character is in the default alphabet, else Latin-1, else UCS-2."""
    if _GSM_CHARS.issuperset(text):
        return DATA_CODING_GSM
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return DATA_CODING_UCS2
    return DATA_CODING_LATIN1


def _encode(text: str, coding: int) -> bytes:
    """``text`` in the alphabet ``coding`` (GSM: one septet an octet, escape pairs included)."""
    if coding == DATA_CODING_GSM:
        return text.translate(_GSM_TABLE).encode("latin-1")
    return text.encode("latin-1" if coding == DATA_CODING_LATIN1 else "utf-16-be")


def _cut(data: bytes, end: int, coding: int) -> int:
    """Where a part that may end at ``end`` ends: never inside a GSM escape pair (0x1B is only
    ever an escape: no septet of the extension table is 0x1B) or a UTF-16 surrogate pair."""
    if end >= len(data):
        return len(data)
    if coding == DATA_CODING_GSM and data[end - 1] == 0x1B:
        return end - 1
    if coding == DATA_CODING_UCS2 and 0xD8 <= data[end - 2] <= 0xDB:  # a high surrogate last
        return end - 2
    return end


def segments(text: str, reference_key: str) -> list[Segment]:
    """``text`` as the ``submit_sm`` messages that carry it, concatenated when it is long.

    ``reference_key`` (the reminder id) fixes the 8-bit concatenation reference. Raises
    :class:`PermanentDeliveryError` for an empty text or one over 255 segments. The text is
    encoded once and cut (the per-character encoding this replaced cost ~150 µs a Chinese
    reminder, the dearest part of sending one over SMPP)."""
    coding = choose_coding(text)
    data = _encode(text, coding)
    single, per_part = _LIMITS[coding]
    if not data:
        raise PermanentDeliveryError("the SMS text is empty; check the reminder's rendering")
    if len(data) <= single:
        return [Segment(coding, 0, data, 1, 1)]
    chunks: list[bytes] = []
    start = 0
    while start < len(data):
        end = _cut(data, start + per_part, coding)
        chunks.append(data[start:end])
        start = end
    if len(chunks) > MAX_SEGMENTS:
        raise PermanentDeliveryError(f"the SMS text needs {len(chunks)} segments; SMS allows {MAX_SEGMENTS}")
    ref = hashlib.sha256(reference_key.encode()).digest()[0]
    n = len(chunks)
    return [
        Segment(coding, ESM_CLASS_UDHI, bytes([0x05, 0x00, 0x03, ref, n, i]) + chunk, i, n)
        for i, chunk in enumerate(chunks, start=1)
    ]


@dataclass(frozen=True)
class DecodedSegment:
    reference: int | None  # None: not concatenated
    part: int
    parts: int
    text: str


def decode_segment(data_coding: int, esm_class: int, short_message: bytes) -> DecodedSegment:
    """The inverse of :func:`segments` for one message (what a handset or the simulator reads)."""
    reference, part, parts, body = None, 1, 1, short_message
    if esm_class & ESM_CLASS_UDHI:
        udh_len = short_message[0]
        udh = short_message[1 : 1 + udh_len]
        body = short_message[1 + udh_len :]
        if len(udh) >= 5 and udh[0] == 0x00 and udh[1] == 0x03:
            reference, parts, part = udh[2], udh[3], udh[4]
    if data_coding == DATA_CODING_UCS2:
        text = body.decode("utf-16-be")
    elif data_coding == DATA_CODING_LATIN1:
        text = body.decode("latin-1")
    else:
        text = _decode_gsm(body)
    return DecodedSegment(reference, part, parts, text)


def _decode_gsm(body: bytes) -> str:
    out: list[str] = []
    escaped = False
    for b in body:
        if escaped:
            out.append(_GSM_FROM_EXT.get(b, " "))
            escaped = False
        elif b == 0x1B:
            escaped = True
        else:
            out.append(GSM_BASIC[b & 0x7F])
    return "".join(out)
