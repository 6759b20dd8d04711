"""Entries, canonical values and commitments: round trips, strict parsing, known answers."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from number_recycling_client.ledger.entries import (
    CanonicalValue,
    Entry,
    EntryType,
    PreparedEntry,
    commitment,
    tenure_ref_for,
)

from pipelines.errors import FormatError, TerminalError

VALUE = CanonicalValue.build(
    msisdn="+8613812345678",
    tenure_start=dt.date(2019, 3, 1),
    tenure_end=dt.date(2025, 1, 2),
    channel="sms",
    delivered_at=dt.datetime(2025, 1, 2, 8, 30, tzinfo=dt.UTC),
    effective_reminders=2,
    receipt_sha256=hashlib.sha256(b"receipt").digest(),
)


def test_type_codes_are_fixed() -> None:
    assert {t.label: int(t) for t in EntryType} == {
        "tenure_closed": 1,
        "reminder_sent": 2,
        "reminder_effective": 3,
        "acknowledged": 4,
        "restored": 5,
        "released": 6,
        "released_with_exception": 7,
        "reissued": 8,
        "reissue_violation": 9,
        "feed_manifest": 10,
        "correction": 11,
        "tenure_statement": 12,
        "holder_notice_sent": 13,
    }


def test_entry_round_trip_and_layout() -> None:
    e = Entry(EntryType.RELEASED, bytes(range(16)), bytes(range(32, 64)))
    data = e.to_bytes()
    assert data == b"\x01\x06" + bytes(range(16)) + bytes(range(32, 64))
    assert Entry.from_bytes(data) == e


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x06" + bytes(48) + b"\x00",  # trailing byte
        b"\x01\x06" + bytes(47),  # short
        b"\x01\x0e" + bytes(48),  # unknown type 14 (13 is holder_notice_sent)
        b"\x01\x00" + bytes(48),  # unknown type 0
        b"\x02\x06" + bytes(48),  # unknown version
    ],
)
def test_entry_strict_parsing(data: bytes) -> None:
    with pytest.raises(FormatError):
        Entry.from_bytes(data)


def test_canonical_value_encoding_is_sorted_length_prefixed_text() -> None:
    v = CanonicalValue.build(msisdn="+8613812345678", channel="sms")
    assert v.to_bytes() == (
        b"\x00\x00\x00\x07channel\x00\x00\x00\x03sms\x00\x00\x00\x06msisdn\x00\x00\x00\x0e+8613812345678"
    )
    assert VALUE.get("delivered_at") == "2025-01-02T08:30:00Z"
    assert VALUE.get("effective_reminders") == "2"
    assert CanonicalValue.from_bytes(VALUE.to_bytes()) == VALUE
    shanghai = dt.timezone(dt.timedelta(hours=8))
    assert (
        CanonicalValue.build(sent_at=dt.datetime(2025, 1, 2, 16, 30, 0, 5, tzinfo=shanghai)).get("sent_at")
        == "2025-01-02T08:30:00.000005Z"
    )


def _field(name: bytes, value: bytes) -> bytes:
    return len(name).to_bytes(4, "big") + name + len(value).to_bytes(4, "big") + value


@pytest.mark.parametrize(
    "data",
    [
        _field(b"msisdn", b"+8613812345678") + _field(b"channel", b"sms"),  # unsorted
        _field(b"channel", b"sms") + _field(b"channel", b"sms"),  # duplicate
        _field(b"channel", b"sms") + b"\x00",  # trailing byte
        _field(b"channel", b"sms")[:-1],  # truncated
        _field(b"channel", b""),  # empty value
        _field(b"Channel", b"sms"),  # bad name
        _field(b"channel", b"fax"),  # unknown channel
        _field(b"msisdn", b"13812345678"),  # not E.164
        _field(b"released_on", b"2025-1-2"),  # not ISO
        _field(b"effective_reminders", b"02"),  # leading zero
        _field(b"sent_at", b"2025-01-02 08:30:00"),  # not UTC Z form
        _field(b"note", b"a\nb"),  # control character
        _field(b"note", b"a\x7fb"),  # DEL
        _field(b"note", b"\x1f"),  # the last C0 control
        _field(b"note", b"\xff"),  # not UTF-8
        (4).to_bytes(4, "big") + b"note",  # name without value
    ],
)
def test_canonical_value_strict_parsing(data: bytes) -> None:
    with pytest.raises(FormatError):
        CanonicalValue.from_bytes(data)


def test_checks_follow_the_name_every_time() -> None:
    """The check a name asks for is decided once a name (cached): a good value does not let a bad
    one through later, and a bad name stays refused."""
    assert CanonicalValue.build(released_on=dt.date(2025, 1, 2), note="a b ~").to_bytes()
    for _ in range(2):
        with pytest.raises(FormatError, match="ISO date"):
            CanonicalValue((("released_on", "2025-1-2"),))
        with pytest.raises(FormatError, match="bad field name"):
            CanonicalValue((("Note", "x"),))


def test_build_rejects_ambiguous_python_values() -> None:
    with pytest.raises(FormatError):
        CanonicalValue.build(flag=True)
    with pytest.raises(FormatError):
        CanonicalValue.build(sent_at=dt.datetime(2025, 1, 1, 8, 0))  # naive time
    assert CanonicalValue.build(channel="sms", reason=None).fields == (("channel", "sms"),)


def test_repr_never_shows_the_number() -> None:
    text = repr(CanonicalValue.build(msisdn="+8613812345678", contact_email="li.wei@example.cn"))
    assert "13812345678" not in text and "li.wei" not in text
    assert "msisdn=<hidden>" in text and "contact_email=<hidden>" in text


def test_commitment_is_hmac_over_opening_label_and_value() -> None:
    opening = bytes(range(32))
    value = VALUE.to_bytes()
    label = b"released"
    expected = hmac.new(
        b"number-recycling/commitment/v1",
        opening + len(label).to_bytes(4, "big") + label + len(value).to_bytes(4, "big") + value,
        "sha256",
    ).digest()
    assert commitment(opening, EntryType.RELEASED, value) == expected
    # The label binds the type: the same opening and value under another type differ.
    assert commitment(opening, EntryType.RELEASED_WITH_EXCEPTION, value) != expected
    assert (
        tenure_ref_for(expected) == hashlib.sha256(b"number-recycling/tenure-ref/v1" + expected).digest()[:16]
    )
    with pytest.raises(TerminalError):
        commitment(bytes(31), EntryType.RELEASED, value)


def test_prepared_entry_names_its_tenure() -> None:
    PreparedEntry("k", EntryType.TENURE_CLOSED, VALUE)
    PreparedEntry("k", EntryType.FEED_MANIFEST, VALUE)
    PreparedEntry("k", EntryType.REMINDER_SENT, VALUE, tenure_key="closed")
    with pytest.raises(TerminalError):
        PreparedEntry("k", EntryType.REMINDER_SENT, VALUE)
    with pytest.raises(TerminalError):
        PreparedEntry("k", EntryType.TENURE_CLOSED, VALUE, tenure_ref=bytes(16))
    with pytest.raises(TerminalError):
        PreparedEntry("k", EntryType.RELEASED, VALUE, tenure_key="a", tenure_ref=bytes(16))


_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: (
        n not in {"msisdn", "new_msisdn", "contact_phone", "channel", "receipt_digest", "seq"}
        and not n.endswith(("_at", "_on", "_sha256"))
        and not n.startswith("tenure_")
        and n
        not in {
            "feed_date",
            "logical_date",
            "effective_reminders",
            "min_effective_reminders",
            "corrects_index",
        }
    )
)
_texts = st.text(
    st.characters(min_codepoint=0x20, blacklist_characters="\x7f", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, _texts, max_size=6))
def test_canonical_values_round_trip_and_reject_any_trailing_byte(fields: dict[str, str]) -> None:
    value = CanonicalValue.build(fields)
    data = value.to_bytes()
    assert CanonicalValue.from_bytes(data) == value
    assert value.as_dict() == fields
    with pytest.raises(FormatError):
        CanonicalValue.from_bytes(data + b"\x00")
