"""What the client trusts, as a state machine with no I/O (python-tuf's ``TrustedMetadataSet``).

Bytes go in, verdicts come out: :class:`TrustedFeed` starts from what the last pull stored
(:class:`LastPull`) and takes, in this order (``docs/feeds.md`` §3),

1. :meth:`~TrustedFeed.update_root` for every newer root, then :meth:`~TrustedFeed.finish_roots`;
2. :meth:`~TrustedFeed.update_timestamp`;
3. :meth:`~TrustedFeed.update_manifest` for every seq :attr:`~TrustedFeed.next_manifest_seq` names;
4. :meth:`~TrustedFeed.update_rows` for every file :attr:`~TrustedFeed.next_feed_file` names,
   then :meth:`~TrustedFeed.update_notices` for every pending list :attr:`~TrustedFeed.next_notice_file` names;
5. :meth:`~TrustedFeed.verify_ledger`, which reads the tiles it needs through a callable
   (which tiles a proof needs depends on the proof, so the caller cannot hand them over first);

then :meth:`~TrustedFeed.verified` hands over what may be stored. Every step verifies
signatures, expiry, rollback and the chain, and raises a
:class:`~number_recycling_client.errors.VerificationError` subclass naming what failed. Nothing here touches
the network or the disk: ``pull.py`` fetches and stores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from number_recycling_client.errors import (
    CommitmentError,
    ExpiredMetadataError,
    FeedGapError,
    FeedOrderError,
    InconsistentCheckpointError,
    LogIntegrityError,
    ProofError,
    RollbackError,
    SignatureError,
    TamperedFileError,
)
from number_recycling_client.feedfiles import (
    FEED_COLUMNS,
    FEED_EVENTS,
    NOTICE_COLUMNS,
    NOTICE_EVENTS,
    Value,
    read_csv,
)
from number_recycling_client.ledger.entries import Entry, EntryType, commitment
from number_recycling_client.ledger.merkle import (
    consistency_path,
    inclusion_path,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from number_recycling_client.ledger.note import Checkpoint, open_checkpoint
from number_recycling_client.ledger.proof import TileReader
from number_recycling_client.ledger.tiles import Tile
from number_recycling_client.wire import (
    ROLE_MANIFEST,
    ROLE_RECEIPT,
    ROLE_ROOT,
    ROLE_TIMESTAMP,
    Envelope,
    FileMeta,
    Manifest,
    QueryReceipt,
    Root,
    Timestamp,
    canonical_json,
    feed_manifest_value,
    sha256_hex,
    verify_root_update,
)

Row = tuple[Value, ...]  # a file's columns in FEED_COLUMNS/NOTICE_COLUMNS order, then feed_date
ReadTile = Callable[[str], bytes | None]  # tile path under the ledger ("tile/0/000") -> bytes, None: absent


@dataclass(frozen=True)
class LastPull:
    """What the client verified and stored by its last pull (nothing yet: the defaults)."""

    root: Envelope[Root] | None = None
    timestamp_version: int = 0
    seq: int = 0
    manifest_sha256: str | None = None
    feed_date: dt.date | None = None
    last_row_seq: int = 0
    checkpoint: bytes | None = None  # the signed note of the last checkpoint seen
    last_notice_seq: int = 0  # the pending list's last seq stored (notices.csv)


class FeedFile(NamedTuple):
    """A day's file still to verify: the seq of its manifest and what the manifest says of it."""

    seq: int
    meta: FileMeta


@dataclass(frozen=True)
class VerifiedPull:
    """Everything a pull verified, ready to store in one transaction."""

    root: Envelope[Root]
    timestamp: Timestamp
    manifests: tuple[tuple[Envelope[Manifest], bytes], ...]  # with the exact bytes served
    tables: tuple[list[Row], ...]  # one per manifest, ``feed_date`` appended to each row
    last_row_seq: int
    checkpoint_note: bytes | None
    checkpoint: Checkpoint | None
    notices: tuple[list[Row], ...] = ()  # the pending lists of the manifests that have one
    last_notice_seq: int = 0


def check_fresh(expires: dt.datetime, now: dt.datetime, what: str) -> None:
    if expires <= now:
        raise ExpiredMetadataError(
            f"{what} expired at {expires:%Y-%m-%dT%H:%M:%SZ} (now {now:%Y-%m-%dT%H:%M:%SZ}): the feed "
            "is frozen or stale; do not trust it, and tell the carrier"
        )


