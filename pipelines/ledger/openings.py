"""The private openings store: what it takes to open each ledger entry, encrypted at rest.

Two DuckDB files in the store directory (which must NOT be under the public ledger directory):

``openings.duckdb`` - one row per log index:

* ``key_tag`` = HMAC-SHA256(tag key, idempotency key): lets reruns skip facts already logged
  without storing the (possibly personal) key itself;
* ``entry_type`` and ``tenure_ref``: public anyway, kept for lookups;
* ``sealed`` = AES-256-GCM(data key, nonce 0, opening || canonical value, AAD = index || type ||
  tenure_ref) under a fresh 256-bit data key per entry (one message per key, so the fixed
  nonce is safe); ``erased`` marks entries shredded on purpose.

``openings-keys.duckdb`` - the per-entry data keys, AES-key-wrapped (RFC 3394) under the store's
wrap key. Keeping them apart is the point of crypto-shredding: the ciphertexts may be copied and
backed up like any data, and erasing an entry only has to destroy one small row here.

:meth:`OpeningsStore.erase` deletes the entry's data key, sets ``sealed`` to NULL and
``erased``, then rewrites the keys file (:meth:`OpeningsStore.compact`) so no freed page keeps
the old key bytes. What remains: the public entry in the log (type, tenure_ref, and a hiding
commitment that is useless without the opening) and, in ``openings.duckdb``, the index, key
tag, type and tenure_ref (plus, in old backups or freed pages of that file, ciphertext that no
remaining key opens). Out of reach: backups of the *keys* file - keep them short-lived, or keep
the data keys in a KMS - and evidence bundles already handed out.

The master key (``openings.key`` in the keys directory, mode 0600) never leaves that file;
the tag and wrap keys are derived from it with HMAC-SHA256 and distinct labels.
"""

from __future__ import annotations

import base64
import hmac
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from number_recycling_client.ledger.entries import OPENING_SIZE, CanonicalValue, EntryType

from pipelines.db import sql_str
from pipelines.errors import ConfigError, OpeningErasedError, TerminalError, VerificationError
from pipelines.layout import private_dir, private_umask

MASTER_KEY_FILE = "openings.key"
DB_FILE = "openings.duckdb"
KEYS_DB_FILE = "openings-keys.duckdb"
_NONCE = bytes(12)
_TAG_LABEL = b"number-recycling/openings/idempotency-tag/v1"
_WRAP_LABEL = b"number-recycling/openings/key-wrap/v1"

_DDL = """
CREATE TABLE IF NOT EXISTS openings (
    idx UBIGINT PRIMARY KEY,
    key_tag BLOB NOT NULL,
    entry_type UTINYINT NOT NULL,
    tenure_ref BLOB NOT NULL,
    sealed BLOB,                       -- NULL once erased
    erased BOOLEAN NOT NULL
)
"""
_KEYS_DDL = """
CREATE TABLE IF NOT EXISTS dk.data_keys (
    idx UBIGINT PRIMARY KEY,
    wrapped_key BLOB NOT NULL          -- the row is deleted on erasure
)
"""
_SCHEMA = pa.schema(
    [
        ("idx", pa.uint64()),
        ("key_tag", pa.binary()),
        ("entry_type", pa.uint8()),
        ("tenure_ref", pa.binary()),
        ("sealed", pa.binary()),
        ("erased", pa.bool_()),
    ]
)
_KEYS_SCHEMA = pa.schema([("idx", pa.uint64()), ("wrapped_key", pa.binary())])


@dataclass(frozen=True, repr=False)
class Opening:
    """A decrypted opening: enough to recompute and check entry ``index``'s commitment."""

    index: int
    entry_type: EntryType
    tenure_ref: bytes
    opening: bytes
    value: CanonicalValue

    def __repr__(self) -> str:
        return f"Opening(index={self.index}, type={self.entry_type.label}, value={self.value!r})"


@dataclass(frozen=True, repr=False)
class NewOpening:
    """A row to store: the ledger builds these while appending (``key_tag`` from :meth:`OpeningsStore.key_tag`)."""

    index: int
    key_tag: bytes
    entry_type: EntryType
    tenure_ref: bytes
    opening: bytes
    value: bytes


def _load_or_create_master_key(keys_dir: Path) -> bytes:
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys_dir / MASTER_KEY_FILE
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"openings key {path} is readable by other users; run `chmod 600 {path}`")
    try:
        key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"openings key {path} is malformed; restore it from the key backup") from exc
    if len(key) != 32:
        raise ConfigError(f"openings key {path} must hold 32 bytes (base64); restore it from backup")
    return key


def _aad(index: int, entry_type: int, tenure_ref: bytes) -> bytes:
    return index.to_bytes(8, "big") + bytes((entry_type,)) + tenure_ref


