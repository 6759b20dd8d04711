"""Ledger entries, canonical values and commitments.

An entry is public and carries no number in clear::

    version (u8 = 1) || type (u8) || tenure_ref (16 bytes) || commitment (32 bytes)

``commitment = HMAC-SHA256(key=b"number-recycling/commitment/v1",
msg = opening(32) || u32be(len(label)) || label || u32be(len(value)) || value)`` where
``label`` is the entry type's name (so a commitment cannot be replayed under another type)
and ``value`` the :class:`CanonicalValue` bytes. Without the random opening the commitment
reveals nothing about the value; with it, anyone can check the value.

All entries of one tenure share ``tenure_ref = SHA-256(b"number-recycling/tenure-ref/v1" ||
commitment of its tenure_closed entry)[:16]``, which lets an auditor count reminders per
tenure from the public log alone.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from number_recycling_client.errors import FormatError, TerminalError

ENTRY_VERSION = 1
ENTRY_SIZE = 50
OPENING_SIZE = 32
TENURE_REF_SIZE = 16
COMMITMENT_KEY = b"number-recycling/commitment/v1"
TENURE_REF_DOMAIN = b"number-recycling/tenure-ref/v1"
NO_TENURE = bytes(TENURE_REF_SIZE)  # feed manifests (and corrections of them) belong to no tenure


class EntryType(IntEnum):
    """Entry type codes (u8). Never renumber: the codes are in the public log forever."""

    TENURE_CLOSED = 1  # a tenure ended by permanent disconnection (cancel, or suspension turned final)
    REMINDER_SENT = 2  # a reminder left for a channel (email, sms, letter)
    REMINDER_EFFECTIVE = 3  # a reminder was delivered or acknowledged: counts toward the release gate
    ACKNOWLEDGED = 4  # the prior owner acknowledged a reminder
    RESTORED = 5  # the number went back to the same subscriber within the freeze/suspension
    RELEASED = 6  # the gate passed: freeze over with enough effective reminders
    RELEASED_WITH_EXCEPTION = (
        7  # released after max_hold_days without enough reminders (compliance exception)
    )
    REISSUED = 8  # the number was sold to a new subscriber
    REISSUE_VIOLATION = 9  # a reissue of a number that was not available (compliance violation)
    FEED_MANIFEST = 10  # commits to one day's signed feed manifest
    CORRECTION = 11  # corrects an earlier entry (the value names it); entries are never rewritten
    TENURE_STATEMENT = 12  # a signed tenure statement was issued: commits to its facts (statement.py)
    HOLDER_NOTICE_SENT = 13  # a recycled number's new holder was sent the notice at sale (holder_notice.py)

    @property
    def label(self) -> str:
        """The commitment label: the lower-case type name, e.g. ``released_with_exception``."""
        return self.name.lower()


KNOWN_TYPE_CODES = frozenset(int(t) for t in EntryType)
# u32be(len(label)) || label, per type: computed once, used for every commitment.
_LABEL_PREFIX = {t: len(t.label).to_bytes(4, "big") + t.label.encode("ascii") for t in EntryType}


def commitment(opening: bytes, entry_type: EntryType, value: bytes) -> bytes:
    """HMAC-SHA256 commitment to ``value`` under the type's label, hidden by ``opening``."""
    if len(opening) != OPENING_SIZE:
        raise TerminalError(f"an opening is {OPENING_SIZE} random bytes, got {len(opening)}")
    msg = b"".join((opening, _LABEL_PREFIX[entry_type], len(value).to_bytes(4, "big"), value))
    return hmac.digest(COMMITMENT_KEY, msg, "sha256")


def tenure_ref_for(tenure_commitment: bytes) -> bytes:
    """The public tenure reference derived from the tenure_closed entry's commitment."""
    return hashlib.sha256(TENURE_REF_DOMAIN + tenure_commitment).digest()[:TENURE_REF_SIZE]


@dataclass(frozen=True)
class Entry:
    """One public ledger entry (50 bytes on the wire)."""

    entry_type: EntryType
    tenure_ref: bytes
    commitment: bytes
    version: int = ENTRY_VERSION

    def __post_init__(self) -> None:
        if self.version != ENTRY_VERSION:
            raise FormatError(f"ledger entry: unknown version {self.version}")
        if len(self.tenure_ref) != TENURE_REF_SIZE or len(self.commitment) != 32:
            raise FormatError("ledger entry: tenure_ref is 16 bytes and commitment 32 bytes")

    def to_bytes(self) -> bytes:
        return bytes((self.version, int(self.entry_type))) + self.tenure_ref + self.commitment

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        if len(data) != ENTRY_SIZE:
            raise FormatError(f"ledger entry: {len(data)} bytes, expected {ENTRY_SIZE}")
        if data[0] != ENTRY_VERSION:
            raise FormatError(f"ledger entry: unknown version {data[0]}")
        if data[1] not in KNOWN_TYPE_CODES:
            raise FormatError(f"ledger entry: unknown type code {data[1]}")
        entry = cls(EntryType(data[1]), data[2:18], data[18:50], data[0])
        if entry.to_bytes() != data:
            raise FormatError("ledger entry: not in canonical form")
        return entry


