"""SMS segmentation: the alphabet, the cuts (never inside an escape or surrogate pair), the parts
joined again; the encode-once implementation against the per-character one it replaced."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.errors import PermanentDeliveryError
from pipelines.reminders.smpp_text import (
    _GSM_INDEX,
    _LIMITS,
    DATA_CODING_GSM,
    DATA_CODING_LATIN1,
    DATA_CODING_UCS2,
    ESM_CLASS_UDHI,
    GSM_EXTENSION,
    Segment,
    choose_coding,
    decode_segment,
    segments,
)


def _reference(text: str, key: str) -> list[Segment]:
    """The former implementation: every character encoded alone, parts filled greedily."""
    coding = choose_coding(text)
    if coding == DATA_CODING_GSM:
        units = [bytes([_GSM_INDEX[c]]) if c in _GSM_INDEX else bytes([0x1B, GSM_EXTENSION[c]]) for c in text]
    else:
        units = [c.encode("latin-1" if coding == DATA_CODING_LATIN1 else "utf-16-be") for c in text]
    single, per_part = _LIMITS[coding]
    if sum(len(u) for u in units) <= single:
        return [Segment(coding, 0, b"".join(units), 1, 1)]
    chunks, current = [], b""
    for unit in units:
        if len(current) + len(unit) > per_part:
            chunks.append(current)
            current = b""
        current += unit
    chunks.append(current)
    ref, n = hashlib.sha256(key.encode()).digest()[0], len(chunks)
    return [
        Segment(coding, ESM_CLASS_UDHI, bytes([5, 0, 3, ref, n, i]) + c, i, n)
        for i, c in enumerate(chunks, 1)
    ]


gsm = st.text(st.sampled_from(sorted(set(_GSM_INDEX) | set(GSM_EXTENSION))), min_size=1, max_size=700)
latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), min_size=1, max_size=500)
anything = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=400)
mixed = st.lists(st.sampled_from(["号码", "€", "a", "😀", "[", "é", " "]), min_size=1, max_size=300).map(
    "".join
)


@given(text=st.one_of(gsm, latin1, anything, mixed), key=st.text(min_size=1, max_size=20))
def test_segments_are_the_former_implementations(text: str, key: str) -> None:
    assert segments(text, key) == _reference(text, key)


@given(text=st.one_of(gsm, latin1, anything, mixed))
def test_the_parts_join_to_the_text(text: str) -> None:
    parts = segments(text, "rem-1")
    decoded = [decode_segment(p.data_coding, p.esm_class, p.short_message) for p in parts]
    assert "".join(d.text for d in decoded) == text
    assert [(d.part, d.parts) for d in decoded] == [(i, len(parts)) for i in range(1, len(parts) + 1)]


@pytest.mark.parametrize(
    ("text", "coding", "first_part_ends_with"),
    [
        ("a" * 152 + "€" + "b" * 10, DATA_CODING_GSM, b"a"),  # the escape pair would straddle septet 153
        ("号" * 66 + "😀" + "码" * 10, DATA_CODING_UCS2, "号".encode("utf-16-be")),  # the surrogate pair too
    ],
)
def test_a_cut_never_splits_a_pair(text: str, coding: int, first_part_ends_with: bytes) -> None:
    first = segments(text, "k")[0]
    assert first.data_coding == coding and first.short_message.endswith(first_part_ends_with)


def test_the_alphabet_is_the_smallest_that_holds_the_text() -> None:
    assert choose_coding("Hello {name} €5") == DATA_CODING_GSM
    assert choose_coding("Grüße, ça coûte") == DATA_CODING_LATIN1
    assert choose_coding("您的号码") == DATA_CODING_UCS2
    with pytest.raises(PermanentDeliveryError, match="empty"):
        segments("", "k")
    with pytest.raises(PermanentDeliveryError, match="255"):
        segments("号" * 67 * 256, "k")