class OpeningsStore:
    """Encrypted openings keyed by log index and idempotency key; one writer at a time."""

    def __init__(self, store_dir: Path, master_key: bytes, *, memory_limit: str | None = None) -> None:
        self._dir = store_dir
        self._tag_key = hmac.digest(master_key, _TAG_LABEL, "sha256")
        self._wrap_key = hmac.digest(master_key, _WRAP_LABEL, "sha256")
        self._memory_limit = memory_limit
        self._con = self._connect()

    @classmethod
    def open(cls, store_dir: Path, keys_dir: Path, *, memory_limit: str | None = None) -> OpeningsStore:
        """Open (creating on first use) the store in ``store_dir`` with the key in ``keys_dir``;
        ``memory_limit`` (DuckDB syntax) bounds its DuckDB (default: DuckDB's, 80% of RAM).

        The integrator passes ``<data>/private/openings`` and ``Layout.keys_dir``.
        """
        # <data>/private and the store inside it are 0700 (pipelines.layout.private_dir): whatever
        # mode DuckDB gives its files and WAL, nobody else can reach them.
        private_dir(store_dir, top=store_dir.parent)
        return cls(store_dir, _load_or_create_master_key(keys_dir), memory_limit=memory_limit)

    @property
    def path(self) -> Path:
        return self._dir / DB_FILE

    @property
    def keys_path(self) -> Path:
        return self._dir / KEYS_DB_FILE

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            with private_umask():  # new store files 0600, like every personal-data file
                con = duckdb.connect(str(self.path))
                if self._memory_limit:
                    con.execute(f"SET memory_limit = {sql_str(self._memory_limit)}")
                con.execute(f"ATTACH {sql_str(self.keys_path)} AS dk")
        except duckdb.IOException as exc:
            raise TerminalError(
                f"cannot open the openings store {self.path}: {exc}. Another process (a second "
                "ledger writer) may hold it; let it finish"
            ) from exc
        con.execute(_DDL)
        con.execute(_KEYS_DDL)
        return con

    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        # fetchall, not fetchone: DuckDB refuses new work on a connection with a half-read result.
        rows = self._con.execute(sql, list(params)).fetchall()
        return tuple(rows[0]) if rows else None

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> OpeningsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def key_tag(self, key: str) -> bytes:
        return hmac.digest(self._tag_key, key.encode("utf-8"), "sha256")

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """``{key: (index, tenure_ref)}`` for the keys already stored (one set-based query)."""
        tags = [self.key_tag(k) for k in keys]
        found = self.lookup_tags(tags)
        return {k: found[t] for k, t in zip(keys, tags, strict=True) if t in found}

    def lookup_tags(self, tags: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        """Like :meth:`lookup`, for key tags the caller already computed."""
        if not tags:
            return {}
        wanted = pa.table({"tag": pa.array(tags, pa.binary())})
        self._con.register("wanted_tags", wanted)
        try:
            rows = self._con.execute(
                "SELECT o.key_tag, o.idx, o.tenure_ref FROM openings o "
                "JOIN wanted_tags w ON o.key_tag = w.tag"
            ).fetchall()
        finally:
            self._con.unregister("wanted_tags")
        return {bytes(tag): (int(idx), bytes(ref)) for tag, idx, ref in rows}

    def index_of(self, key: str) -> int | None:
        """Log index of the entry appended under idempotency ``key``, if any."""
        row = self._one("SELECT idx FROM openings WHERE key_tag = ?", [self.key_tag(key)])
        return None if row is None else int(row[0])

    def put(self, rows: Sequence[NewOpening]) -> None:
        """Encrypt and insert ``rows`` (per-entry data keys): keys file first, then the openings.

        A crash in between leaves data keys without openings beyond the log's checkpoint; the
        ledger's :meth:`truncate` on the next open removes them.
        """
        if not rows:
            return
        data_keys = os.urandom(32 * len(rows))
        wrap_key = self._wrap_key
        wrapped: list[bytes] = []
        sealed: list[bytes] = []
        for i, row in enumerate(rows):
            if len(row.opening) != OPENING_SIZE:
                raise TerminalError(f"opening of entry {row.index} must be {OPENING_SIZE} bytes")
            dek = data_keys[32 * i : 32 * i + 32]
            wrapped.append(aes_key_wrap(wrap_key, dek))
            aad = _aad(row.index, int(row.entry_type), row.tenure_ref)
            sealed.append(AESGCM(dek).encrypt(_NONCE, row.opening + row.value, aad))
        indices = pa.array([r.index for r in rows], pa.uint64())
        table = pa.Table.from_arrays(
            [
                indices,
                pa.array([r.key_tag for r in rows], pa.binary()),
                pa.array([int(r.entry_type) for r in rows], pa.uint8()),
                pa.array([r.tenure_ref for r in rows], pa.binary()),
                pa.array(sealed, pa.binary()),
                pa.array([False] * len(rows), pa.bool_()),
            ],
            schema=_SCHEMA,
        )
        keys = pa.Table.from_arrays([indices, pa.array(wrapped, pa.binary())], schema=_KEYS_SCHEMA)
        self._con.register("new_openings", table)
        self._con.register("new_keys", keys)
        try:
            # Two equi-joins, not one OR-join: DuckDB hash-joins each, an OR would nest-loop.
            clash = self._one(
                "SELECT (SELECT count(*) FROM openings o JOIN new_openings n "
                "ON o.key_tag = n.key_tag) + (SELECT count(*) FROM openings o "
                "JOIN new_openings n ON o.idx = n.idx)"
            )
            if clash and clash[0]:
                raise TerminalError(
                    f"{clash[0]} opening(s) collide with stored ones (same index or idempotency "
                    "key); the ledger and its openings store are out of step - reopen the ledger"
                )
            # One database per DuckDB transaction: keys, then openings (see the docstring).
            self._con.execute("DELETE FROM dk.data_keys WHERE idx IN (SELECT idx FROM new_keys)")
            self._con.execute("INSERT INTO dk.data_keys SELECT * FROM new_keys")
            self._con.execute("INSERT INTO openings SELECT * FROM new_openings")
        finally:
            self._con.unregister("new_openings")
            self._con.unregister("new_keys")

    def get(self, index: int) -> Opening:
        """Decrypt the opening of entry ``index``; :class:`OpeningErasedError` if it was erased."""
        row = self._one(
            "SELECT o.entry_type, o.tenure_ref, o.sealed, o.erased, k.wrapped_key FROM openings o "
            "LEFT JOIN dk.data_keys k ON k.idx = o.idx WHERE o.idx = ?",
            [index],
        )
        if row is None:
            raise TerminalError(f"no opening stored for ledger entry {index}")
        entry_type, tenure_ref, sealed_blob, erased, wrapped_key = row
        if erased:
            raise OpeningErasedError(
                f"ledger entry {index} was erased (crypto-shredded); its value cannot be recovered"
            )
        if wrapped_key is None or sealed_blob is None:
            raise VerificationError(
                f"the data key of ledger entry {index} is missing from {self.keys_path} although "
                "it was never erased; restore the keys file from the same backup as the store"
            )
        try:
            dek = aes_key_unwrap(self._wrap_key, bytes(wrapped_key))
            plain = AESGCM(dek).decrypt(
                _NONCE, bytes(sealed_blob), _aad(index, int(entry_type), bytes(tenure_ref))
            )
        except (InvalidUnwrap, InvalidTag) as exc:
            raise VerificationError(
                f"opening of ledger entry {index} does not decrypt: wrong openings key or a "
                "tampered store; restore the store and key from the same backup"
            ) from exc
        return Opening(
            index,
            EntryType(int(entry_type)),
            bytes(tenure_ref),
            plain[:OPENING_SIZE],
            CanonicalValue.from_bytes(plain[OPENING_SIZE:]),
        )

    def erase(self, index: int, *, compact: bool = True) -> None:
        """Crypto-shred entry ``index``: destroy its data key and ciphertext (see module doc)."""
        self.erase_many([index], compact=compact)

    def erase_many(self, indices: Iterable[int], *, compact: bool = True) -> int:
        """Erase several entries at once, then compact once. Returns how many were erased now."""
        wanted = sorted(set(indices))
        if not wanted:
            return 0
        table = pa.table({"idx": pa.array(wanted, pa.uint64())})
        self._con.register("erase_idx", table)
        try:
            missing = self._one("SELECT count(*) FROM erase_idx e ANTI JOIN openings o ON o.idx = e.idx")
            if missing and missing[0]:
                raise TerminalError(f"{missing[0]} of the indices to erase are not in the openings store")
            # The key first: once it is gone nothing can open the entry, whatever happens next.
            self._con.execute("DELETE FROM dk.data_keys WHERE idx IN (SELECT idx FROM erase_idx)")
            row = self._one(
                "UPDATE openings SET sealed = NULL, erased = true "
                "WHERE idx IN (SELECT idx FROM erase_idx) AND NOT erased"
            )
        finally:
            self._con.unregister("erase_idx")
        if compact:
            self.compact()
        return int(row[0]) if row else 0

    def truncate(self, size: int) -> int:
        """Drop openings at indices >= ``size`` (entries lost in a crash before their checkpoint)."""
        self._con.execute("DELETE FROM dk.data_keys WHERE idx >= ?", [size])
        row = self._one("DELETE FROM openings WHERE idx >= ?", [size])
        return int(row[0]) if row else 0

    def count(self) -> int:
        row = self._one("SELECT count(*) FROM openings")
        return int(row[0]) if row else 0

    def compact(self) -> None:
        """Rewrite the keys file into a fresh one and swap it in, so no freed page keeps a key."""
        fresh = self._dir / (KEYS_DB_FILE + ".compact")
        fresh.unlink(missing_ok=True)
        self._con.execute(f"ATTACH {sql_str(fresh)} AS fresh")
        try:
            self._con.execute(_KEYS_DDL.replace("dk.data_keys", "fresh.data_keys"))
            self._con.execute("INSERT INTO fresh.data_keys SELECT * FROM dk.data_keys ORDER BY idx")
        finally:
            self._con.execute("DETACH fresh")
        self._con.close()
        with open(fresh, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(fresh, self.keys_path)
        Path(str(self.keys_path) + ".wal").unlink(missing_ok=True)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._con = self._connect()