def is_well_formed_entry(data: bytes) -> bool:
    """Fast check used when scanning millions of entries (full parse only on failure)."""
    return len(data) == ENTRY_SIZE and data[0] == ENTRY_VERSION and data[1] in KNOWN_TYPE_CODES


# ---------------------------------------------------------------- canonical values

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_UINT = re.compile(r"0|[1-9][0-9]*")
_INT = re.compile(r"0|-?[1-9][0-9]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z")
# C0 controls and DEL. A regex, not a per-character loop: 0.13 µs against 0.97 µs a field, and a
# night's ledger step checks ~10 fields of ~2M entries (measured in benchmarks/bench_night.py).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_U32 = struct.Struct(">I")
_DATE_FIELDS = frozenset(
    {
        "tenure_start",
        "tenure_end",
        "disconnected_on",
        "released_on",
        "reissued_on",
        "restored_on",
        "freeze_ends_on",
        "feed_date",
        "logical_date",
    }
)
_COUNT_FIELDS = frozenset({"effective_reminders", "min_effective_reminders", "corrects_index", "seq"})
_CHANNELS = frozenset({"email", "sms", "letter"})
_MASKED_FIELDS = frozenset({"msisdn", "contact_phone", "contact_email", "contact", "new_msisdn"})
MAX_VALUE_SIZE = 64 * 1024


def _check_phone(name: str, value: str) -> None:
    if not _E164.fullmatch(value):
        raise FormatError(f"canonical value: {name} must be E.164 (+ and 7-15 digits)")


def _check_date(name: str, value: str) -> None:
    try:
        ok = dt.date.fromisoformat(value).isoformat() == value
    except ValueError:
        ok = False
    if not ok:
        raise FormatError(f"canonical value: {name} must be an ISO date YYYY-MM-DD, got {value[:32]!r}")


def _check_time(name: str, value: str) -> None:
    if not _TIMESTAMP.fullmatch(value):
        raise FormatError(f"canonical value: {name} must be a UTC time YYYY-MM-DDTHH:MM:SS[.ffffff]Z")
    try:
        dt.datetime.fromisoformat(value[:-1])
    except ValueError as exc:
        raise FormatError(f"canonical value: {name} is not a real time: {value!r}") from exc


def _check_count(name: str, value: str) -> None:
    if not _UINT.fullmatch(value):
        raise FormatError(f"canonical value: {name} must be a decimal count without leading zeros")


def _check_digest(name: str, value: str) -> None:
    if not _SHA256_HEX.fullmatch(value):
        raise FormatError(f"canonical value: {name} must be 64 lower-case hex digits")


def _check_channel(name: str, value: str) -> None:
    if value not in _CHANNELS:
        raise FormatError(f"canonical value: channel must be one of {', '.join(sorted(_CHANNELS))}")


@functools.lru_cache(maxsize=1024)
def _checker(name: str) -> Callable[[str, str], None] | None:
    """The check a field's name asks of its value (None: text). Decided once a name, not once a
    field: a night's ledger step checks ~10 fields of ~2M entries with a few dozen names."""
    if not _NAME.fullmatch(name):
        raise FormatError(f"canonical value: bad field name {name[:70]!r}")
    if name in ("msisdn", "new_msisdn", "contact_phone"):
        return _check_phone
    if name in _DATE_FIELDS:
        return _check_date
    if name.endswith("_at"):
        return _check_time
    if name in _COUNT_FIELDS:
        return _check_count
    if name.endswith("_sha256") or name == "receipt_digest":
        return _check_digest
    return _check_channel if name == "channel" else None


@functools.lru_cache(maxsize=1024)
def _name_prefix(name: str) -> bytes:
    """``u32be(len(name)) || name``, the encoding's part a name decides (cached with its check)."""
    encoded = name.encode("utf-8")
    return _U32.pack(len(encoded)) + encoded


def _check_field(name: str, value: str) -> None:
    check = _checker(name)
    if not value:
        raise FormatError(f"canonical value: field {name} is empty (leave it out instead)")
    if _CONTROL.search(value):
        raise FormatError(f"canonical value: field {name} has control characters")
    if check is not None:
        check(name, value)


def _canonical_text(name: str, value: object) -> str:
    if type(value) is str:  # most values: the one check, not the chain below
        return value
    if isinstance(value, bool):
        raise FormatError(f"canonical value: {name}: booleans are ambiguous; use a word")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise FormatError(f"canonical value: {name}: a time needs a timezone (UTC)")
        utc = value.astimezone(dt.UTC)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{utc.microsecond:06d}" if utc.microsecond else "") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return value
    raise FormatError(f"canonical value: {name}: unsupported type {type(value).__name__}")


