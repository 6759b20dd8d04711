"""The contacts vault: AES-256-GCM-SIV per value, one key per epoch, keys as 0600 files.

Why this shape (issue 12): DuckDB's own encryption needs an extension this environment cannot
load, and a DELETE or UPDATE in DuckDB leaves the old bytes in freed pages of the state file.
So a contact never reaches the state file in clear, and erasing it is deleting the key that
sealed it - a file outside the state, gone for good once unlinked.

Epochs (the key file names, under ``<data>/keys/contacts/``, 0700):

* ``live-<n>``: what enters the state (drop rows, tenures, reminder addresses) is sealed under
  the newest live generation. The retention step retires a generation every
  ``contact_retention_days``: live tenures' and pending reminders' values are resealed under a
  new one and the old key deleted, which also shreds what only it sealed (drop rows of earlier
  nights, the pre-release copies a reseal left in freed pages).
* ``released-<YYYY-MM-DD>``: when a tenure is released its contacts and reminder addresses are
  resealed under the key of that day; the retention step deletes it ``contact_retention_days``
  later.

A sealed value is ``0x01 || kind (1 = live, 2 = released) || u32be(generation or day ordinal)
|| AES-GCM-SIV(key, nonce 0, value, AAD = those 6 bytes)``. GCM-SIV (RFC 8452), not GCM with a
random nonce per value: a night run twice must leave byte-identical state (DESIGN), and
GCM-SIV is built for a repeated nonce - equal values under one key seal equally, which is all
it tells (an attacker with the file sees which rows share an e-mail, never the e-mail).
Measured by benchmarks/bench_contacts.py.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from pipelines.errors import ConfigError, VerificationError
from pipelines.layout import Layout, private_dir
from pipelines.numbers import mask_text

VERSION = 1
LIVE, RELEASED = 1, 2
HEADER_SIZE = 6
_NONCE = bytes(12)
_EPOCH = re.compile(r"(live)-(\d{1,9})|(released)-(\d{4}-\d{2}-\d{2})")
_DAY_ZERO = dt.date(1970, 1, 1)


def epoch_header(epoch: str) -> bytes:
    """The 6-byte header of values sealed under ``epoch`` (``live-3``, ``released-2026-03-01``)."""
    m = _EPOCH.fullmatch(epoch)
    if m is None:
        raise ConfigError(f"not a contacts key epoch: {epoch!r} (live-<n> or released-<YYYY-MM-DD>)")
    if m.group(1):
        return bytes((VERSION, LIVE)) + int(m.group(2)).to_bytes(4, "big")
    day = (dt.date.fromisoformat(m.group(4)) - _DAY_ZERO).days
    return bytes((VERSION, RELEASED)) + day.to_bytes(4, "big")


def epoch_name(header: bytes) -> str:
    """Inverse of :func:`epoch_header`."""
    if len(header) < HEADER_SIZE or header[0] != VERSION or header[1] not in (LIVE, RELEASED):
        raise VerificationError("a sealed contact has an unknown header; the state file is damaged")
    n = int.from_bytes(header[2:HEADER_SIZE], "big")
    return f"live-{n}" if header[1] == LIVE else f"released-{_DAY_ZERO + dt.timedelta(days=n)}"


def released_epoch(day: dt.date) -> str:
    return f"released-{day.isoformat()}"


class ContactVault:
    """The epoch keys of one data directory; loads a key once, creates one on first sealing."""

    def __init__(self, keys_dir: Path) -> None:
        self.dir = keys_dir / "contacts"
        self._keys: dict[str, AESGCMSIV | None] = {}

    @classmethod
    def for_state(cls, state_db: Path) -> ContactVault:
        """The vault of the data directory whose state file is ``state_db``."""
        return cls(Layout(state_db.parent).keys_dir)

    def key_path(self, epoch: str) -> Path:
        epoch_header(epoch)  # refuses a name that is not an epoch (no path tricks)
        return self.dir / f"{epoch}.key"

    def epochs(self) -> list[str]:
        """Every epoch with a key on disk, live generations in order, then release days."""
        found = (
            [p.stem for p in self.dir.glob("*.key") if _EPOCH.fullmatch(p.stem)] if self.dir.is_dir() else []
        )
        return sorted(found, key=lambda e: (e[0] != "l", epoch_header(e)))

    def live_epoch(self) -> str:
        """The newest live generation (``live-1`` on a fresh data directory)."""
        live = [e for e in self.epochs() if e.startswith("live-")]
        return live[-1] if live else "live-1"

    def _aead(self, epoch: str, *, create: bool) -> AESGCMSIV | None:
        if self._keys.get(epoch) is not None:
            return self._keys[epoch]
        path = self.key_path(epoch)
        if create and not path.exists():
            private_dir(self.dir, top=self.dir.parent)
            _create_key(path)
        self._keys[epoch] = _read_key(path) if path.exists() else None
        return self._keys[epoch]

    def seal(self, values: Iterable[str | None], epoch: str | None = None) -> pa.Array:
        """``values`` sealed under ``epoch`` (default: the live generation); None stays None."""
        epoch = epoch or self.live_epoch()
        header = epoch_header(epoch)
        aead = self._aead(epoch, create=True)
        assert aead is not None
        enc = aead.encrypt
        return pa.array(
            [None if v is None else header + enc(_NONCE, v.encode("utf-8"), header) for v in values],
            pa.binary(),
        )

    def open(self, sealed: Iterable[bytes | None]) -> pa.Array:
        """The values of ``sealed``; None for None and for a value whose key was erased."""
        out: list[str | None] = []
        # Each batch looks again whether a key file still exists (one stat per epoch per batch):
        # another vault - the retention step's - may have erased it since it was loaded here.
        seen: dict[bytes, AESGCMSIV | None] = {}
        for blob in sealed:
            if blob is None:
                out.append(None)
                continue
            header = blob[:HEADER_SIZE]
            if header not in seen:
                epoch = epoch_name(header)
                if not self.key_path(epoch).exists():
                    self._keys[epoch] = None
                seen[header] = self._aead(epoch, create=False)
            aead = seen[header]
            if aead is None:
                out.append(None)  # crypto-shredded: its key is gone
                continue
            try:
                out.append(aead.decrypt(_NONCE, blob[HEADER_SIZE:], header).decode("utf-8"))
            except InvalidTag as exc:
                raise VerificationError(
                    f"a sealed contact of epoch {epoch_name(header)} does not open: a wrong key in "
                    f"{self.dir} or a tampered state file; restore both from the same backup"
                ) from exc
        return pa.array(out, pa.string())

    def reseal(self, sealed: Iterable[bytes | None], epoch: str) -> pa.Array:
        """``sealed`` opened and sealed again under ``epoch``; a value whose key is gone (erased, or
        a state file copied without its keys) is kept as it is, never turned into NULL."""
        blobs = list(sealed)
        opened = self.open(blobs).to_pylist()
        moved = self.seal(opened, epoch).to_pylist()
        return pa.array(
            [m if o is not None else b for b, o, m in zip(blobs, opened, moved, strict=True)], pa.binary()
        )

    def erase(self, epoch: str) -> bool:
        """Crypto-shred ``epoch``: delete its key file (and fsync the directory). True if it existed."""
        path = self.key_path(epoch)
        self._keys[epoch] = None
        if not path.exists():
            return False
        path.unlink()
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True


def _create_key(path: Path) -> None:
    """A new random key at ``path``, unless another thread or process made it first.

    Written whole to a private temporary file, then linked into place: ``link`` is atomic and
    refuses an existing name, so a reader sees no key or a whole one. (Creating ``path`` itself
    with O_EXCL and writing after let DuckDB's other sealing threads read it empty: "must hold 32
    bytes", seen by benchmarks/bench_night.py on a fresh vault.)"""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_key(path: Path) -> AESGCMSIV:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"contacts key {path} is readable by other users; run `chmod 600 {path}`")
    try:
        key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"contacts key {path} is malformed; restore it from the key backup") from exc
    if len(key) != 32:
        raise ConfigError(f"contacts key {path} must hold 32 bytes (base64); restore it from the key backup")
    return AESGCMSIV(key)