class TrustedFeed:
    """The root chain, timestamp and manifests this pull has verified so far (see the module doc)."""

    def __init__(self, last: LastPull, now: dt.datetime, *, require_ledger: bool = True) -> None:
        self.last = last
        self.now = now
        self.require_ledger = require_ledger  # refuse manifests that no ledger entry commits to
        self.roots: list[Envelope[Root]] = [] if last.root is None else [last.root]
        self._roots_final = False
        self.timestamp: Timestamp | None = None
        self.manifests: list[tuple[Envelope[Manifest], bytes]] = []
        self.tables: list[list[Row]] = []
        self.notices: list[list[Row]] = []
        self._notices_checked = 0  # manifests whose pending list is verified (or that have none)
        self.checkpoint_note = last.checkpoint
        self.checkpoint: Checkpoint | None = None
        self._ledger_done = False

    # ------------------------------------------------------------------ 1. roots

    def pin_root(self, data: bytes, source: str) -> None:
        """Trust ``data`` (the --root file, obtained out of band) when nothing is stored yet."""
        if self.roots:
            raise RuntimeError("a root is already trusted")
        root = Envelope.from_bytes(data, Root, source)
        root.verify_role(root.signed, ROLE_ROOT, f"pinned root {source}")
        self.roots.append(root)

    @property
    def root(self) -> Envelope[Root]:
        """The newest trusted root."""
        if not self.roots:
            raise SignatureError(
                "no trusted root yet: the first pull needs --root FILE, the carrier's root.json "
                "obtained out of band (trust on first use only with an explicit root)"
            )
        return self.roots[-1]

    @property
    def next_root_version(self) -> int:
        return self.root.signed.version + 1

    def update_root(self, data: bytes) -> Root:
        """Follow the chain one version: signed by the old AND the new root keys."""
        if self._roots_final:
            raise RuntimeError("the root chain is final once finish_roots() ran")
        version = self.next_root_version
        new = Envelope.from_bytes(data, Root, f"root v{version}")
        verify_root_update(self.root, new, data)
        self.roots.append(new)
        return new.signed

    def finish_roots(self) -> Root:
        """No newer root: the newest one must not have expired."""
        root = self.root.signed
        check_fresh(root.expires, self.now, f"root v{root.version}")
        self._roots_final = True
        return root

    # ------------------------------------------------------------------ 2. timestamp

    def update_timestamp(self, data: bytes) -> Timestamp:
        """Signed by the timestamp role, fresh, and not behind what the client already trusts."""
        if not self._roots_final or self.timestamp is not None:
            raise RuntimeError("update_timestamp() comes once, after finish_roots()")
        env = Envelope.from_bytes(data, Timestamp, "timestamp.json")
        env.verify_role(self.root.signed, ROLE_TIMESTAMP, "timestamp.json")
        ts, last = env.signed, self.last
        check_fresh(ts.expires, self.now, "timestamp.json")
        if ts.version < last.timestamp_version or ts.manifest.seq < last.seq:
            raise RollbackError(
                f"the server offers timestamp v{ts.version} (manifest seq {ts.manifest.seq}) but this "
                f"client already trusts v{last.timestamp_version} (seq {last.seq}): a rollback"
            )
        if ts.manifest.seq == last.seq and ts.manifest.sha256 != last.manifest_sha256:
            raise RollbackError(
                f"timestamp pins a different manifest for seq {last.seq} than the one stored: the "
                "feed was forked or rewritten"
            )
        self.timestamp = ts
        return ts

    # ------------------------------------------------------------------ 3. manifests

    @property
    def next_manifest_seq(self) -> int | None:
        """The seq to fetch next, up to the one the timestamp pins; None when all are in."""
        if self.timestamp is None:
            raise RuntimeError("update_manifest() needs the timestamp first")
        seq = self.last.seq + len(self.manifests) + 1
        return seq if seq <= self.timestamp.manifest.seq else None

    def update_manifest(self, data: bytes) -> Manifest:
        """The next manifest: its seq, chained to the previous one, later, signed; the newest
        also matches the timestamp's pin, verifies under the newest root and is fresh."""
        seq = self.next_manifest_seq
        if seq is None:
            raise RuntimeError("every manifest the timestamp pins is already verified")
        env = Envelope.from_bytes(data, Manifest, f"manifest seq {seq}")
        self._check_order(env.signed, seq)
        _verify_signature_any(env, self.roots, f"manifest seq {seq}")
        self.manifests.append((env, data))
        assert self.timestamp is not None
        if seq == self.timestamp.manifest.seq:
            self._check_pinned(env, data)
        return env.signed

    def _check_order(self, m: Manifest, seq: int) -> None:
        prev_sha: str | None = self.last.manifest_sha256
        prev_date: dt.date | None = self.last.feed_date
        if self.manifests:
            prev_env, prev_bytes = self.manifests[-1]
            prev_sha, prev_date = sha256_hex(prev_bytes), prev_env.signed.feed_date
        if m.seq != seq:
            raise FeedOrderError(f"manifests/{seq}.json holds manifest seq {m.seq}: manifests were reordered")
        if m.prev_manifest_sha256 != prev_sha:
            raise FeedOrderError(
                f"manifest seq {seq} ({m.feed_date}) does not chain to seq {seq - 1}: its "
                "prev_manifest_sha256 differs (reordered, replaced or forked feed)"
            )
        if prev_date is not None and m.feed_date <= prev_date:
            raise FeedOrderError(f"manifest seq {seq} is dated {m.feed_date}, not after {prev_date}")

    def _check_pinned(self, env: Envelope[Manifest], data: bytes) -> None:
        assert self.timestamp is not None
        pinned = self.timestamp.manifest
        if len(data) != pinned.length or sha256_hex(data) != pinned.sha256:
            raise TamperedFileError(
                f"manifest seq {pinned.seq} does not match the length and SHA-256 the timestamp pins"
            )
        env.verify_role(self.root.signed, ROLE_MANIFEST, f"manifest seq {pinned.seq}")
        check_fresh(env.signed.expires, self.now, f"manifest seq {pinned.seq}")

    # ------------------------------------------------------------------ 4. files

    @property
    def next_feed_file(self) -> FeedFile | None:
        """The day's ``recycled.csv`` to fetch next; None when every day's rows are in."""
        if self.next_manifest_seq is not None:
            raise RuntimeError("update_rows() needs every manifest first")
        if len(self.tables) == len(self.manifests):
            return None
        m = self.manifests[len(self.tables)][0].signed
        meta = next((f for f in m.files if f.path.endswith("/recycled.csv")), None)
        if meta is None:
            raise TamperedFileError(f"manifest seq {m.seq} lists no recycled.csv")
        return FeedFile(m.seq, meta)

    @property
    def last_row_seq(self) -> int:
        return self.last.last_row_seq + sum(len(t) for t in self.tables)

    def update_rows(self, data: bytes) -> list[Row]:
        """The file :attr:`next_feed_file` names: as its manifest signs it, rows contiguous."""
        pending = self.next_feed_file
        if pending is None:
            raise RuntimeError("every day's rows are already verified")
        m, meta = self.manifests[len(self.tables)][0].signed, pending.meta
        if len(data) != meta.length or sha256_hex(data) != meta.sha256:
            raise TamperedFileError(
                f"{meta.path}: length or SHA-256 differs from the signed manifest seq {m.seq}; the "
                "file was altered in transit or on the server"
            )
        if meta.rows != m.row_count:
            raise TamperedFileError(f"manifest seq {m.seq}: file rows {meta.rows} != row_count {m.row_count}")
        table = verify_rows(data, m, self.last_row_seq + 1)
        self.tables.append([(*row, m.feed_date) for row in table])
        return table

    # ------------------------------------------------------------------ 4b. pending lists

    @property
    def next_notice_file(self) -> FeedFile | None:
        """The day's ``notices.csv`` (the pending list) to fetch next, after every day's rows;
        None when all are in. A manifest of an earlier publisher lists none: nothing to fetch."""
        if self.next_feed_file is not None:
            raise RuntimeError("update_notices() comes after every day's rows")
        while self._notices_checked < len(self.manifests):
            m = self.manifests[self._notices_checked][0].signed
            meta = next((f for f in m.files if f.path.endswith("/notices.csv")), None)
            if meta is not None:
                return FeedFile(m.seq, meta)
            self._notices_checked += 1
        return None

    @property
    def last_notice_seq(self) -> int:
        return self.last.last_notice_seq + sum(len(t) for t in self.notices)

    def update_notices(self, data: bytes) -> list[Row]:
        """The file :attr:`next_notice_file` names: as its manifest signs it, seqs contiguous."""
        pending = self.next_notice_file
        if pending is None:
            raise RuntimeError("every day's pending list is already verified")
        m, meta = self.manifests[self._notices_checked][0].signed, pending.meta
        if len(data) != meta.length or sha256_hex(data) != meta.sha256:
            raise TamperedFileError(
                f"{meta.path}: length or SHA-256 differs from the signed manifest seq {m.seq}; the "
                "file was altered in transit or on the server"
            )
        table = verify_notices(data, m, meta.rows, self.last_notice_seq + 1)
        self.notices.append([(*row, m.feed_date) for row in table])
        self._notices_checked += 1
        return table

    # ------------------------------------------------------------------ 5. ledger

    def verify_ledger(self, read_tile: ReadTile) -> Checkpoint | None:
        """Every new manifest is committed to the ledger, each checkpoint consistent with the last."""
        if self.next_feed_file is not None or self.next_notice_file is not None:
            raise RuntimeError("verify_ledger() comes after every day's rows and pending list")
        root = self.root.signed
        if self.checkpoint_note is not None and root.ledger is not None:
            self.checkpoint = open_checkpoint(
                self.checkpoint_note, root.ledger.verifier_key, root.ledger.origin
            )
        for env, _ in self.manifests:
            m = env.signed
            if m.ledger is None:
                if self.require_ledger:
                    raise CommitmentError(
                        f"manifest seq {m.seq} ({m.feed_date}) is not committed to the ledger; this "
                        "client requires every manifest to be logged"
                    )
                continue
            self.checkpoint, self.checkpoint_note = verify_ledger_entry(read_tile, root, m, self.checkpoint)
        self._ledger_done = True
        return self.checkpoint

    def verified(self) -> VerifiedPull:
        """What may now be stored: refused unless every step ran."""
        if not self._ledger_done or self.timestamp is None:
            raise RuntimeError("verified() comes after verify_ledger()")
        return VerifiedPull(
            root=self.root,
            timestamp=self.timestamp,
            manifests=tuple(self.manifests),
            tables=tuple(self.tables),
            last_row_seq=self.last_row_seq,
            checkpoint_note=self.checkpoint_note,
            checkpoint=self.checkpoint,
            notices=tuple(self.notices),
            last_notice_seq=self.last_notice_seq,
        )


