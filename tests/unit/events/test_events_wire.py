"""The events' wire format: Standard Webhooks v1a signatures over CloudEvents, verify_event's
refusals each with its own error."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from number_recycling_client.events import (
    BadSignatureError,
    EventError,
    NotACloudEventError,
    StaleTimestampError,
    UnknownKeyError,
    cloud_event,
    event_body,
    event_id,
    keys_from_root,
    sign_headers,
    verify_event,
)

NOW = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TYPE = "org.camaraproject.number-recycling.v0.pending"


def delivery(
    data: dict[str, object] | None = None, at: dt.datetime = NOW, keys: tuple = (KEY,)
) -> tuple[dict[str, str], bytes]:
    ident = event_id("pending", 42)
    body = event_body(
        cloud_event(
            ident,
            "https://c.example/s/1",
            TYPE,
            "2026-12-05T00:00:00Z",
            data or {"phoneNumber": "+8613800000001"},
        )
    )
    return sign_headers(ident, int(at.timestamp()), body, keys), body


def test_a_signed_event_verifies_and_round_trips() -> None:
    headers, body = delivery()
    assert headers["webhook-id"] == "pending-000000000042"
    assert headers["webhook-signature"].startswith("v1a,")
    event = verify_event(headers, body, [KEY.public_key()], NOW)
    assert event["id"] == "pending-000000000042" and event["data"]["phoneNumber"] == "+8613800000001"
    # keys as raw bytes or hex (root.json) work too, headers in any case
    raw = KEY.public_key().public_bytes_raw()
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_event(upper, body, [raw.hex()], NOW) == event
    assert verify_event(headers, body, [raw], NOW) == event


def test_a_rotation_signs_with_both_keys_and_either_verifies() -> None:
    headers, body = delivery(keys=(OTHER, KEY))
    assert len(headers["webhook-signature"].split()) == 2
    verify_event(headers, body, [KEY.public_key()], NOW)
    verify_event(headers, body, [OTHER.public_key()], NOW)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda h, b: (h, b.replace(b"0001", b"0002")), UnknownKeyError),  # body altered
        (lambda h, b: ({**h, "webhook-id": "pending-000000000043"}, b), UnknownKeyError),
        (lambda h, b: ({**h, "webhook-signature": "v1,abc"}, b), BadSignatureError),
        (lambda h, b: ({**h, "webhook-signature": "v1a,!!!"}, b), BadSignatureError),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), EventError),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), StaleTimestampError),
    ],
)
def test_tampering_is_refused(change, error) -> None:  # type: ignore[no-untyped-def]
    headers, body = change(*delivery())
    with pytest.raises(error):
        verify_event(headers, body, [KEY.public_key()], NOW)


def test_an_unknown_key_is_refused() -> None:
    headers, body = delivery(keys=(OTHER,))
    with pytest.raises(UnknownKeyError, match="pull the feed"):
        verify_event(headers, body, [KEY.public_key()], NOW)


@pytest.mark.parametrize("skew", [-301, 301, 86400])
def test_stale_or_future_timestamps_are_refused(skew: int) -> None:
    headers, body = delivery(at=NOW + dt.timedelta(seconds=skew))
    with pytest.raises(StaleTimestampError, match="tolerance 300 s"):
        verify_event(headers, body, [KEY.public_key()], NOW)


def test_timestamps_inside_the_window_pass() -> None:
    for skew in (-300, 0, 300):
        headers, body = delivery(at=NOW + dt.timedelta(seconds=skew))
        verify_event(headers, body, [KEY.public_key()], NOW)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"specversion":"1.0","id":"x","source":"s"}',
        b'{"specversion":"2.0","id":"x","source":"s","type":"t"}',
    ],
)
def test_a_signed_body_that_is_not_a_cloud_event_is_refused(body: bytes) -> None:
    headers = sign_headers("x", int(NOW.timestamp()), body, [KEY])
    with pytest.raises(NotACloudEventError):
        verify_event(headers, body, [KEY.public_key()], NOW)


def test_the_event_id_must_be_the_webhook_id() -> None:
    _, body = delivery()
    headers = sign_headers("pending-000000000099", int(NOW.timestamp()), body, [KEY])
    with pytest.raises(NotACloudEventError, match="webhook-id"):
        verify_event(headers, body, [KEY.public_key()], NOW)


def test_unknown_attributes_are_kept() -> None:
    ident = "x-000000000001"
    body = b'{"specversion":"1.1","id":"x-000000000001","source":"s","type":"t","future":{"a":1}}'
    headers = sign_headers(ident, int(NOW.timestamp()), body, [KEY])
    assert verify_event(headers, body, [KEY.public_key()], NOW)["future"] == {"a": 1}


def test_keys_from_root_reads_the_online_role() -> None:
    pub = KEY.public_key().public_bytes_raw().hex()
    root = {"signed": {"keys": {"k1": {"public": pub}}, "roles": {"timestamp": {"keyids": ["k1"]}}}}
    headers, body = delivery()
    verify_event(headers, body, keys_from_root(root), NOW)
    with pytest.raises(EventError, match="manifest"):
        keys_from_root(root, "manifest")


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**33))
def test_any_flipped_byte_is_refused(extra: bytes, stamp: int) -> None:
    when = dt.datetime.fromtimestamp(stamp, dt.UTC)
    ident = "pending-000000000001"
    body = (
        b'{"specversion":"1.0","id":"pending-000000000001","source":"s","type":"t","x":"'
        + base64.b64encode(extra)
        + b'"}'
    )
    headers = sign_headers(ident, stamp, body, [KEY])
    assert verify_event(headers, body, [KEY.public_key()], when)["id"] == ident
    flipped = bytes([body[-3] ^ 1])
    with pytest.raises(EventError):
        verify_event(headers, body[:-3] + flipped + body[-2:], [KEY.public_key()], when)
