"""Feed metadata wire formats: root, manifest, timestamp and query receipt, TUF-style.

Every document is a signed envelope ``{"signed": {...}, "signatures": [{"keyid", "sig"}]}``
serialised as canonical JSON (sorted keys, no whitespace, UTF-8, integers only) and stored
byte-for-byte in that form. Signatures are Ed25519 over the canonical bytes of ``signed``
(detached from it inside the envelope); ``keyid`` is the hex SHA-256 of the raw 32-byte
public key. Parsing is strict where integrity needs it: the bytes must re-serialise to
themselves, so whitespace, key order, duplicate keys, floats and leading zeros are rejected.

The formats tolerate the future the python-tuf way (``tuf/api/_payload.py``): every parsed type
keeps the fields this version does not know in ``unrecognized_fields`` and writes them back, so
a document from a later 1.x publisher still re-serialises to its exact bytes, and those fields
stay covered by the signature (they are part of ``signed``). Any ``spec_version`` with our
major number parses; another major is refused. The envelope itself and its signature entries
stay closed: a field there would sit outside the signed bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from number_recycling_client.errors import FormatError, SignatureError
from number_recycling_client.ledger.entries import CanonicalValue
from number_recycling_client.ledger.note import Signer

SPEC_VERSION = "1.0"  # what this version writes
SPEC_MAJOR = 1  # what it reads: any 1.x (a minor version only adds fields, kept as unrecognized)
MAX_METADATA_BYTES = 1 << 20  # a manifest lists a handful of files; anything larger is hostile

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_PATH = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*")
_ROLE = re.compile(r"[a-z][a-z_]*")
_SPEC = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")

# Roles a root delegates. The manifest and timestamp roles normally share the online key;
# receipts are signed by the query server; the root role only signs roots.
ROLE_ROOT = "root"
ROLE_MANIFEST = "manifest"
ROLE_TIMESTAMP = "timestamp"
ROLE_RECEIPT = "receipt"
REQUIRED_ROLES = (ROLE_ROOT, ROLE_MANIFEST, ROLE_TIMESTAMP, ROLE_RECEIPT)


# --------------------------------------------------------------------------- canonical JSON


def canonical_json(obj: Any) -> bytes:
    """Canonical bytes: sorted keys, no whitespace, UTF-8 (not \\u-escaped), no floats."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _no_floats(text: str) -> Any:
    raise FormatError(f"number {text!r} is not an integer; metadata carries integers only")