def register_functions(con: duckdb.DuckDBPyConnection, vault: ContactVault) -> None:
    """Give ``con`` the SQL functions over sealed contacts (vectorised: one call per chunk).

    ``contact_seal(text)`` under the live generation, ``contact_open(blob)`` (NULL once erased),
    ``contact_reseal(blob, epoch)``, ``contact_epoch(blob)``, and ``contact_mask(text)``: free
    text with its e-mails and numbers masked (:func:`pipelines.numbers.mask_text`), for a
    message quoting a raw field.
    """

    def seal(values: pa.Array) -> pa.Array:
        return vault.seal(values.to_pylist())

    def open_(values: pa.Array) -> pa.Array:
        return vault.open(values.to_pylist())

    def reseal(values: pa.Array, epochs: pa.Array) -> pa.Array:
        names = set(epochs.to_pylist())
        if not names:
            return pa.array([], pa.binary())
        if len(names) != 1:  # one epoch per statement: the callers pass a constant
            raise ConfigError("contact_reseal takes one epoch per statement")
        return vault.reseal(values.to_pylist(), str(names.pop()))

    def mask(values: pa.Array) -> pa.Array:
        return pa.array([None if v is None else mask_text(v) for v in values.to_pylist()], pa.string())

    def epoch(values: pa.Array) -> pa.Array:
        return pa.array([None if v is None else epoch_name(v[:HEADER_SIZE]) for v in values.to_pylist()])

    # NULLs pass in and out ("special"): an erased value opens to NULL.
    functions: tuple[tuple[str, Callable[..., pa.Array], list[str], str], ...] = (
        ("contact_seal", seal, ["VARCHAR"], "BLOB"),
        ("contact_open", open_, ["BLOB"], "VARCHAR"),
        ("contact_reseal", reseal, ["BLOB", "VARCHAR"], "BLOB"),
        ("contact_epoch", epoch, ["BLOB"], "VARCHAR"),
        ("contact_mask", mask, ["VARCHAR"], "VARCHAR"),
    )
    for name, fn, args, out in functions:
        # ignore: duckdb's stub wants its own literal types in an invariant list
        con.create_function(  # type: ignore[call-overload]
            name, fn, args, out, type="arrow", null_handling="special", side_effects=False
        )
