"""Checkpoint signing: the ``Signer`` seam and a file-backed Ed25519 development signer.

A log must never sign two checkpoints that are inconsistent with each other (that is a
fork, and witnesses and auditors treat it as proof of misbehaviour). So the signer, not the
log code, keeps the last checkpoint it signed for each origin beside its key and refuses a
new one unless a consistency proof from the old tree to the new one verifies. Production
swaps in a KMS/HSM implementation of :class:`CheckpointSigner` that keeps the same rule.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from number_recycling_client.ledger.merkle import verify_consistency
from number_recycling_client.ledger.note import (
    Checkpoint,
    Signer,
    Verifier,
    format_signer_key,
    format_verifier_key,
    is_valid_key_name,
    key_id,
    open_checkpoint,
    parse_signer_key,
    sign_note,
)

from pipelines.errors import ConfigError, FormatError, InconsistentCheckpointError
from pipelines.layout import atomic_write_bytes


class CheckpointSigner(Signer, Protocol):
    """A :class:`Signer` that guards checkpoints against forks and rollbacks."""

    def sign_checkpoint(self, checkpoint: Checkpoint, consistency_proof: Sequence[bytes]) -> bytes:
        """Return the signed checkpoint note, or raise :class:`InconsistentCheckpointError`.

        ``consistency_proof`` proves the tree of ``checkpoint`` extends the last one this key
        signed for the same origin (empty if there was none, or it was empty or the same).
        """
        ...

    def last_signed(self, origin: str) -> bytes | None:
        """The last checkpoint note signed for ``origin``, if any."""
        ...


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def verifier_key(signer: Signer) -> str:
    """The public verifier key string of ``signer`` (``name+hex8+base64``)."""
    return format_verifier_key(signer.name, signer.public_key)


@dataclass
class FileSigner:
    """Ed25519 key from a ``PRIVATE+KEY+...`` file; last signed checkpoints in a JSON file beside it."""

    key_path: Path
    state_path: Path
    _name: str = field(repr=False)
    _private: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_file(cls, key_path: Path) -> FileSigner:
        mode = key_path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"signer key {key_path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {key_path}`"
            )
        try:
            name, seed = parse_signer_key(key_path.read_text(encoding="ascii").strip())
        except (FormatError, UnicodeDecodeError) as exc:
            raise ConfigError(f"signer key {key_path} is malformed: {exc}") from exc
        state = key_path.with_name(key_path.name.removesuffix(".key") + ".checkpoints.json")
        return cls(key_path, state, name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes_raw()

    @property
    def key_id(self) -> bytes:
        return key_id(self._name, self.public_key)

    @property
    def vkey(self) -> str:
        return verifier_key(self)

    def sign(self, msg: bytes) -> bytes:
        """Raw Ed25519 signature; refuses checkpoint bodies, which must go through the guard."""
        try:
            Checkpoint.from_bytes(msg)
        except FormatError:
            return self._private.sign(msg)
        raise InconsistentCheckpointError(
            "refusing to sign a checkpoint through sign(); use sign_checkpoint() with a consistency proof"
        )

    @contextmanager
    def _locked_state(self) -> Iterator[dict[str, dict[str, str | int]]]:
        lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state: dict[str, dict[str, str | int]] = {}
            if self.state_path.exists():
                try:
                    state = json.loads(self.state_path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as exc:
                    raise ConfigError(
                        f"signer state {self.state_path} is corrupt; restore it from backup "
                        "(deleting it disables fork protection for this key)"
                    ) from exc
            yield state
        finally:
            os.close(fd)

    def last_signed(self, origin: str) -> bytes | None:
        with self._locked_state() as state:
            entry = state.get(origin)
        return str(entry["note"]).encode("utf-8") if entry else None

    def sign_checkpoint(self, checkpoint: Checkpoint, consistency_proof: Sequence[bytes]) -> bytes:
        """Sign ``checkpoint`` if it extends the last one signed for its origin (see the Protocol)."""
        with self._locked_state() as state:
            last = state.get(checkpoint.origin)
            if last is not None:
                old = open_checkpoint(
                    str(last["note"]).encode("utf-8"),
                    Verifier(self.name, self.key_id, self.public_key),
                    checkpoint.origin,
                )
                if checkpoint.size < old.size:
                    raise InconsistentCheckpointError(
                        f"refusing to sign size {checkpoint.size} for {checkpoint.origin}: this key "
                        f"already signed size {old.size} (a rollback). Restore the ledger directory "
                        "to the last published checkpoint instead"
                    )
                try:
                    verify_consistency(
                        old.size, checkpoint.size, consistency_proof, old.root, checkpoint.root
                    )
                except InconsistentCheckpointError as exc:
                    raise InconsistentCheckpointError(
                        f"refusing to sign size {checkpoint.size} for {checkpoint.origin}: it is not "
                        f"consistent with the signed size {old.size} ({exc}). The ledger on disk "
                        "diverged from what was published; restore it, do not re-sign"
                    ) from exc
            note = sign_note(checkpoint.to_bytes(), [_RawSigner(self)])
            state[checkpoint.origin] = {
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode("ascii"),
                "note": note.decode("utf-8"),
            }
            # Durable before the signature leaves this method: a crash must not forget it.
            atomic_write_bytes(self.state_path, json.dumps(state, indent=2, sort_keys=True).encode())
        return note


@dataclass(frozen=True)
class _RawSigner:
    signer: FileSigner

    @property
    def name(self) -> str:
        return self.signer.name

    @property
    def key_id(self) -> bytes:
        return self.signer.key_id

    def sign(self, msg: bytes) -> bytes:
        return self.signer._private.sign(msg)


def load_or_create_signer(keys_dir: Path, name: str) -> FileSigner:
    """The development signer for ``name`` under ``keys_dir``, generated on first use.

    Files: ``<name>.key`` (``PRIVATE+KEY+...``, mode 0600), ``<name>.vkey`` (public) and
    ``<name>.checkpoints.json`` (last signed checkpoint per origin). ``name`` is sanitised
    for the file name (``/`` becomes ``_``).
    """
    if not is_valid_key_name(name):
        raise ConfigError(f"ledger key name {name!r} must be non-empty without spaces or '+'")
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = keys_dir / f"{_safe_file_name(name)}.key"
    if not key_path.exists():
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; use theirs
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(format_signer_key(name, seed) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    signer = FileSigner.from_file(key_path)
    if signer.name != name:
        raise ConfigError(f"signer key {key_path} is for {signer.name!r}, expected {name!r}")
    vkey_path = keys_dir / f"{_safe_file_name(name)}.vkey"
    vkey = (signer.vkey + "\n").encode()
    if not vkey_path.exists() or vkey_path.read_bytes() != vkey:
        atomic_write_bytes(vkey_path, vkey)
    return signer