def _no_constants(text: str) -> Any:
    raise FormatError(f"{text} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_canonical(data: bytes, what: str) -> Any:
    """Parse canonical JSON; raise :class:`FormatError` unless ``data`` is exactly canonical."""
    if len(data) > MAX_METADATA_BYTES:
        raise FormatError(f"{what}: {len(data)} bytes is larger than {MAX_METADATA_BYTES}")
    try:
        obj = json.loads(
            data.decode("utf-8"),
            parse_float=_no_floats,
            parse_constant=_no_constants,
            object_pairs_hook=_unique_keys,
        )
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{what}: not JSON ({exc})") from None
    except RecursionError:  # json.loads recurses per nesting level; metadata is 4 levels deep
        raise FormatError(f"{what}: JSON nested too deeply") from None
    try:
        canonical = canonical_json(obj)
    except UnicodeEncodeError:  # a "\ud800" escape: a lone surrogate has no UTF-8 form
        raise FormatError(f"{what}: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    if canonical != data:
        raise FormatError(
            f"{what}: not in canonical form (sorted keys, no whitespace, UTF-8, no escapes); "
            "the file was altered or written by another tool"
        )
    return obj


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- field readers


class _Fields:
    """Strict reader of one JSON object: every key must be consumed, each with its type."""

    def __init__(self, obj: Any, what: str) -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{what}: expected an object, got {type(obj).__name__}")
        self._obj: dict[str, Any] = obj
        self._what = what
        self._seen: set[str] = set()

    def _take(self, key: str) -> Any:
        if key not in self._obj:
            raise FormatError(f"{self._what}: missing field {key!r}")
        self._seen.add(key)
        return self._obj[key]

    def string(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self._take(key)
        if not isinstance(value, str):
            raise FormatError(f"{self._what}: {key!r} must be a string")
        if pattern is not None and not pattern.fullmatch(value):
            raise FormatError(f"{self._what}: {key!r} = {value!r} is malformed")
        return value

    def optional_string(self, key: str, pattern: re.Pattern[str] | None = None) -> str | None:
        if self._obj.get(key, "") is None:
            self._seen.add(key)
            return None
        return self.string(key, pattern)

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self._take(key)
        # bool is an int in Python but not in JSON
        if not isinstance(value, int) or isinstance(value, bool):
            raise FormatError(f"{self._what}: {key!r} must be an integer")
        if value < minimum:
            raise FormatError(f"{self._what}: {key!r} = {value} is below {minimum}")
        return value

    def date(self, key: str) -> dt.date:
        text = self.string(key, _DATE)
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise FormatError(f"{self._what}: {key!r} = {text!r} is not a date") from None

    def time(self, key: str) -> dt.datetime:
        text = self.string(key, _TIME)
        try:
            return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise FormatError(f"{self._what}: {key!r} = {text!r} is not a UTC time") from None

    def optional_integer(self, key: str, minimum: int = 0) -> int | None:
        if key in self._obj and self._obj[key] is None:
            self._seen.add(key)
            return None
        return self.integer(key, minimum)

    def optional_obj(self, key: str) -> Any:
        if key in self._obj and self._obj[key] is None:
            self._seen.add(key)
            return None
        return self.obj(key)

    def obj(self, key: str) -> Any:
        value = self._take(key)
        if not isinstance(value, dict):
            raise FormatError(f"{self._what}: {key!r} must be an object")
        return value

    def array(self, key: str) -> list[Any]:
        value = self._take(key)
        if not isinstance(value, list):
            raise FormatError(f"{self._what}: {key!r} must be an array")
        return value

    def const(self, key: str, expected: str) -> None:
        value = self.string(key)
        if value != expected:
            raise FormatError(f"{self._what}: {key!r} is {value!r}, expected {expected!r}")

    def spec_version(self) -> str:
        """``spec_version``: any version with our major number; another major is refused."""
        text = self.string("spec_version", _SPEC)
        major = int(text.split(".", 1)[0])
        if major != SPEC_MAJOR:
            raise FormatError(
                f"{self._what}: spec_version {text} is a major version this client does not read "
                f"(it reads {SPEC_MAJOR}.x); upgrade number-recycling before pulling this feed"
            )
        return text

    def done(self) -> None:
        """Refuse any field not taken (the envelope: a field there would not be signed)."""
        unknown = sorted(set(self._obj) - self._seen)
        if unknown:
            raise FormatError(f"{self._what}: unknown field(s) {', '.join(unknown)}")

    def unrecognized(self) -> dict[str, Any]:
        """The fields not taken, kept for re-serialisation; call it after every other read."""
        return {k: v for k, v in self._obj.items() if k not in self._seen}


def _with_unrecognized(known: dict[str, Any], unrecognized: Mapping[str, Any]) -> dict[str, Any]:
    """``known`` plus the fields a later version added, so the document re-serialises exactly."""
    clash = sorted(known.keys() & unrecognized.keys())
    if clash:
        raise ValueError(f"unrecognized_fields repeat known field(s) {', '.join(clash)}")
    return known | dict(unrecognized)


def _unrecognized() -> Any:
    """The ``unrecognized_fields`` of a wire type: empty when built here, out of hash and repr."""
    return field(default_factory=dict, hash=False)


def format_time(value: dt.datetime) -> str:
    if value.tzinfo is None or value.utcoffset() != dt.timedelta(0) or value.microsecond:
        raise ValueError(f"metadata times are whole seconds in UTC, got {value!r}")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC at the start of ``day``: metadata times derive from the logical date."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# --------------------------------------------------------------------------- keys and roles


def keyid_of(public_key: bytes) -> str:
    """The keyid of a raw 32-byte Ed25519 public key: hex SHA-256 of those bytes."""
    return sha256_hex(public_key)


@dataclass(frozen=True)
class Key:
    """One Ed25519 public key, as listed in a root."""

    public: bytes  # raw 32 bytes
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def __post_init__(self) -> None:
        if len(self.public) != 32:
            raise FormatError(f"an Ed25519 public key is 32 bytes, got {len(self.public)}")

    @property
    def keyid(self) -> str:
        return keyid_of(self.public)

    def to_dict(self) -> dict[str, Any]:
        known = {"keytype": "ed25519", "public": self.public.hex(), "scheme": "ed25519"}
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> Key:
        f = _Fields(obj, what)
        f.const("keytype", "ed25519")
        f.const("scheme", "ed25519")
        public = bytes.fromhex(f.string("public", _HEX64))
        return cls(public, f.unrecognized())

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Role:
    keyids: tuple[str, ...]
    threshold: int
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def to_dict(self) -> dict[str, Any]:
        known = {"keyids": list(self.keyids), "threshold": self.threshold}
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> Role:
        f = _Fields(obj, what)
        raw = f.array("keyids")
        threshold = f.integer("threshold", minimum=1)
        unrecognized = f.unrecognized()
        if not all(isinstance(k, str) and _HEX64.fullmatch(k) for k in raw):
            raise FormatError(f"{what}: keyids must be 64 lowercase hex digits")
        keyids = tuple(raw)
        if list(keyids) != sorted(set(keyids)):
            raise FormatError(f"{what}: keyids must be sorted and unique")
        if threshold > len(keyids):
            raise FormatError(f"{what}: threshold {threshold} exceeds its {len(keyids)} key(s)")
        return cls(keyids, threshold, unrecognized)


# --------------------------------------------------------------------------- signed documents


class Signed(Protocol):
    TYPE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=Signed)


@dataclass(frozen=True)
class LedgerPointer:
    """Where the transparency ledger is and which key signs its checkpoints (C2SP note verifier)."""

    origin: str
    verifier_key: str  # "<name>+<hex keyhash>+<base64(0x01 || pubkey)>"
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def to_dict(self) -> dict[str, Any]:
        known = {"origin": self.origin, "verifier_key": self.verifier_key}
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> LedgerPointer:
        f = _Fields(obj, what)
        return cls(f.string("origin"), f.string("verifier_key"), f.unrecognized())


@dataclass(frozen=True)
class Root:
    """Keys and roles; version N+1 must be signed by the root keys of version N and of itself."""

    TYPE: ClassVar[str] = "root"
    version: int
    expires: dt.datetime
    keys: Mapping[str, Key]
    roles: Mapping[str, Role]
    ledger: LedgerPointer | None = None
    spec_version: str = SPEC_VERSION
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def __post_init__(self) -> None:
        if self.version < 1:
            raise FormatError(f"root version must be >= 1, got {self.version}")
        for keyid, key in self.keys.items():
            if key.keyid != keyid:
                raise FormatError(f"root lists key {keyid[:16]}… under the wrong keyid")
        missing = [r for r in REQUIRED_ROLES if r not in self.roles]
        if missing:
            raise FormatError(f"root v{self.version} lacks role(s) {', '.join(missing)}")
        for name, role in self.roles.items():
            unknown = [k for k in role.keyids if k not in self.keys]
            if unknown:
                raise FormatError(f"root role {name!r} names key(s) the root does not list")

    def to_dict(self) -> dict[str, Any]:
        known = {
            "_type": self.TYPE,
            "expires": format_time(self.expires),
            "keys": {k: v.to_dict() for k, v in sorted(self.keys.items())},
            "ledger": None if self.ledger is None else self.ledger.to_dict(),
            "roles": {k: v.to_dict() for k, v in sorted(self.roles.items())},
            "spec_version": self.spec_version,
            "version": self.version,
        }
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str = "root") -> Root:
        f = _Fields(obj, what)
        f.const("_type", cls.TYPE)
        spec_version = f.spec_version()
        version = f.integer("version", minimum=1)
        expires = f.time("expires")
        keys = {k: Key.from_dict(v, f"{what} key {k[:16]}") for k, v in f.obj("keys").items()}
        roles: dict[str, Role] = {}
        for name, role in f.obj("roles").items():
            if not _ROLE.fullmatch(name):
                raise FormatError(f"{what}: bad role name {name!r}")
            roles[name] = Role.from_dict(role, f"{what} role {name}")
        ledger_obj = f.optional_obj("ledger")
        ledger = None if ledger_obj is None else LedgerPointer.from_dict(ledger_obj, f"{what} ledger")
        return cls(version, expires, keys, roles, ledger, spec_version, f.unrecognized())

    def ledger_vkey(self) -> str | None:
        return None if self.ledger is None else self.ledger.verifier_key

    def role_keys(self, role: str) -> tuple[Role, dict[str, Key]]:
        spec = self.roles.get(role)
        if spec is None:
            raise SignatureError(f"root v{self.version} has no role {role!r}")
        return spec, {k: self.keys[k] for k in spec.keyids}


@dataclass(frozen=True)
class FileMeta:
    """One published file: path under the feeds directory, length, SHA-256 and row count."""

    path: str
    length: int
    sha256: str
    rows: int
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def to_dict(self) -> dict[str, Any]:
        known = {"length": self.length, "path": self.path, "rows": self.rows, "sha256": self.sha256}
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> FileMeta:
        f = _Fields(obj, what)
        out = cls(
            f.string("path", _PATH),
            f.integer("length"),
            f.string("sha256", _HEX64),
            f.integer("rows"),
            f.unrecognized(),
        )
        if ".." in out.path.split("/"):
            raise FormatError(f"{what}: path {out.path!r} leaves the feed directory")
        return out


@dataclass(frozen=True)
class LedgerRef:
    """The ledger entry (type feed_manifest) that commits to a manifest's core, and a checkpoint
    that includes it. ``opening`` lets anyone recompute the entry's commitment: a manifest is
    public, so its commitment hides nothing."""

    index: int
    checkpoint: str  # the C2SP signed note text, newline-terminated
    opening: str  # hex, 32 bytes
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def to_dict(self) -> dict[str, Any]:
        known = {"checkpoint": self.checkpoint, "index": self.index, "opening": self.opening}
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> LedgerRef:
        f = _Fields(obj, what)
        return cls(f.integer("index"), f.string("checkpoint"), f.string("opening", _HEX64), f.unrecognized())


@dataclass(frozen=True)
class Manifest:
    """One feed day. ``core`` (everything but ``ledger``) is what the ledger entry commits to."""

    TYPE: ClassVar[str] = "manifest"
    feed_date: dt.date
    seq: int  # contiguous, one per day, from 1
    expires: dt.datetime
    prev_manifest_sha256: str | None  # SHA-256 of the previous manifest file; None for seq 1
    row_seq_start: int  # seq of this day's first row (rows are numbered globally from 1)
    row_count: int
    files: tuple[FileMeta, ...]  # the day's files (recycled.parquet, recycled.csv)
    snapshot: tuple[FileMeta, ...]  # the rolling 400-day snapshot as of this day
    ledger: LedgerRef | None = None
    spec_version: str = SPEC_VERSION
    # A later version's fields are part of the core: the ledger commits to everything but ``ledger``.
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def __post_init__(self) -> None:
        if self.seq < 1 or self.row_seq_start < 1:
            raise FormatError("manifest seq and row_seq_start start at 1")
        if (self.seq == 1) != (self.prev_manifest_sha256 is None):
            raise FormatError(f"manifest seq {self.seq}: prev_manifest_sha256 must be null exactly for seq 1")

    def core_dict(self) -> dict[str, Any]:
        known = {
            "_type": self.TYPE,
            "expires": format_time(self.expires),
            "feed_date": self.feed_date.isoformat(),
            "files": [m.to_dict() for m in self.files],
            "prev_manifest_sha256": self.prev_manifest_sha256,
            "row_count": self.row_count,
            "row_seq_start": self.row_seq_start,
            "seq": self.seq,
            "snapshot": [m.to_dict() for m in self.snapshot],
            "spec_version": self.spec_version,
        }
        return _with_unrecognized(known, self.unrecognized_fields)

    def core_bytes(self) -> bytes:
        return canonical_json(self.core_dict())

    def core_sha256(self) -> str:
        """The value the ledger's feed_manifest entry commits to."""
        return sha256_hex(self.core_bytes())

    def to_dict(self) -> dict[str, Any]:
        return self.core_dict() | {"ledger": None if self.ledger is None else self.ledger.to_dict()}

    def file(self, path: str) -> FileMeta:
        for meta in (*self.files, *self.snapshot):
            if meta.path == path:
                return meta
        raise KeyError(path)

    @classmethod
    def from_dict(cls, obj: Any, what: str = "manifest") -> Manifest:
        f = _Fields(obj, what)
        f.const("_type", cls.TYPE)
        spec_version = f.spec_version()
        files = tuple(FileMeta.from_dict(m, f"{what} file") for m in f.array("files"))
        snapshot = tuple(FileMeta.from_dict(m, f"{what} snapshot file") for m in f.array("snapshot"))
        ledger_obj = f.optional_obj("ledger")
        ledger = None if ledger_obj is None else LedgerRef.from_dict(ledger_obj, f"{what} ledger")
        return cls(
            feed_date=f.date("feed_date"),
            seq=f.integer("seq", minimum=1),
            expires=f.time("expires"),
            prev_manifest_sha256=f.optional_string("prev_manifest_sha256", _HEX64),
            row_seq_start=f.integer("row_seq_start", minimum=1),
            row_count=f.integer("row_count"),
            files=files,
            snapshot=snapshot,
            ledger=ledger,
            spec_version=spec_version,
            unrecognized_fields=f.unrecognized(),  # arguments run in order: after every other read
        )


@dataclass(frozen=True)
class ManifestPin:
    seq: int
    path: str
    length: int
    sha256: str
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def to_dict(self) -> dict[str, Any]:
        known = {"length": self.length, "path": self.path, "seq": self.seq, "sha256": self.sha256}
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> ManifestPin:
        f = _Fields(obj, what)
        return cls(
            f.integer("seq", minimum=1),
            f.string("path", _PATH),
            f.integer("length"),
            f.string("sha256", _HEX64),
            f.unrecognized(),
        )


@dataclass(frozen=True)
class Timestamp:
    """Short-lived pin of the newest manifest: a client that cannot get a fresh one stops."""

    TYPE: ClassVar[str] = "timestamp"
    version: int  # equals the pinned manifest's seq: it never goes down
    expires: dt.datetime
    manifest: ManifestPin
    spec_version: str = SPEC_VERSION
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def to_dict(self) -> dict[str, Any]:
        known = {
            "_type": self.TYPE,
            "expires": format_time(self.expires),
            "manifest": self.manifest.to_dict(),
            "spec_version": self.spec_version,
            "version": self.version,
        }
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str = "timestamp") -> Timestamp:
        f = _Fields(obj, what)
        f.const("_type", cls.TYPE)
        spec_version = f.spec_version()  # first: another major may not parse below
        return cls(
            f.integer("version", minimum=1),
            f.time("expires"),
            ManifestPin.from_dict(f.obj("manifest"), f"{what} manifest"),
            spec_version,
            f.unrecognized(),
        )