def _verify_signature_any(env: Envelope[Manifest], chain: Sequence[Envelope[Root]], what: str) -> None:
    """An older manifest may be signed by an online key a later root rotated away."""
    errors = []
    for root in reversed(chain):
        try:
            env.verify_role(root.signed, ROLE_MANIFEST, what)
            return
        except SignatureError as exc:
            errors.append(str(exc))
    raise SignatureError(errors[0])


_SEQ = [c.name for c in FEED_COLUMNS].index("seq")
_EVENT = [c.name for c in FEED_COLUMNS].index("event")
_NOTICE_SEQ = [c.name for c in NOTICE_COLUMNS].index("seq")
_NOTICE_EVENT = [c.name for c in NOTICE_COLUMNS].index("event")


def _check_seqs(rows: list[Row], at: int, first_seq: int, what: str) -> None:
    if [row[at] for row in rows] != list(range(first_seq, first_seq + len(rows))):
        raise FeedGapError(f"{what}: seqs are not contiguous from {first_seq}")


def verify_rows(data: bytes, manifest: Manifest, first_seq: int) -> list[Row]:
    """A day's ``recycled.csv`` (bytes, in memory): columns, row count, row seqs contiguous,
    known events."""
    rows = read_csv(data, FEED_COLUMNS, f"feed seq {manifest.seq}")
    if len(rows) != manifest.row_count:
        raise TamperedFileError(
            f"feed seq {manifest.seq}: {len(rows)} rows, the manifest says {manifest.row_count}"
        )
    if manifest.row_seq_start != first_seq:
        raise FeedGapError(
            f"feed seq {manifest.seq} starts at row {manifest.row_seq_start}, expected "
            f"{first_seq}: rows are missing or repeated"
        )
    _check_seqs(rows, _SEQ, first_seq, f"feed seq {manifest.seq}: row")
    events = {row[_EVENT] for row in rows}
    if not events <= FEED_EVENTS:
        raise TamperedFileError(f"feed seq {manifest.seq}: unknown event(s) {sorted(map(str, events))}")
    return rows


