"""The fast SMPP codec against smpplib, the codec of record: same bytes out, same fields in."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from smpplib import smpp

from pipelines.reminders import smpp_codec

digits = st.text("0123456789", min_size=1, max_size=15)
octet = st.integers(0, 255)
short_message = st.binary(min_size=1, max_size=254)


class _Seq:
    def __init__(self, sequence: int) -> None:
        self.sequence = sequence

    def next_sequence(self) -> int:
        return self.sequence


def _smpplib(command: str, sequence: int, **params: Any) -> Any:
    pdu = smpp.make_pdu(command, client=_Seq(sequence), **params)
    pdu.sequence = sequence
    return pdu


def _parsed(raw: bytes) -> Any:
    return smpp.parse_pdu(raw, client=_Seq(0), allow_unknown_opt_params=True)


@given(
    sequence=st.integers(1, 0x7FFFFFFF),
    source=st.one_of(digits, st.text("ABCXYZ", min_size=1, max_size=11)),
    ton=st.integers(0, 6),
    dest=digits,
    esm_class=st.sampled_from([0x00, 0x40]),
    registered=st.integers(0, 1),
    coding=st.sampled_from([0x00, 0x08]),
    text=short_message,
)
def test_submit_sm_is_byte_for_byte_smpplibs(
    sequence: int, source: str, ton: int, dest: str, esm_class: int, registered: int, coding: int, text: bytes
) -> None:
    fields = dict(
        source_addr_ton=ton,
        source_addr_npi=1,
        source_addr=source,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=dest,
        esm_class=esm_class,
        registered_delivery=registered,
        data_coding=coding,
        short_message=text,
    )
    ours = smpp_codec.encode_submit_sm(sequence, **fields)
    assert ours == _smpplib("submit_sm", sequence, **fields).generate()
    theirs, back = _parsed(ours), smpp_codec.decode(ours)  # and both read back what we meant
    assert (theirs.destination_addr, theirs.short_message, theirs.sequence) == (dest.encode(), text, sequence)
    assert back is not None
    for name in ("command", "sequence", "esm_class", "short_message", "destination_addr", "data_coding"):
        assert getattr(back, name) == getattr(theirs, name), name


@given(sequence=st.integers(1, 0x7FFFFFFF))
def test_responses_are_byte_for_byte_smpplibs(sequence: int) -> None:
    for command, code in (
        ("deliver_sm_resp", smpp_codec.DELIVER_SM_RESP),
        ("enquire_link_resp", smpp_codec.ENQUIRE_LINK_RESP),
        ("unbind_resp", smpp_codec.UNBIND_RESP),
    ):
        assert smpp_codec.encode_response(code, sequence) == _smpplib(command, sequence).generate()


@given(
    sequence=st.integers(1, 0x7FFFFFFF),
    esm_class=octet,
    text=short_message,
    receipted=st.one_of(st.none(), st.text("0123456789abcdefABCDEF-", min_size=1, max_size=64)),
    state=st.one_of(st.none(), st.integers(0, 8)),
    source=st.text("0123456789", max_size=15),
)
def test_deliver_sm_reads_as_smpplib_reads_it(
    sequence: int, esm_class: int, text: bytes, receipted: str | None, state: int | None, source: str
) -> None:
    params: dict[str, Any] = dict(
        esm_class=esm_class, source_addr=source, destination_addr="10086", short_message=text
    )
    if receipted is not None:
        params["receipted_message_id"] = receipted
    if state is not None:
        params["message_state"] = state
    raw = _smpplib("deliver_sm", sequence, **params).generate()
    ours, theirs = smpp_codec.decode(raw), _parsed(raw)
    assert ours is not None
    for name in (
        "command",
        "sequence",
        "esm_class",
        "short_message",
        "receipted_message_id",
        "message_state",
    ):
        assert getattr(ours, name) == getattr(theirs, name, None), name
    assert ours.status == int(theirs.status)


@given(
    sequence=st.integers(1, 0x7FFFFFFF),
    esm_class=octet,
    text=short_message,
    receipted=st.one_of(st.none(), st.text("0123456789ABCDEF", min_size=1, max_size=64)),
    state=st.one_of(st.none(), st.integers(0, 8)),
)
def test_a_receipt_is_byte_for_byte_smpplibs(
    sequence: int, esm_class: int, text: bytes, receipted: str | None, state: int | None
) -> None:
    """The SMSC simulator's receipts: the same bytes smpplib makes."""
    tlv: dict[str, Any] = {}
    if state is not None:
        tlv["message_state"] = state
    if receipted is not None:
        tlv["receipted_message_id"] = receipted
    theirs = _smpplib("deliver_sm", sequence, esm_class=esm_class, source_addr="", destination_addr="",
                      short_message=text, **tlv).generate()  # fmt: skip
    assert smpp_codec.encode_deliver_sm(sequence, esm_class=esm_class, short_message=text, **tlv) == theirs
    answer = _smpplib("deliver_sm_resp", sequence).generate()
    assert smpp_codec.decode(answer) == smpp_codec.Pdu("deliver_sm_resp", 0, sequence)