@dataclass(frozen=True)
class QueryReceipt:
    """What the server answered, from which data: signed so a platform can prove it asked."""

    TYPE: ClassVar[str] = "query_receipt"
    platform: str
    answered_at: dt.datetime
    request_sha256: str  # SHA-256 of the canonical request lines, see pipelines.server.app
    response_sha256: str
    pairs: int
    snapshot_date: dt.date
    feed_seq: int | None
    checkpoint: str | None  # the ledger checkpoint (signed note text) the snapshot names
    spec_version: str = SPEC_VERSION
    unrecognized_fields: Mapping[str, Any] = _unrecognized()

    def to_dict(self) -> dict[str, Any]:
        known = {
            "_type": self.TYPE,
            "answered_at": format_time(self.answered_at),
            "checkpoint": self.checkpoint,
            "feed_seq": self.feed_seq,
            "pairs": self.pairs,
            "platform": self.platform,
            "request_sha256": self.request_sha256,
            "response_sha256": self.response_sha256,
            "snapshot_date": self.snapshot_date.isoformat(),
            "spec_version": self.spec_version,
        }
        return _with_unrecognized(known, self.unrecognized_fields)

    @classmethod
    def from_dict(cls, obj: Any, what: str = "query receipt") -> QueryReceipt:
        f = _Fields(obj, what)
        f.const("_type", cls.TYPE)
        spec_version = f.spec_version()
        return cls(
            platform=f.string("platform"),
            answered_at=f.time("answered_at"),
            request_sha256=f.string("request_sha256", _HEX64),
            response_sha256=f.string("response_sha256", _HEX64),
            pairs=f.integer("pairs"),
            snapshot_date=f.date("snapshot_date"),
            feed_seq=f.optional_integer("feed_seq", minimum=1),
            checkpoint=f.optional_string("checkpoint"),
            spec_version=spec_version,
            unrecognized_fields=f.unrecognized(),
        )