def verify_notices(data: bytes, manifest: Manifest, count: int, first_seq: int) -> list[Row]:
    """A day's pending list (``notices.csv``): columns, the row count its manifest signs, seqs
    contiguous from ``first_seq`` (the notices' own numbering), known events."""
    what = f"notices of seq {manifest.seq}"
    rows = read_csv(data, NOTICE_COLUMNS, what)
    if len(rows) != count:
        raise TamperedFileError(f"{what}: {len(rows)} rows, the manifest says {count}")
    _check_seqs(rows, _NOTICE_SEQ, first_seq, what)
    events = {row[_NOTICE_EVENT] for row in rows}
    if not events <= NOTICE_EVENTS:
        raise TamperedFileError(f"{what}: unknown event(s) {sorted(map(str, events))}")
    return rows


# --------------------------------------------------------------------------- ledger


class _Tiles(TileReader):
    """The ledger's TileReader over tiles the caller reads (from the server, in a pull)."""

    def __init__(self, read_tile: ReadTile, size: int) -> None:
        super().__init__(Path("ledger"), size)
        self._read_tile = read_tile

    def _read(self, tile: Tile) -> bytes:
        data = self._read_tile(tile.path)
        if data is None:
            raise LogIntegrityError(
                f"the server has no ledger/{tile.path}, which the tree of size {self.size} needs"
            )
        return data


