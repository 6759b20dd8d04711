"""The PDUs of a night's SMPP traffic, encoded and decoded with ``struct``; smpplib for the rest.

A night sends every SMS segment as a ``submit_sm`` and reads its ``submit_sm_resp``, then reads
the segment's delivery receipt (``deliver_sm``) and answers it (``deliver_sm_resp``): four PDUs a
segment, about two segments a Chinese reminder. smpplib, the codec of record (smpp.py says why
it was chosen), builds each PDU from generic field tables: 40 µs to make and generate a
``submit_sm`` and 38 µs to parse a ``deliver_sm`` on this machine, about 300 µs of CPU a
reminder, which made SMPP the dearest channel of the night (``benchmarks/bench_night.py``).
Here the same bytes cost 1-3 µs. Only these PDUs take the fast path: :func:`decode` returns
None for any other command and for anything it cannot read, and the caller then asks smpplib,
so smpplib stays the judge of every unusual or malformed PDU.
``tests/unit/reminders/test_smpp_codec.py`` checks, with hypothesis, that both codecs give the
same bytes and the same fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
GENERIC_NACK = 0x80000000

_NAMES = {
    SUBMIT_SM: "submit_sm",
    SUBMIT_SM_RESP: "submit_sm_resp",
    DELIVER_SM: "deliver_sm",
    DELIVER_SM_RESP: "deliver_sm_resp",
    UNBIND: "unbind",
    ENQUIRE_LINK: "enquire_link",
    GENERIC_NACK: "generic_nack",
}
_RESPONSE_BODY = {DELIVER_SM_RESP: b"\x00", ENQUIRE_LINK_RESP: b"", UNBIND_RESP: b""}  # message_id ""
_HEADER = struct.Struct(">IIII")
_TLV = struct.Struct(">HH")
_RECEIPTED_MESSAGE_ID, _MESSAGE_STATE = 0x001E, 0x0427


@dataclass(slots=True)
class Pdu:
    """A decoded PDU: what the channel reads of it (smpplib's attribute names)."""

    command: str
    status: int
    sequence: int
    message_id: bytes | None = None  # submit_sm_resp
    esm_class: int | None = None  # submit_sm, deliver_sm ...
    short_message: bytes | None = None
    destination_addr: bytes | None = None
    data_coding: int | None = None
    receipted_message_id: bytes | None = None
    message_state: int | None = None


def encode_submit_sm(
    sequence: int,
    *,
    source_addr_ton: int,
    source_addr_npi: int,
    source_addr: str,
    dest_addr_ton: int,
    dest_addr_npi: int,
    destination_addr: str,
    esm_class: int,
    registered_delivery: int,
    data_coding: int,
    short_message: bytes,
) -> bytes:
    """A ``submit_sm`` (no service type, schedule or validity; one short_message of <= 254 bytes)."""
    if len(short_message) > 254:
        raise ValueError("short_message longer than 254 bytes: segment the text first")
    body = b"".join(
        (
            b"\x00",  # service_type: the SMSC's default
            bytes((source_addr_ton, source_addr_npi)),
            source_addr.encode("ascii"),
            b"\x00",
            bytes((dest_addr_ton, dest_addr_npi)),
            destination_addr.encode("ascii"),
            b"\x00",
            # esm_class, protocol_id, priority_flag, schedule_delivery_time "", validity_period "",
            # registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id, sm_length
            bytes((esm_class, 0, 0, 0, 0, registered_delivery, 0, data_coding, 0, len(short_message))),
            short_message,
        )
    )
    return _HEADER.pack(16 + len(body), SUBMIT_SM, 0, sequence) + body


def encode_response(command_id: int, sequence: int) -> bytes:
    """``deliver_sm_resp``, ``enquire_link_resp`` or ``unbind_resp`` with status 0."""
    body = _RESPONSE_BODY[command_id]
    return _HEADER.pack(16 + len(body), command_id, 0, sequence) + body


def encode_submit_sm_resp(sequence: int, status: int, message_id: str) -> bytes:
    body = message_id.encode("ascii") + b"\x00"
    return _HEADER.pack(16 + len(body), SUBMIT_SM_RESP, status, sequence) + body


def encode_deliver_sm(
    sequence: int,
    *,
    esm_class: int,
    short_message: bytes,
    receipted_message_id: str | None = None,
    message_state: int | None = None,
) -> bytes:
    """A ``deliver_sm`` as an SMSC sends a receipt (empty addresses), the TLVs in smpplib's order."""
    tlvs = b""
    if message_state is not None:
        tlvs += _TLV.pack(_MESSAGE_STATE, 1) + bytes((message_state,))
    if receipted_message_id is not None:
        value = receipted_message_id.encode("ascii") + b"\x00"
        tlvs += _TLV.pack(_RECEIPTED_MESSAGE_ID, len(value)) + value
    body = b"".join(
        (
            bytes(7),  # service_type "", source ton/npi/addr "", dest ton/npi/addr ""
            bytes((esm_class, 0, 0, 0, 0, 0, 0, 0, 0, len(short_message))),
            short_message,
            tlvs,
        )
    )
    return _HEADER.pack(16 + len(body), DELIVER_SM, 0, sequence) + body


def decode(raw: bytes) -> Pdu | None:
    """The PDU ``raw`` (one whole PDU, its length prefix included), or None: not one of the night's
    commands, or not well formed - then smpplib reads it."""
    if len(raw) < 16:
        return None
    length, command_id, status, sequence = _HEADER.unpack_from(raw)
    name = _NAMES.get(command_id)
    if name is None or length != len(raw):
        return None
    try:
        if command_id == SUBMIT_SM_RESP:
            message_id = _cstring(raw, 16)[0] if len(raw) > 16 else None
            return Pdu(name, status, sequence, message_id=message_id)
        if command_id in (DELIVER_SM, SUBMIT_SM):
            return _message(raw, name, status, sequence)
        if command_id == DELIVER_SM_RESP:
            return Pdu(name, status, sequence) if raw[16:] in (b"", b"\x00") else None
    except (IndexError, ValueError, struct.error):
        return None
    return Pdu(name, status, sequence) if length == 16 else None


def _message(raw: bytes, name: str, status: int, sequence: int) -> Pdu | None:
    """``submit_sm`` and ``deliver_sm`` share their body's layout."""
    pos = _cstring(raw, 16)[1] + 2  # service_type, source ton/npi
    pos = _cstring(raw, pos)[1] + 2  # source_addr, dest ton/npi
    destination_addr, pos = _cstring(raw, pos)
    esm_class = raw[pos]
    pos = _cstring(raw, pos + 3)[1]  # protocol_id, priority_flag; schedule_delivery_time
    pos = _cstring(raw, pos)[1] + 2  # validity_period; registered, replace
    data_coding, sm_length = raw[pos], raw[pos + 2]  # data_coding, sm_default_msg_id, sm_length
    pos += 2
    short_message = raw[pos + 1 : pos + 1 + sm_length]
    if len(short_message) != sm_length:
        return None
    pdu = Pdu(name, status, sequence, esm_class=esm_class, short_message=short_message,
              destination_addr=destination_addr, data_coding=data_coding)  # fmt: skip
    pos += 1 + sm_length
    if name == "submit_sm" and pos < len(raw):
        return None  # TLVs on a submit_sm (a message_payload, say): smpplib's to read
    while pos < len(raw):
        tag, size = _TLV.unpack_from(raw, pos)
        value = raw[pos + 4 : pos + 4 + size]
        if len(value) != size:
            return None
        if tag == _RECEIPTED_MESSAGE_ID:
            pdu.receipted_message_id = value.rstrip(b"\x00")
        elif tag == _MESSAGE_STATE and size == 1:
            pdu.message_state = value[0]
        pos += 4 + size
    return pdu


def _cstring(raw: bytes, pos: int) -> tuple[bytes, int]:
    """The NUL-terminated string at ``pos`` and the position after its NUL (ValueError: none)."""
    end = raw.index(b"\x00", pos)
    return raw[pos:end], end + 1