_TYPES: dict[str, Callable[[Any, str], Any]] = {
    Root.TYPE: Root.from_dict,
    Manifest.TYPE: Manifest.from_dict,
    Timestamp.TYPE: Timestamp.from_dict,
    QueryReceipt.TYPE: QueryReceipt.from_dict,
}


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class SignatureEntry:
    keyid: str
    sig: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "sig": self.sig.hex()}

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> SignatureEntry:
        f = _Fields(obj, what)
        out = cls(f.string("keyid", _HEX64), bytes.fromhex(f.string("sig", _HEX128)))
        f.done()
        return out


@dataclass(frozen=True)
class Envelope(Generic[S]):
    signed: S
    signatures: tuple[SignatureEntry, ...] = field(default=())

    def signed_bytes(self) -> bytes:
        return canonical_json(self.signed.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "signatures": [s.to_dict() for s in self.signatures],
            "signed": self.signed.to_dict(),
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def create(cls, signed: S, keys: Iterable[Signer]) -> Envelope[S]:
        """Sign ``signed`` with every key (the ledger's :class:`Signer` seam: KMS in production)."""
        message = canonical_json(signed.to_dict())
        sigs = {keyid_of(k.public_key): k.sign(message) for k in keys}
        return cls(signed, tuple(SignatureEntry(k, sigs[k]) for k in sorted(sigs)))

    @staticmethod
    def from_bytes(data: bytes, kind: type[S], what: str | None = None) -> Envelope[S]:
        """Parse strictly; ``kind`` is the expected document type (Root, Manifest, …)."""
        what = what or kind.TYPE
        obj = parse_canonical(data, what)
        f = _Fields(obj, what)
        raw_sigs = f.array("signatures")
        signed_obj = f.obj("signed")
        f.done()
        sigs = tuple(SignatureEntry.from_dict(s, f"{what} signature") for s in raw_sigs)
        if [s.keyid for s in sigs] != sorted({s.keyid for s in sigs}):
            raise FormatError(f"{what}: signatures must be sorted by keyid, one per key")
        signed_type = signed_obj.get("_type")
        if signed_type != kind.TYPE:
            raise FormatError(f"{what}: is a {signed_type!r} document, expected {kind.TYPE!r}")
        signed = _TYPES[kind.TYPE](signed_obj, what)
        env: Envelope[S] = Envelope(signed, sigs)
        if env.to_bytes() != data:  # belt and braces: the typed model must round-trip exactly
            raise FormatError(f"{what}: does not re-serialise to the same bytes")
        return env

    def verify(self, keys: Mapping[str, Key], threshold: int, what: str) -> None:
        """Raise :class:`SignatureError` unless ``threshold`` distinct ``keys`` signed this."""
        message = self.signed_bytes()
        good = {s.keyid for s in self.signatures if s.keyid in keys and keys[s.keyid].verify(s.sig, message)}
        if len(good) < threshold:
            raise SignatureError(
                f"{what}: {len(good)} valid signature(s) from the trusted keys, {threshold} required; "
                "the file was altered or signed by an untrusted key - do not use it"
            )

    def verify_role(self, root: Root, role: str, what: str) -> None:
        spec, keys = root.role_keys(role)
        self.verify(keys, spec.threshold, f"{what} (role {role!r}, root v{root.version})")


def verify_root_update(trusted: Envelope[Root], new: Envelope[Root], data: bytes) -> None:
    """A new root must be version+1 and signed by the root-role thresholds of BOTH versions."""
    if new.signed.version != trusted.signed.version + 1:
        raise SignatureError(
            f"root v{new.signed.version} does not follow trusted root v{trusted.signed.version}"
        )
    new.verify_role(trusted.signed, ROLE_ROOT, f"root v{new.signed.version} by the old root keys")
    new.verify_role(new.signed, ROLE_ROOT, f"root v{new.signed.version} by its own root keys")


def file_meta(path: str, data: bytes, rows: int) -> FileMeta:
    return FileMeta(path=path, length=len(data), sha256=sha256_hex(data), rows=rows)


def pin(path: str, seq: int, data: bytes) -> ManifestPin:
    return ManifestPin(seq=seq, path=path, length=len(data), sha256=sha256_hex(data))


__all__: Sequence[str] = (
    "SPEC_MAJOR",
    "SPEC_VERSION",
    "Envelope",
    "FileMeta",
    "Key",
    "LedgerPointer",
    "LedgerRef",
    "Manifest",
    "ManifestPin",
    "QueryReceipt",
    "Role",
    "Root",
    "Timestamp",
    "canonical_json",
    "day_start",
    "keyid_of",
    "parse_canonical",
    "sha256_hex",
    "verify_root_update",
)


def feed_manifest_value(feed_date: dt.date, seq: int, core_sha256: str) -> CanonicalValue:
    """The canonical value a feed_manifest ledger entry commits to (``docs/feeds.md`` §1)."""
    return CanonicalValue.build(feed_date=feed_date, seq=seq, manifest_sha256=core_sha256)