def verify_ledger_entry(
    read_tile: ReadTile, root: Root, manifest: Manifest, previous: Checkpoint | None
) -> tuple[Checkpoint, bytes]:
    """The manifest's checkpoint is signed by the root's ledger key, its entry commits to the
    manifest's core and is included, and the checkpoint extends ``previous``."""
    ref = manifest.ledger
    assert ref is not None
    if root.ledger is None:
        raise SignatureError(
            f"manifest seq {manifest.seq} names a ledger checkpoint but root "
            f"v{root.version} names no ledger key to verify it with"
        )
    note = ref.checkpoint.encode("utf-8")
    cp = open_checkpoint(note, root.ledger.verifier_key, root.ledger.origin)
    if not 0 <= ref.index < cp.size:
        raise ProofError(
            f"manifest seq {manifest.seq}: ledger index {ref.index} is outside its "
            f"checkpoint of size {cp.size}"
        )
    tiles = _Tiles(read_tile, cp.size)
    raw = tiles.entry(ref.index)
    entry = Entry.from_bytes(raw)
    if entry.entry_type != EntryType.FEED_MANIFEST:
        raise CommitmentError(
            f"ledger entry {ref.index} is a {entry.entry_type.label} entry, not the "
            f"feed_manifest of seq {manifest.seq}"
        )
    value = feed_manifest_value(manifest.feed_date, manifest.seq, manifest.core_sha256())
    if commitment(bytes.fromhex(ref.opening), EntryType.FEED_MANIFEST, value.to_bytes()) != entry.commitment:
        raise CommitmentError(
            f"ledger entry {ref.index} does not commit to manifest seq "
            f"{manifest.seq} ({manifest.feed_date}): the manifest was altered"
        )
    verify_inclusion(leaf_hash(raw), ref.index, cp.size, inclusion_path(tiles, ref.index, cp.size), cp.root)
    if previous is not None:
        if cp.size < previous.size:
            raise InconsistentCheckpointError(
                f"manifest seq {manifest.seq} names a ledger of size {cp.size}, smaller than size "
                f"{previous.size} already seen: the ledger was rolled back"
            )
        proof = consistency_path(tiles, previous.size, cp.size)
        verify_consistency(previous.size, cp.size, proof, previous.root, cp.root)
    return cp, note


# --------------------------------------------------------------------------- query receipts


def verify_receipt(
    receipt: dict[str, Any], root: Root, phones: Sequence[str], dates: Sequence[str], answers: Sequence[str]
) -> QueryReceipt:
    """Check a bulk-check receipt: signed by the receipt role, digests match what was asked and answered."""
    env = Envelope.from_bytes(canonical_json(receipt), QueryReceipt, "query receipt")
    env.verify_role(root, ROLE_RECEIPT, "query receipt")
    lines = "".join(f"{p},{d}\n" for p, d in zip(phones, dates, strict=True)).encode()
    if sha256_hex(lines) != env.signed.request_sha256:
        raise TamperedFileError("the receipt's request_sha256 is not this request")
    if sha256_hex("".join(f"{a}\n" for a in answers).encode()) != env.signed.response_sha256:
        raise TamperedFileError("the receipt's response_sha256 does not match these answers")
    if env.signed.pairs != len(answers):
        raise TamperedFileError(f"the receipt covers {env.signed.pairs} pairs, not {len(answers)}")
    return env.signed
