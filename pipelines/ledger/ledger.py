"""The integrator's API: append prepared entries, publish signed checkpoints, write evidence.

One :class:`Ledger` is the single writer of one ledger directory (it holds the writer lock
from :meth:`Ledger.open` to :meth:`Ledger.close`). Appended entries count once a checkpoint
covering them is published; a crash before that loses the batch (the log and the openings
store both roll back to the checkpoint on the next open) and rerunning the day re-appends it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from number_recycling_client.ledger.entries import (
    NO_TENURE,
    OPENING_SIZE,
    Entry,
    EntryType,
    PreparedEntry,
    commitment,
    tenure_ref_for,
)
from number_recycling_client.ledger.merkle import EMPTY_ROOT, verify_consistency
from number_recycling_client.ledger.note import Checkpoint, Verifier, b64, open_checkpoint, sign_note
from number_recycling_client.ledger.proof import TileReader, TlogProof, consistency_proof, inclusion_proof

from pipelines.errors import (
    CommitmentError,
    ConfigError,
    InconsistentCheckpointError,
    LogIntegrityError,
    OpeningErasedError,
    TerminalError,
)
from pipelines.layout import atomic_write_bytes
from pipelines.ledger.log import CHECKPOINT_FILE, VKEY_FILE, TiledLog, WriterLock
from pipelines.ledger.openings import NewOpening, Opening, OpeningsStore
from pipelines.ledger.signer import CheckpointSigner
from pipelines.ledger.verify import LogReport, evidence_extra, verify_log


class EncodedEntry(NamedTuple):
    """A :class:`PreparedEntry` with its value encoded (so checked by ``CanonicalValue`` where it
    was built): what the nightly step's preparing process hands the appending one, at ~2 µs an
    entry to unpickle where a ``PreparedEntry`` cost 13-18 µs (``pipelines.ledger.nightly``)."""

    key: str
    entry_type: EntryType
    value: bytes
    tenure_key: str | None = None
    tenure_ref: bytes | None = None

    @classmethod
    def of(cls, p: PreparedEntry) -> EncodedEntry:
        return cls(p.key, p.entry_type, p.value.to_bytes(), p.tenure_key, p.tenure_ref)


class Ledger:
    """Writer for one ledger directory. Build it with :meth:`open`; use as a context manager."""

    def __init__(
        self,
        ledger_dir: Path,
        signer: CheckpointSigner,
        origin: str,
        openings: OpeningsStore,
        log: TiledLog,
        checkpoint: Checkpoint | None,
        note: bytes | None,
    ) -> None:
        self.dir = ledger_dir
        self.origin = origin
        self._signer = signer
        self._verifier = Verifier(signer.name, signer.key_id, signer.public_key)
        self._openings = openings
        self._log = log
        self._checkpoint = checkpoint
        self._note = note
        self._reader: TileReader | None = None

    @classmethod
    def open(
        cls,
        ledger_dir: Path,
        signer: CheckpointSigner,
        origin: str,
        openings: OpeningsStore,
        *,
        lock_timeout_s: float = 30.0,
    ) -> Ledger:
        """Take the writer lock and resume at the last published checkpoint.

        ``ledger_dir`` is ``Layout(data_dir).ledger_dir``; ``origin`` is
        ``settings.ledger.origin``; the signer comes from ``load_or_create_signer(keys_dir,
        settings.ledger.key_name)``. If the signer signed a checkpoint that never reached the
        disk (a crash in between), it is written now. Openings of entries beyond the
        checkpoint are dropped. Writes ``<ledger_dir>/vkey`` on first use.
        """
        lock = WriterLock(ledger_dir, lock_timeout_s)
        try:
            verifier = Verifier(signer.name, signer.key_id, signer.public_key)
            vkey_path = ledger_dir / VKEY_FILE
            if vkey_path.exists() and vkey_path.read_text(encoding="utf-8").strip() != verifier.vkey:
                raise ConfigError(
                    f"{vkey_path} names key {vkey_path.read_text(encoding='utf-8').strip()!r} but the "
                    f"signer is {verifier.vkey!r}: wrong keys directory for this ledger"
                )
            checkpoint: Checkpoint | None = None
            note: bytes | None = None
            if (ledger_dir / CHECKPOINT_FILE).exists():
                note = (ledger_dir / CHECKPOINT_FILE).read_bytes()
                checkpoint = open_checkpoint(note, verifier, origin)
            log: TiledLog | None = None
            signed = signer.last_signed(origin)
            if signed is not None:
                last = open_checkpoint(signed, verifier, origin)
                if checkpoint is None or last.size > checkpoint.size:
                    try:
                        log = TiledLog.load(ledger_dir, lock, last.size, last.root)
                    except LogIntegrityError as exc:
                        raise LogIntegrityError(
                            f"the signer already signed size {last.size} for {origin}, but {ledger_dir} "
                            f"does not hold that tree ({exc}). Restore the ledger directory; if this is "
                            "a throw-away development setup, delete the signer's .checkpoints.json too"
                        ) from exc
                    log.write_checkpoint(signed, last.size)
                    checkpoint, note = last, signed
                elif last.size == checkpoint.size and last.root != checkpoint.root:
                    raise InconsistentCheckpointError(
                        f"{ledger_dir / CHECKPOINT_FILE} and the signer disagree on the root of size "
                        f"{last.size}: the ledger directory was replaced; restore the published one"
                    )
            if log is None:
                size, root = (checkpoint.size, checkpoint.root) if checkpoint else (0, EMPTY_ROOT)
                log = TiledLog.load(ledger_dir, lock, size, root)
            if not vkey_path.exists():
                atomic_write_bytes(vkey_path, (verifier.vkey + "\n").encode())
            openings.truncate(log.size)
            stored = openings.count()
            if stored != log.size:
                raise TerminalError(
                    f"the openings store {openings.path} holds {stored} entries but the ledger "
                    f"{ledger_dir} has {log.size}: they come from different backups. Restore both "
                    "from the same point; appending now would log facts twice"
                )
        except BaseException:
            lock.release()
            raise
        return cls(ledger_dir, signer, origin, openings, log, checkpoint, note)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the writer lock (the openings store stays open: its owner closes it)."""
        self._log.close()

    @property
    def size(self) -> int:
        """Entries appended (published or not)."""
        return self._log.size

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The last published checkpoint."""
        return self._checkpoint

    @property
    def signed_checkpoint(self) -> bytes | None:
        """The last published checkpoint note, as served at ``<ledger_dir>/checkpoint``."""
        return self._note

    @property
    def vkey(self) -> str:
        """The verifier key auditors pin: ``name+hex8+base64``."""
        return self._verifier.vkey

    @property
    def verifier(self) -> Verifier:
        """The log's verifier key (``label`` names it as ``name+hex8``)."""
        return self._verifier

    def sign_note(self, text: bytes) -> bytes:
        """A C2SP signed note of ``text`` by the log's key (a tenure statement, ``statement.py``).

        One key for checkpoints and statements: a verifier pins one published key. The signer
        refuses any text that parses as a checkpoint, so a note can never pass for one.
        """
        return sign_note(text, [self._signer])

    def _tiles(self) -> TileReader:
        if self._reader is None or self._reader.size != self._log.size:
            self._reader = TileReader(self.dir, self._log.size)
        return self._reader

    def index_of(self, key: str) -> int | None:
        """Log index of the entry appended under idempotency ``key`` (None if never appended)."""
        return self._openings.index_of(key)

    def append(self, entries: Sequence[PreparedEntry]) -> list[int]:
        """Append a batch; return the log index of each entry, in order.

        Entries whose key is already in the ledger are skipped and report their existing
        index, so rerunning a day appends nothing twice. A ``tenure_key`` may name an entry
        earlier in the same batch. Not durable until :meth:`publish_checkpoint`.
        """
        return self.append_encoded([EncodedEntry.of(p) for p in entries])

    def append_encoded(self, entries: Sequence[EncodedEntry]) -> list[int]:
        """:meth:`append` for entries whose values are encoded already."""
        keys = [p.key for p in entries]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise TerminalError(f"idempotency key {dup!r} appears twice in one ledger batch")
        tag = self._openings.key_tag
        tags = {k: tag(k) for k in keys}
        for p in entries:
            if p.tenure_key is not None and p.tenure_key not in tags:
                tags[p.tenure_key] = tag(p.tenure_key)
        known = self._openings.lookup_tags(list(tags.values()))
        fresh = [p for p in entries if tags[p.key] not in known]
        randomness = os.urandom(OPENING_SIZE * len(fresh))
        refs: dict[bytes, bytes] = {t: ref for t, (_, ref) in known.items()}
        rows: list[NewOpening] = []
        raw: list[bytes] = []
        index = self._log.size
        for i, p in enumerate(fresh):
            opening = randomness[OPENING_SIZE * i : OPENING_SIZE * (i + 1)]
            value = p.value
            com = commitment(opening, p.entry_type, value)
            if p.entry_type == EntryType.TENURE_CLOSED:
                ref = tenure_ref_for(com)
            elif p.tenure_ref is not None:
                ref = p.tenure_ref
            elif p.tenure_key is not None:
                found = refs.get(tags[p.tenure_key])
                if found is None:
                    raise TerminalError(
                        f"entry {p.key!r} names tenure {p.tenure_key!r}, which is not in the ledger "
                        "nor earlier in this batch; append the tenure_closed entry first"
                    )
                ref = found
            else:
                ref = NO_TENURE
            refs[tags[p.key]] = ref
            rows.append(NewOpening(index + i, tags[p.key], p.entry_type, ref, opening, value))
            raw.append(Entry(p.entry_type, ref, com).to_bytes())
        self._openings.put(rows)
        self._log.append(raw)
        new_index = {p.key: index + i for i, p in enumerate(fresh)}
        return [known[tags[k]][0] if tags[k] in known else new_index[k] for k in keys]

    def publish_checkpoint(self) -> Checkpoint:
        """Sign the current tree (with a consistency proof from the last signed one) and publish it."""
        checkpoint = Checkpoint(self.origin, self._log.size, self._log.root())
        published = self._checkpoint
        if published is not None and 0 < published.size < checkpoint.size:
            # Also check against what is published here, in case the signer lost its state.
            verify_consistency(
                published.size,
                checkpoint.size,
                consistency_proof(self._tiles(), published.size, checkpoint.size),
                published.root,
                checkpoint.root,
            )
        proof: list[bytes] = []
        last = self._signer.last_signed(self.origin)
        if last is not None:
            previous = open_checkpoint(last, self._verifier, self.origin)
            if 0 < previous.size < checkpoint.size:
                proof = consistency_proof(self._tiles(), previous.size, checkpoint.size)
        note = self._signer.sign_checkpoint(checkpoint, proof)
        self._log.write_checkpoint(note, checkpoint.size)
        self._checkpoint, self._note = checkpoint, note
        return checkpoint

    def entry(self, index: int) -> Entry:
        """The public entry at ``index``, read from its entry bundle."""
        return Entry.from_bytes(self._tiles().entry(index))

    def opening(self, index: int) -> Opening:
        """Decrypt and check the opening of entry ``index`` against its logged commitment."""
        entry = self.entry(index)
        opened = self._openings.get(index)
        if commitment(opened.opening, entry.entry_type, opened.value.to_bytes()) != entry.commitment:
            raise CommitmentError(
                f"the stored opening of entry {index} does not match the logged commitment; the "
                "openings store is out of step with the ledger - restore both from the same backup"
            )
        return opened

    def erase(self, index: int) -> None:
        """Crypto-shred entry ``index``: its value can no longer be opened; the log is unchanged."""
        if not 0 <= index < self._log.size:
            raise TerminalError(f"entry {index} is not in the ledger (size {self._log.size})")
        self._openings.erase(index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of ``index`` in the tree of ``size`` (default: the published checkpoint)."""
        return inclusion_proof(self._tiles(), index, self._published_size() if size is None else size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof between two tree sizes (default new: the published checkpoint)."""
        new = self._published_size() if new_size is None else new_size
        return consistency_proof(self._tiles(), old_size, new)

    def _published_size(self) -> int:
        return self._checkpoint.size if self._checkpoint else 0

    def proof_file(self, index: int) -> bytes:
        """A ``tlog-proof@v1`` evidence file for ``index`` against the published checkpoint."""
        return self._proof_file(index, self.opening(index))

    def _proof_file(self, index: int, opened: Opening) -> bytes:
        if self._checkpoint is None or self._note is None or index >= self._checkpoint.size:
            raise TerminalError(
                f"entry {index} is not covered by a published checkpoint; call publish_checkpoint() first"
            )
        extra = evidence_extra(self.entry(index), opened.opening, opened.value)
        hashes = inclusion_proof(self._tiles(), index, self._checkpoint.size)
        return TlogProof(index, tuple(hashes), self._note, extra).to_bytes()

    def write_evidence(self, indices: Iterable[int], out_dir: Path) -> Path:
        """Write ``<index>.tlog-proof`` per entry and ``index.json`` describing them; return its path.

        Erased entries get no proof file and are listed with ``"erased": true``. The output is
        deterministic for the same ledger state (no timestamps).
        """
        if self._checkpoint is None:
            raise TerminalError("no published checkpoint yet; call publish_checkpoint() first")
        out_dir.mkdir(parents=True, exist_ok=True)
        items: list[dict[str, object]] = []
        for index in sorted(set(indices)):
            entry = self.entry(index)
            item: dict[str, object] = {
                "index": index,
                "type": entry.entry_type.label,
                "tenure_ref": entry.tenure_ref.hex(),
            }
            try:
                opened = self.opening(index)
            except OpeningErasedError:
                items.append(item | {"erased": True, "file": None, "value": None})
                continue
            name = f"{index}.tlog-proof"
            atomic_write_bytes(out_dir / name, self._proof_file(index, opened))
            items.append(item | {"erased": False, "file": name, "value": opened.value.as_dict()})
        doc = {
            "format": "number-recycling/evidence/v1",
            "origin": self.origin,
            "vkey": self.vkey,
            "checkpoint": {"size": self._checkpoint.size, "root": b64(self._checkpoint.root)},
            "entries": items,
        }
        path = out_dir / "index.json"
        atomic_write_bytes(
            path, (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        )
        return path

    def verify(self) -> LogReport:
        """:func:`verify_log` on this ledger with its own key and origin."""
        return verify_log(self.dir, self._verifier, self.origin)
