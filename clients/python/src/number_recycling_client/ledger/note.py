"""C2SP signed notes (Ed25519), verifier/signer key strings and tlog checkpoints.

Parsing follows Go's ``golang.org/x/mod/sumdb/note.Open``: the text is everything up to the
last blank line, signatures from unknown keys are ignored, a bad signature from a known key
rejects the note, and at least one known signature must verify. Base64 is additionally
required to be canonical (re-encoding gives the same characters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from number_recycling_client.errors import FormatError, SignatureError

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # Go's note.Open refuses more, to bound the work per note
# A checkpoint note is three short lines and a few signatures (100 of them are ~14 KB): a file
# larger than this is not a note, and readers refuse it before reading it whole.
MAX_NOTE_BYTES = 1 << 16
# Tree sizes are non-negative int64, as in Go's tlog (strconv.ParseInt(.., 10, 64)): a larger
# size cannot be a real log, and an unbounded one would drive proof and tile loops.
MAX_TREE_SIZE = (1 << 63) - 1
_SIG_PREFIX = "— "  # em dash, space
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard padded base64 that must re-encode to exactly ``text``."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise FormatError(f"{what}: not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what}: base64 is not in canonical form")
    return raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces or ``+`` (C2SP signed-note)."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """``SHA-256(name || 0x0A || alg || public key)[:4]``."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:4]


def format_verifier_key(name: str, public_key: bytes) -> str:
    """``name+hex8(keyID)+base64(0x01 || pubkey)``, the form operators pin and publish."""
    if not is_valid_key_name(name) or len(public_key) != 32:
        raise FormatError(f"cannot make a verifier key for name {name!r} and a {len(public_key)}-byte key")
    return f"{name}+{key_id(name, public_key).hex()}+{b64(bytes([ALG_ED25519]) + public_key)}"


def format_signer_key(name: str, seed: bytes) -> str:
    """``PRIVATE+KEY+name+hex8(keyID)+base64(0x01 || seed)``: secret, keep it mode 0600."""
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return f"PRIVATE+KEY+{name}+{key_id(name, public).hex()}+{b64(bytes([ALG_ED25519]) + seed)}"