@dataclass(frozen=True, repr=False)
class CanonicalValue:
    """The committed value of an entry: named text fields, sorted by name, each length-prefixed.

    Wire form: for each field ``u32be(len(name)) || name || u32be(len(value)) || value`` (UTF-8),
    fields strictly ascending by name, no empty values. Known fields are checked: ``msisdn``
    E.164, ``*_on``/``tenure_*`` ISO dates, ``*_at`` UTC times, counts decimal, digests hex.
    """

    fields: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        # One pass a field: order, checks and encoding (~2M entries a night go through here).
        parts: list[bytes] = []
        previous = ""
        for name, value in self.fields:
            if name <= previous:
                raise FormatError("canonical value: field names must be unique and in ascending order")
            previous = name
            _check_field(name, value)
            v = value.encode("utf-8")
            parts += (_name_prefix(name), _U32.pack(len(v)), v)
        out = b"".join(parts)
        if len(out) > MAX_VALUE_SIZE:
            raise FormatError(f"canonical value: larger than {MAX_VALUE_SIZE} bytes")
        # Encoded once: a nightly run serialises each value for the commitment and the store.
        object.__setattr__(self, "_encoded", out)

    @classmethod
    def build(cls, values: Mapping[str, object] | None = None, /, **fields: object) -> CanonicalValue:
        """Build from Python values: dates -> ISO, aware datetimes -> UTC ``...Z``, ints -> decimal,
        bytes -> hex, ``None`` -> field left out."""
        merged = {**(values or {}), **fields}
        pairs = [(k, _canonical_text(k, v)) for k, v in merged.items() if v is not None]
        return cls(tuple(sorted(pairs)))

    def to_bytes(self) -> bytes:
        encoded: bytes = self.__dict__["_encoded"]
        return encoded

    @classmethod
    def from_bytes(cls, data: bytes) -> CanonicalValue:
        """Parse strictly: exact length, valid UTF-8, sorted unique names, known fields checked."""
        parts: list[str] = []
        pos = 0
        while pos < len(data):
            if pos + 4 > len(data):
                raise FormatError("canonical value: truncated length prefix")
            n = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
            if pos + n > len(data):
                raise FormatError("canonical value: a field runs past the end")
            try:
                parts.append(data[pos : pos + n].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise FormatError("canonical value: not valid UTF-8") from exc
            pos += n
        if len(parts) % 2:
            raise FormatError("canonical value: a field name without a value")
        value = cls(tuple(zip(parts[::2], parts[1::2], strict=True)))
        if value.to_bytes() != data:
            raise FormatError("canonical value: not in canonical form")
        return value

    def get(self, name: str) -> str | None:
        for n, v in self.fields:
            if n == name:
                return v
        return None

    def as_dict(self) -> dict[str, str]:
        return dict(self.fields)

    def __repr__(self) -> str:
        # Numbers and contacts are hidden, not masked: masking needs the number's national
        # digits (phonenumbers), which this package does not depend on; a repr is for debugging.
        shown = ", ".join(f"{n}={'<hidden>' if n in _MASKED_FIELDS else repr(v)}" for n, v in self.fields)
        return f"CanonicalValue({shown})"


@dataclass(frozen=True)
class PreparedEntry:
    """What the integrator hands :meth:`Ledger.append`: type, value and an idempotency key.

    ``key`` must be deterministic for the fact it records (e.g. ``reminder_effective:<id>``) and
    should carry no personal data (it is stored only as a keyed hash, but logs may show it).
    The tenure of a non-``tenure_closed`` entry is named either by ``tenure_key`` (the key of its
    ``tenure_closed`` entry, in this batch or earlier) or directly by ``tenure_ref``.
    """

    key: str
    entry_type: EntryType
    value: CanonicalValue
    tenure_key: str | None = None
    tenure_ref: bytes | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise TerminalError("a prepared ledger entry needs a non-empty idempotency key")
        given = (self.tenure_key is not None) + (self.tenure_ref is not None)
        if self.tenure_ref is not None and len(self.tenure_ref) != TENURE_REF_SIZE:
            raise TerminalError(f"entry {self.key}: tenure_ref must be {TENURE_REF_SIZE} bytes")
        if self.entry_type == EntryType.TENURE_CLOSED and given:
            raise TerminalError(
                f"entry {self.key}: a tenure_closed entry defines its own tenure_ref; pass neither "
                "tenure_key nor tenure_ref"
            )
        if given > 1:
            raise TerminalError(f"entry {self.key}: give tenure_key or tenure_ref, not both")
        if (
            self.entry_type not in (EntryType.TENURE_CLOSED, EntryType.FEED_MANIFEST, EntryType.CORRECTION)
            and not given
        ):
            raise TerminalError(
                f"entry {self.key}: a {self.entry_type.label} entry must name its tenure "
                "(tenure_key of the tenure_closed entry, or tenure_ref)"
            )
