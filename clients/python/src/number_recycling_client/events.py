"""The events' wire format (docs/events.md): CloudEvents 1.0 in structured JSON mode, signed as
Standard Webhooks ``v1a`` (Ed25519 over ``"{webhook-id}.{webhook-timestamp}.{body}"``).

The one copy, in the light client (standard library and ``cryptography`` only): the carrier's
server builds and signs with it (``pipelines.events`` imports it from here), a platform verifies
with :func:`verify_event`. Its errors are plain exceptions (:class:`EventError` and subclasses),
so the client needs nothing of the carrier's; the server wraps them at its boundary.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TYPE_PREFIX = "org.camaraproject.number-recycling.v0."
EVENT_NAMES = ("pending", "withdrawn", "released", "reissued")
SUBSCRIPTION_ENDS = TYPE_PREFIX + "subscription-ends"
EVENT_TYPES = tuple(TYPE_PREFIX + n for n in EVENT_NAMES)
CONTENT_TYPE = "application/cloudevents+json"
TOLERANCE_S = 300  # a receiver refuses a timestamp more than 5 minutes from its clock
_REQUIRED = ("specversion", "id", "source", "type")


class Signer(Protocol):
    """Anything that makes a raw Ed25519 signature (a private key, the carrier's FileSigner)."""

    def sign(self, data: bytes) -> bytes: ...


class EventError(ValueError):
    """An event a receiver must refuse; the message says why."""


class NotACloudEventError(EventError):
    """The body is not a CloudEvents 1.0 JSON object."""


class StaleTimestampError(EventError):
    """``webhook-timestamp`` is missing or more than the tolerance from the receiver's clock."""


class BadSignatureError(EventError):
    """No ``v1a`` signature of the message verifies under a trusted key."""


class UnknownKeyError(BadSignatureError):
    """Well-formed signatures, none by a key the receiver trusts (a rotation not yet pulled?)."""


def event_id(stream: str, seq: int) -> str:
    """``pending-000000000042``: the stream and its sequence number, the same on every retry."""
    return f"{stream}-{seq:012d}"


def event_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cloud_event(ident: str, source: str, type_: str, time: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudEvent 1.0 (structured JSON mode) as docs/events.md writes it."""
    return {
        "specversion": "1.0",
        "id": ident,
        "source": source,
        "type": type_,
        "time": time,
        "datacontenttype": "application/json",
        "data": dict(data),
    }


def event_body(event: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys in a fixed order."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def signed_message(ident: str, timestamp: int, body: bytes) -> bytes:
    return f"{ident}.{timestamp}.".encode() + body


def sign_headers(ident: str, timestamp: int, body: bytes, keys: Iterable[Signer]) -> dict[str, str]:
    """The three Standard Webhooks headers; one ``v1a`` signature per key (several during a
    rotation, space-separated)."""
    message = signed_message(ident, timestamp, body)
    signatures = " ".join("v1a," + base64.b64encode(k.sign(message)).decode() for k in keys)
    return {
        "content-type": CONTENT_TYPE,
        "webhook-id": ident,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


def public_key(key: Ed25519PublicKey | bytes | str) -> Ed25519PublicKey:
    """A trusted key given as an object, raw 32 bytes, or hex (as root.json lists it)."""
    if isinstance(key, Ed25519PublicKey):
        return key
    raw = bytes.fromhex(key) if isinstance(key, str) else key
    return Ed25519PublicKey.from_public_bytes(raw)


def keys_from_root(root: Mapping[str, Any], role: str = "timestamp") -> list[Ed25519PublicKey]:
    """The online key(s) a feed root (``root.json``, its ``signed`` part or the whole envelope)
    delegates ``role`` to: the keys events are signed with."""
    signed = root.get("signed", root)
    try:
        keyids = signed["roles"][role]["keyids"]
        return [public_key(signed["keys"][k]["public"]) for k in keyids]
    except (KeyError, TypeError, ValueError) as exc:
        raise EventError(f"root.json has no usable {role!r} keys ({exc!r})") from None


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise EventError(f"the {name} header is missing")


def _check_timestamp(text: str, now: dt.datetime, tolerance_s: int) -> int:
    if not text.isdigit():
        raise StaleTimestampError(f"webhook-timestamp {text[:20]!r} is not integer seconds")
    stamp = int(text)
    skew = stamp - int(now.timestamp())
    if abs(skew) > tolerance_s:
        where = "in the future" if skew > 0 else "old"
        raise StaleTimestampError(
            f"webhook-timestamp is {abs(skew)} s {where} (tolerance {tolerance_s} s): "
            "a replay, or the sender's or this receiver's clock is wrong"
        )
    return stamp


def _signatures(header: str) -> list[bytes]:
    found = []
    for item in header.split():
        version, _, value = item.partition(",")
        if version != "v1a":
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not found:
        raise BadSignatureError("webhook-signature holds no well-formed v1a signature")
    return found


def _check_signature(message: bytes, signatures: list[bytes], keys: list[Ed25519PublicKey]) -> None:
    if not keys:
        raise UnknownKeyError("no trusted keys given: load them from the feed's root.json")
    for signature in signatures:
        for key in keys:
            try:
                key.verify(signature, message)
                return
            except InvalidSignature:
                continue
    raise UnknownKeyError(
        "no signature verifies under a trusted key: the body was changed, or it was signed by "
        "a key you do not trust yet (pull the feed to follow a root rotation)"
    )


def parse_event(body: bytes) -> dict[str, Any]:
    """``body`` as a CloudEvent 1.0 (any 1.x), or :class:`NotACloudEventError`. Unknown
    attributes are kept."""
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise NotACloudEventError("the body is not JSON") from None
    if not isinstance(event, dict):
        raise NotACloudEventError("the body is not a JSON object")
    missing = [a for a in _REQUIRED if not isinstance(event.get(a), str) or not event[a]]
    if missing:
        raise NotACloudEventError(f"not a CloudEvent: {', '.join(missing)} missing or not a string")
    if event["specversion"].split(".")[0] != "1":
        raise NotACloudEventError(f"CloudEvents specversion {event['specversion']!r}; 1.x expected")
    return event


def verify_event(
    headers: Mapping[str, str],
    body: bytes,
    trusted_keys: Iterable[Ed25519PublicKey | bytes | str],
    now: dt.datetime,
    tolerance_s: int = TOLERANCE_S,
) -> dict[str, Any]:
    """The event in ``body`` if the delivery is genuine: a fresh timestamp, a ``v1a`` signature
    by a trusted key over ``id.timestamp.body``, a CloudEvent whose ``id`` is ``webhook-id``.
    Otherwise an :class:`EventError` subclass saying which check failed."""
    ident = _header(headers, "webhook-id")
    stamp = _check_timestamp(_header(headers, "webhook-timestamp"), now, tolerance_s)
    signatures = _signatures(_header(headers, "webhook-signature"))
    keys = [public_key(k) for k in trusted_keys]
    _check_signature(signed_message(ident, stamp, body), signatures, keys)
    event = parse_event(body)
    if event["id"] != ident:
        raise NotACloudEventError(f"the event's id {event['id'][:60]!r} is not webhook-id {ident[:60]!r}")
    return event


__all__ = [
    "CONTENT_TYPE",
    "EVENT_NAMES",
    "EVENT_TYPES",
    "SUBSCRIPTION_ENDS",
    "TOLERANCE_S",
    "TYPE_PREFIX",
    "BadSignatureError",
    "EventError",
    "NotACloudEventError",
    "Signer",
    "StaleTimestampError",
    "UnknownKeyError",
    "cloud_event",
    "event_body",
    "event_id",
    "event_time",
    "keys_from_root",
    "parse_event",
    "public_key",
    "sign_headers",
    "signed_message",
    "trusted_event_keys",
    "verify_event",
]


def trusted_event_keys(root: Any) -> list[Ed25519PublicKey]:
    """The keys to verify events with, from the root a pull verified and stored
    (``store.stored_root(state_dir)``): its timestamp role's online key(s). A root rotation
    that changes them reaches you with your next pull."""
    if root is None:
        raise EventError("no verified root yet: run `nrc pull` (or `recycle pull`) first")
    return keys_from_root(root.to_dict() if hasattr(root, "to_dict") else root)