def parse_signer_key(skey: str) -> tuple[str, bytes]:
    """Parse a signer key string into (name, Ed25519 seed); the key ID must match the key."""
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise FormatError("signer key: expected PRIVATE+KEY+<name>+<hex8>+<base64>")
    _, _, name, hash16, key64 = parts
    if not is_valid_key_name(name) or not _HEX8.fullmatch(hash16):
        raise FormatError("signer key: malformed name or key ID")
    raw = b64decode_strict(key64, "signer key")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise FormatError("signer key: expected an Ed25519 key (0x01 and a 32-byte seed)")
    seed = raw[1:]
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    if key_id(name, public) != bytes.fromhex(hash16):
        raise FormatError(f"signer key for {name}: key ID {hash16} does not match the key")
    return name, seed


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 note key: name, 4-byte key ID, 32-byte public key."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``name+hex8+base64(0x01 || pubkey)`` strictly (Go ``note.NewVerifier``)."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise FormatError("verifier key: expected <name>+<hex8>+<base64>")
        name, hash16, key64 = parts
        if not is_valid_key_name(name) or not _HEX8.fullmatch(hash16):
            raise FormatError("verifier key: malformed name or key ID")
        raw = b64decode_strict(key64, "verifier key")
        if not raw:
            raise FormatError("verifier key: empty key")
        if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4] != bytes.fromhex(hash16):
            raise FormatError(f"verifier key for {name}: key ID {hash16} does not match the key")
        if raw[0] != ALG_ED25519:
            raise FormatError(f"verifier key for {name}: unknown algorithm {raw[0]:#04x}")
        if len(raw) != 33:
            raise FormatError(f"verifier key for {name}: Ed25519 keys are 32 bytes, got {len(raw) - 1}")
        return cls(name, bytes.fromhex(hash16), raw[1:])

    @property
    def vkey(self) -> str:
        return format_verifier_key(self.name, self.public_key)

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id.hex()}"

    def check(self, msg: bytes, signature: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is this key's over ``msg``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, msg)
        except (InvalidSignature, ValueError) as exc:
            raise SignatureError(f"invalid signature for key {self.label}") from exc


class NoteSigner(Protocol):
    """What signing a note needs: a name, its 4-byte key ID and a raw Ed25519 signature."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...


@runtime_checkable
class Signer(Protocol):
    """A note signing key: C2SP key name, 4-byte key ID, Ed25519 public key, raw signatures."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # without the 4-byte key ID

    @property
    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text (ending in a newline) and the signatures that verified."""

    text: bytes
    signatures: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...] = ()


def _signature_line(signer: NoteSigner, text: bytes) -> str:
    if not is_valid_key_name(signer.name) or len(signer.key_id) != 4:
        raise FormatError(f"invalid signer name {signer.name!r} or key ID")
    return NoteSignature(signer.name, signer.key_id, signer.sign(text)).line


def sign_note(text: bytes, signers: Sequence[NoteSigner]) -> bytes:
    """Signed note bytes: ``text``, a blank line, one signature line per signer."""
    _check_text(text)
    if not text.endswith(b"\n"):
        raise FormatError("malformed note: the text must end in a newline")
    if not signers:
        raise FormatError("a note needs at least one signer")
    return text + b"\n" + "".join(_signature_line(s, text) for s in signers).encode("utf-8")


def _check_text(msg: bytes) -> str:
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("malformed note: not valid UTF-8") from exc
    if any(ch < " " and ch != "\n" for ch in decoded):
        raise FormatError("malformed note: control characters other than newline")
    return decoded


def open_note(msg: bytes, verifiers: Sequence[Verifier]) -> Note:
    """Parse and verify a signed note (Go ``note.Open`` semantics); raise on any failure.

    :class:`FormatError` for a malformed note, :class:`SignatureError` for a bad signature from
    a known key or when no known key signed it.
    """
    if len(msg) > MAX_NOTE_BYTES:
        raise FormatError(f"malformed note: {len(msg)} bytes is larger than any note ({MAX_NOTE_BYTES})")
    _check_text(msg)
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise FormatError("malformed note: no blank line before the signatures")
    text, sigs = msg[: split + 1], msg[split + 2 :]
    if not sigs or not sigs.endswith(b"\n"):
        raise FormatError("malformed note: signatures missing or not newline-terminated")
    known: dict[tuple[str, bytes], list[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    seen_unverified: set[str] = set()
    lines = sigs.decode("utf-8").split("\n")[:-1]
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise FormatError("malformed note: a signature line must start with an em dash and a space")
        body = line[len(_SIG_PREFIX) :]
        name, _, sig64 = body.partition(" ")
        if not is_valid_key_name(name) or not sig64:
            raise FormatError("malformed note: bad signature line")
        raw = b64decode_strict(sig64, "note signature")
        if len(raw) < 5:
            raise FormatError("malformed note: signature too short")
        sig = NoteSignature(name, raw[:4], raw[4:])
        candidates = known.get((name, sig.key_id))
        if candidates is None:
            if body not in seen_unverified:
                seen_unverified.add(body)
                unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise SignatureError(f"ambiguous key {name}+{sig.key_id.hex()}: listed twice")
        if (name, sig.key_id) in seen:
            continue
        seen.add((name, sig.key_id))
        candidates[0].check(text, sig.signature)
        verified.append(sig)
    if not verified:
        wanted = ", ".join(v.label for v in verifiers) or "none given"
        raise SignatureError(f"note has no verifiable signatures (trusted keys: {wanted})")
    return Note(text, tuple(verified), tuple(unverified))


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint body: origin, tree size, root hash (no extension lines)."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or any(ch < " " for ch in self.origin):
            raise FormatError("checkpoint: the origin must be one non-empty line")
        if not 0 <= self.size <= MAX_TREE_SIZE or len(self.root) != 32:
            raise FormatError(f"checkpoint: size must be 0..{MAX_TREE_SIZE} and the root 32 bytes")

    def to_bytes(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{b64(self.root)}\n".encode()

    @classmethod
    def from_bytes(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint body strictly: three non-empty lines, canonical size and root."""
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError("checkpoint: not valid UTF-8") from exc
        lines = decoded.split("\n")
        if len(lines) != 4 or lines[3] != "":
            raise FormatError(
                "checkpoint: expected exactly origin, size and root lines (extension lines are not accepted)"
            )
        origin, size, root64 = lines[:3]
        if not _DECIMAL.fullmatch(size) or len(size) > len(str(MAX_TREE_SIZE)):
            raise FormatError(
                f"checkpoint: tree size {size[:24]!r} is not a decimal up to {MAX_TREE_SIZE} without leading zeros"
            )
        root = b64decode_strict(root64, "checkpoint root")
        if len(root) != 32:
            raise FormatError(f"checkpoint: root hash is {len(root)} bytes, expected 32")
        cp = cls(origin, int(size), root)
        if cp.to_bytes() != text:
            raise FormatError("checkpoint: not in canonical form")
        return cp


def open_checkpoint(data: bytes, vkey: str | Verifier, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note against ``vkey`` and parse its body.

    With ``origin`` given, the checkpoint must be for that log.
    """
    verifier = Verifier.from_vkey(vkey) if isinstance(vkey, str) else vkey
    note = open_note(data, [verifier])
    cp = Checkpoint.from_bytes(note.text)
    if origin is not None and cp.origin != origin:
        raise SignatureError(
            f"checkpoint is for log {cp.origin!r}, expected {origin!r}: it comes from another ledger"
        )
    return cp