@given(
    sequence=st.integers(1, 0x7FFFFFFF),
    status=st.sampled_from([0, 0x58, 0x14, 0x0B, 0x45]),
    message_id=st.text("0123456789abcdef", min_size=1, max_size=64),
)
def test_submit_sm_resp_reads_as_smpplib_reads_it(sequence: int, status: int, message_id: str) -> None:
    pdu = _smpplib("submit_sm_resp", sequence, message_id=message_id)
    pdu.status = status
    raw = pdu.generate()
    assert smpp_codec.encode_submit_sm_resp(sequence, status, message_id) == raw
    ours, theirs = smpp_codec.decode(raw), _parsed(raw)
    assert ours is not None
    assert (ours.command, ours.sequence, ours.status, ours.message_id) == (
        theirs.command,
        theirs.sequence,
        int(theirs.status),
        theirs.message_id,
    )


def test_an_error_response_without_a_body_and_a_generic_nack() -> None:
    bare = smpp_codec._HEADER.pack(16, smpp_codec.SUBMIT_SM_RESP, 0x58, 9)
    nack = smpp_codec._HEADER.pack(16, smpp_codec.GENERIC_NACK, 3, 7)
    assert smpp_codec.decode(bare) == smpp_codec.Pdu("submit_sm_resp", 0x58, 9)
    assert smpp_codec.decode(nack) == smpp_codec.Pdu("generic_nack", 3, 7)
    assert _parsed(nack).command == "generic_nack"


def _agrees_or_declines(data: bytes) -> None:
    ours = smpp_codec.decode(data)
    if ours is None:
        return  # smpplib reads it (or refuses it)
    theirs = _parsed(data)
    assert (ours.command, ours.sequence, ours.status) == (theirs.command, theirs.sequence, int(theirs.status))
    for name in ("message_id", "esm_class", "short_message", "receipted_message_id", "message_state"):
        if getattr(ours, name) is not None:
            assert getattr(ours, name) == getattr(theirs, name), name


@given(raw=st.binary(max_size=120), cut=st.integers(16, 200))
def test_what_the_fast_path_reads_smpplib_reads_the_same(raw: bytes, cut: int) -> None:
    """Garbage, a truncated deliver_sm with its length fixed up, another command: the fast path
    declines (None) or gives smpplib's reading, never a guess of its own."""
    receipt = _smpplib(
        "deliver_sm", 5, esm_class=4, source_addr="", destination_addr="", short_message=b"id:1 stat:DELIVRD",
        receipted_message_id="1", message_state=2,
    ).generate()  # fmt: skip
    truncated = receipt[:cut]
    truncated = len(truncated).to_bytes(4, "big") + truncated[4:]
    for data in (raw, truncated, receipt + b"\x00", receipt[:-1]):
        _agrees_or_declines(data)
    assert smpp_codec.decode(receipt + b"\x00") is None  # the length prefix disagrees
    assert smpp_codec.decode(_smpplib("bind_transceiver_resp", 1, system_id="smsc").generate()) is None
