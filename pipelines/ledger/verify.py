"""Offline verification for auditors: proof files, the whole log (fsck), and the release audit.

Everything here raises a :class:`~pipelines.errors.VerificationError` subclass naming what
failed and where; nothing returns False. Only public material is needed: the ledger
directory (or a mirror of it), the verifier key, and for evidence the proof files.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from number_recycling_client.ledger.entries import (
    ENTRY_SIZE,
    ENTRY_VERSION,
    KNOWN_TYPE_CODES,
    OPENING_SIZE,
    TENURE_REF_SIZE,
    CanonicalValue,
    Entry,
    EntryType,
    commitment,
    tenure_ref_for,
)
from number_recycling_client.ledger.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    leaf_hashes,
    perfect_root,
    verify_inclusion,
)
from number_recycling_client.ledger.note import Checkpoint, Verifier, open_checkpoint
from number_recycling_client.ledger.proof import TlogProof
from number_recycling_client.ledger.tiles import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    decode_bundle,
    encode_bundle,
    max_tile_bytes,
    split_hashes,
)

from pipelines.errors import CommitmentError, FormatError, LogIntegrityError, ProofError
from pipelines.ledger.log import CHECKPOINT_FILE, PENDING_FILE, frontier_root, is_beyond

if TYPE_CHECKING:
    import pyarrow as pa

# DuckDB and pyarrow are imported by the audit only, where they are used: verify_proof_file is
# what a light client (statement.py, a tenure statement's verifier) needs, without either.


def evidence_extra(entry: Entry, opening: bytes, value: CanonicalValue) -> bytes:
    """The ``extra`` of an evidence proof: ``entry (50) || opening (32) || canonical value``.

    The public entry comes first because its type and tenure_ref are needed to rebuild the
    leaf; the opening and value then let anyone recompute the commitment.
    """
    return entry.to_bytes() + opening + value.to_bytes()


@dataclass(frozen=True)
class VerifiedEntry:
    """What a verified evidence proof establishes."""

    index: int
    entry: Entry
    value: CanonicalValue
    checkpoint: Checkpoint


def verify_proof_file(data: bytes, vkey: str | Verifier, origin: str | None = None) -> VerifiedEntry:
    """Verify one ``.tlog-proof`` evidence file offline and return the opened entry.

    Checks, in order: the file format; the checkpoint's signature by ``vkey`` (and its origin,
    when given); the inclusion proof from the entry to the signed root; that the opening and
    canonical value in ``extra`` reproduce the entry's commitment (and, for a tenure_closed
    entry, its tenure_ref).
    """
    proof = TlogProof.from_bytes(data)
    checkpoint = open_checkpoint(proof.checkpoint, vkey, origin)
    extra = proof.extra
    if extra is None or len(extra) < ENTRY_SIZE + OPENING_SIZE:
        raise FormatError("tlog-proof: extra must hold the entry, its opening and its canonical value")
    entry = Entry.from_bytes(extra[:ENTRY_SIZE])
    opening = extra[ENTRY_SIZE : ENTRY_SIZE + OPENING_SIZE]
    value = CanonicalValue.from_bytes(extra[ENTRY_SIZE + OPENING_SIZE :])
    if proof.index >= checkpoint.size:
        raise ProofError(f"entry {proof.index} is not in the checkpointed tree of size {checkpoint.size}")
    verify_inclusion(leaf_hash(entry.to_bytes()), proof.index, checkpoint.size, proof.hashes, checkpoint.root)
    if commitment(opening, entry.entry_type, value.to_bytes()) != entry.commitment:
        raise CommitmentError(
            f"entry {proof.index}: the opening and value in the proof do not match the logged "
            "commitment; the value was altered"
        )
    if entry.entry_type == EntryType.TENURE_CLOSED and entry.tenure_ref != tenure_ref_for(entry.commitment):
        raise CommitmentError(f"entry {proof.index}: tenure_ref is not derived from its commitment")
    return VerifiedEntry(proof.index, entry, value, checkpoint)


@dataclass(frozen=True)
class LogReport:
    """Outcome of :func:`verify_log` (raised errors cover every failure)."""

    checkpoint: Checkpoint
    entries: int
    tiles_checked: int
    bundles_checked: int
    ignored_files: tuple[str, ...] = ()  # beyond the checkpoint (a crashed batch) or not tile paths
    # The tiles and entry bundles among ``ignored_files`` that only a larger tree has: written
    # after the signed checkpoint, covered by no signature (see ``beyond_checkpoint_advice``).
    beyond_checkpoint: tuple[str, ...] = ()
    pending: bool = False  # the writer's marker of a batch appended but not yet signed is present


@dataclass
class _Files:
    """Which tile files exist: (level, index) -> set of widths (256 = full)."""

    widths: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    beyond: list[str] = field(default_factory=list)


def _scan_files(ledger_dir: Path, size: int) -> _Files:
    files = _Files()
    tile_root = ledger_dir / "tile"
    for dirpath, _dirs, names in os.walk(tile_root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(ledger_dir).as_posix()
            if name.startswith("."):
                files.ignored.append(rel)
                continue
            try:
                tile = Tile.parse(rel)
            except FormatError:
                files.ignored.append(rel)
                continue
            if is_beyond(tile, size):
                files.ignored.append(rel)
                files.beyond.append(rel)
                continue
            files.widths.setdefault((tile.level, tile.index), set()).add(tile.width)
    files.ignored.sort()
    files.beyond.sort()
    return files


class _Checker:
    """Streams the entry bundles, recomputing every tile level and comparing with the files."""

    def __init__(self, ledger_dir: Path, size: int, files: _Files) -> None:
        self.dir = ledger_dir
        self.size = size
        self.files = files
        self.levels: list[list[bytes]] = [[]]
        self.tiles_checked = 0
        self.bundles_checked = 0

    def _read(self, tile: Tile) -> bytes:
        try:
            path = self.dir / tile.path
            if path.stat().st_size > max_tile_bytes(tile):
                raise LogIntegrityError(
                    f"{tile.path} is {path.stat().st_size} bytes, more than a {tile.width}-wide tile can "
                    "hold; the file was altered or replaced: restore it from a mirror or backup"
                )
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise LogIntegrityError(
                f"{tile.path} is missing but the checkpointed tree of size {self.size} needs it; "
                "restore it from a mirror or backup"
            ) from exc

    def check_tile(self, level: int, index: int, hashes: list[bytes]) -> None:
        """Compare the tile file of this size and every older partial of it with ``hashes``."""
        widths = self.files.widths.get((level, index), set())
        if len(hashes) not in widths:
            raise LogIntegrityError(
                f"{Tile(level, index, len(hashes)).path} is missing but the checkpointed tree of "
                f"size {self.size} needs it; restore it from a mirror or backup"
            )
        for width in sorted(widths):
            tile = Tile(level, index, width)
            stored = split_hashes(self._read(tile), tile.path)
            if len(stored) != width:
                raise LogIntegrityError(f"{tile.path}: holds {len(stored)} hashes, expected {width}")
            if stored != hashes[:width]:
                bad = next(i for i, (a, b) in enumerate(zip(stored, hashes, strict=False)) if a != b)
                what = "entry" if level == 0 else f"level-{level - 1} tile"
                raise LogIntegrityError(
                    f"{tile.path}: hash {bad} does not match the recomputed hash of {what} "
                    f"{(index << TILE_HEIGHT) + bad}; the tile or the data below it was altered"
                )
            self.tiles_checked += 1

    def check_bundle(self, index: int, width: int) -> list[bytes]:
        widths = self.files.widths.get((ENTRIES, index), set())
        if width not in widths:
            raise LogIntegrityError(
                f"{Tile(ENTRIES, index, width).path} is missing but the checkpointed tree of size "
                f"{self.size} needs it; restore it from a mirror or backup"
            )
        tile = Tile(ENTRIES, index, width)
        data = self._read(tile)
        entries = decode_bundle(data, width, tile.path)
        stride = ENTRY_SIZE + 2
        uniform = len(data) == width * stride
        # Version and type bytes of all entries at once (strided slices), a full parse only if off.
        if not (
            uniform and set(data[2::stride]) == {ENTRY_VERSION} and set(data[3::stride]) <= KNOWN_TYPE_CODES
        ):
            for i, e in enumerate(entries):
                try:
                    Entry.from_bytes(e)
                except FormatError as exc:
                    raise FormatError(f"{tile.path}: entry {(index << TILE_HEIGHT) + i}: {exc}") from exc
        for w in sorted(widths - {width}):
            other = Tile(ENTRIES, index, w)
            if self._read(other) != encode_bundle(entries[:w]):
                raise LogIntegrityError(
                    f"{other.path} differs from the first {w} entries of {tile.path}; one of them was altered"
                )
            self.bundles_checked += 1
        self.bundles_checked += 1
        return entries


class _Visitor:
    """Receives each verified bundle's entries, in log order."""

    def entries(self, first: int, entries: list[bytes]) -> None:
        raise NotImplementedError


def _scan_log(
    ledger_dir: Path, vkey: str | Verifier, origin: str | None, visit: _Visitor | None
) -> LogReport:
    try:
        note = (ledger_dir / CHECKPOINT_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise LogIntegrityError(
            f"{ledger_dir / CHECKPOINT_FILE} is missing: no signed checkpoint to verify against"
        ) from exc
    checkpoint = open_checkpoint(note, vkey, origin)
    size = checkpoint.size
    files = _scan_files(ledger_dir, size)
    checker = _Checker(ledger_dir, size, files)
    completed = [0] * 65  # full tiles completed per level, to name the next one
    n_bundles = (size + TILE_WIDTH - 1) >> TILE_HEIGHT
    for b in range(n_bundles):
        width = min(TILE_WIDTH, size - (b << TILE_HEIGHT))
        entries = checker.check_bundle(b, width)
        if visit is not None:
            visit.entries(b << TILE_HEIGHT, entries)
        hashes = leaf_hashes(entries)
        checker.check_tile(0, b, hashes)
        if width < TILE_WIDTH:
            checker.levels[0] = hashes
            break
        completed[0] += 1
        h = perfect_root(hashes)
        level = 1
        while True:
            if len(checker.levels) <= level:
                checker.levels.append([])
            checker.levels[level].append(h)
            if len(checker.levels[level]) < TILE_WIDTH:
                break
            full = checker.levels[level]
            checker.check_tile(level, completed[level], full)
            completed[level] += 1
            h = perfect_root(full)
            checker.levels[level] = []
            level += 1
    for level in range(1, len(checker.levels)):
        partial = checker.levels[level]
        if partial:
            checker.check_tile(level, completed[level], partial)
    root = frontier_root(checker.levels) if size else EMPTY_ROOT
    if root != checkpoint.root:
        raise LogIntegrityError(
            f"the entries hash to a different root than the signed checkpoint of size {size}: "
            "entries or tiles were altered after signing"
        )
    return LogReport(
        checkpoint,
        size,
        checker.tiles_checked,
        checker.bundles_checked,
        tuple(files.ignored),
        tuple(files.beyond),
        (ledger_dir / PENDING_FILE).exists(),
    )


def verify_log(ledger_dir: Path, vkey: str | Verifier, origin: str | None = None) -> LogReport:
    """Check the whole ledger (fsck): signed checkpoint, every bundle, tile and partial tile.

    Recomputes every leaf hash from the entry bundles, every tile level above, and the root,
    comparing each with the files on disk and the root with the signed checkpoint. Files
    beyond the checkpoint (a crashed, unpublished batch) are reported in ``ignored_files``
    and ``beyond_checkpoint``; :func:`beyond_checkpoint_advice` says what they mean.
    """
    return _scan_log(ledger_dir, vkey, origin, None)


def beyond_checkpoint_advice(report: LogReport) -> list[str]:
    """Warning lines for files the signed checkpoint does not cover; empty when there are none.

    A warning, not a failure, and the reason: the signed checkpoint alone says what the log
    holds, and everything up to its size verified; files past it are covered by no signature,
    so they neither add to nor take from that. The writer leaves them, by design, when a night
    stops between appending a batch and signing it (``log.py``'s crash protocol), and deletes
    them the next time it opens the ledger; failing on them would call every interrupted night
    tampering. They must still be seen: nothing in them may be relied on until a checkpoint
    covers them, and without the writer's pending marker nobody is known to have written them.
    """
    size = report.checkpoint.size
    lines: list[str] = []
    if report.beyond_checkpoint:
        shown = ", ".join(report.beyond_checkpoint[:5])
        more = f" and {len(report.beyond_checkpoint) - 5} more" if len(report.beyond_checkpoint) > 5 else ""
        why = (
            "the writer's pending marker is there: a night is appending now, or stopped after "
            "appending and before signing; if no night is running, rerun the last one "
            "(recycle run --date D): its ledger step removes them and appends again"
            if report.pending
            else "no pending marker says the ledger writer left them: if this is the carrier's ledger, "
            "find out what wrote them; on a mirror, sync it again from the carrier"
        )
        lines.append(
            f"WARNING: {len(report.beyond_checkpoint)} tile file(s) beyond the signed checkpoint of size "
            f"{size}, which no signature covers: {shown}{more}; {why}. Do not rely on them."
        )
    stray = sorted(set(report.ignored_files) - set(report.beyond_checkpoint))
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        lines.append(
            f"WARNING: {len(stray)} file(s) under tile/ that are not tiles of the log (ignored): {shown}; "
            "temporary files of an interrupted write are removed when the ledger is next opened"
        )
    return lines


@dataclass(frozen=True)
class AuditFinding:
    """One released (or violating) tenure in the audit report."""

    index: int  # of the released / released_with_exception / reissue_violation (/ effective) entry
    tenure_ref: str  # hex
    effective_reminders: int  # reminder_effective entries of the tenure at lower indices
    # effective_without_sent only: the tenure's reminder_sent entries at lower indices (fewer
    # than its reminder_effective entries up to and including this one)
    sent_reminders: int | None = None

    def describe(self) -> str:
        """One line for the operator: which entry, which tenure, what is wrong."""
        if self.sent_reminders is not None:
            return (
                f"entry {self.index} (tenure_ref {self.tenure_ref}): reminder_effective number "
                f"{self.effective_reminders} of the tenure, but only {self.sent_reminders} "
                "reminder_sent entries before it; a reminder was logged effective without being "
                "logged sent: open the tenure's entries (recycle evidence) to see which"
            )
        return (
            f"entry {self.index} (tenure_ref {self.tenure_ref}): "
            f"{self.effective_reminders} reminder_effective entries before it"
        )


@dataclass(frozen=True)
class AuditReport:
    """Outcome of :func:`audit_log`: ``passed`` is False when a release broke the rule."""

    checkpoint: Checkpoint
    min_effective: int
    counts: dict[str, int]  # entries per type label
    released: int
    under_reminded: tuple[AuditFinding, ...]  # released with fewer than min_effective
    exceptions: tuple[AuditFinding, ...]  # released_with_exception (allowed, reported)
    violations: tuple[AuditFinding, ...]  # reissue_violation entries
    released_without_closure: tuple[AuditFinding, ...]  # no tenure_closed entry before the release
    # reminder_effective entries outnumbering their tenure's reminder_sent entries before them
    effective_without_sent: tuple[AuditFinding, ...] = ()

    @property
    def passed(self) -> bool:
        return not (self.under_reminded or self.released_without_closure or self.effective_without_sent)


class _EntryCollector(_Visitor):
    """Keeps the verified entries as one 50-bytes-per-entry blob for set-based queries."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.count = 0

    def entries(self, first: int, entries: list[bytes]) -> None:
        self.chunks.append(b"".join(entries))
        self.count += len(entries)

    def table(self) -> pa.Table:
        """Columns ``idx`` (u64), ``etype`` (u8) and ``ref`` (16 bytes), built without a per-entry loop."""
        import pyarrow as pa
        import pyarrow.compute as pc

        blob, n = b"".join(self.chunks), self.count
        self.chunks = []  # 50 bytes an entry: do not hold the log twice
        entries = pa.Array.from_buffers(pa.binary(ENTRY_SIZE), n, [None, pa.py_buffer(blob)])
        return pa.table(
            {
                "idx": pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(array("Q", range(n)))]),
                "etype": pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(blob[1::ENTRY_SIZE])]),
                "ref": pc.binary_slice(entries, 2, 2 + TENURE_REF_SIZE),
            }
        )


# Every release/exception/violation with the reminder_effective entries of its tenure_ref at lower
# indices, and the first tenure_closed entry of that tenure_ref. One pass of hash joins.
_AUDIT_SQL = f"""
WITH closed AS (
    SELECT ref, min(idx) AS first_closed FROM log WHERE etype = {int(EntryType.TENURE_CLOSED)} GROUP BY ref
), eff AS (
    SELECT ref, idx FROM log WHERE etype = {int(EntryType.REMINDER_EFFECTIVE)}
), gated AS (
    SELECT idx, etype, ref FROM log WHERE etype IN (
        {int(EntryType.RELEASED)}, {int(EntryType.RELEASED_WITH_EXCEPTION)}, {int(EntryType.REISSUE_VIOLATION)})
)
SELECT g.idx, g.etype, g.ref, count(e.idx) AS effective,
       coalesce(any_value(c.first_closed) < g.idx, false) AS closed_before
FROM gated g
LEFT JOIN eff e ON e.ref = g.ref AND e.idx < g.idx
LEFT JOIN closed c ON c.ref = g.ref
GROUP BY g.idx, g.etype, g.ref
HAVING g.etype <> {int(EntryType.RELEASED)} OR count(e.idx) < $min_effective OR NOT closed_before
ORDER BY g.idx
"""


# Every reminder_effective entry that makes its tenure's reminder_effective entries outnumber the
# reminder_sent entries before it. The public entry shows type and tenure_ref, not which reminder
# (that is inside the commitment), so the pairing is by count per tenure: at each effective entry,
# effective-so-far <= sent-before. Running sums over one window per tenure; sent and effective
# entries never share an index.
_UNSENT_SQL = f"""
WITH r AS (
    SELECT idx, etype, ref,
           count(*) FILTER (WHERE etype = {int(EntryType.REMINDER_SENT)}) OVER w AS sent,
           count(*) FILTER (WHERE etype = {int(EntryType.REMINDER_EFFECTIVE)}) OVER w AS effective
    FROM log
    WHERE etype IN ({int(EntryType.REMINDER_SENT)}, {int(EntryType.REMINDER_EFFECTIVE)})
    WINDOW w AS (PARTITION BY ref ORDER BY idx ROWS UNBOUNDED PRECEDING)
)
SELECT idx, ref, effective, sent FROM r
WHERE etype = {int(EntryType.REMINDER_EFFECTIVE)} AND effective > sent
ORDER BY idx
"""


def audit_log(
    ledger_dir: Path, vkey: str | Verifier, min_effective: int, origin: str | None = None
) -> AuditReport:
    """From the public log alone: every ``released`` tenure had ``min_effective`` reminders.

    Verifies the log first (as :func:`verify_log`), then counts, for each ``released`` entry,
    the ``reminder_effective`` entries with the same tenure_ref at lower indices (set-based,
    in DuckDB over Arrow columns of the verified entries). ``released_with_exception`` entries
    may have fewer and are listed; ``reissue_violation`` entries are listed; a release whose
    tenure_ref has no earlier ``tenure_closed`` entry is listed. A ``reminder_effective``
    entry is listed (and fails the audit) when its tenure's ``reminder_effective`` entries up
    to it outnumber the tenure's ``reminder_sent`` entries before it: a reminder logged
    effective was never logged sent (per tenure, as the public entry does not name the
    reminder). The public log cannot show whether the reminders fell on distinct days; that
    needs the openings.
    """
    import duckdb

    collector = _EntryCollector()
    report = _scan_log(ledger_dir, vkey, origin, collector)
    con = duckdb.connect()
    try:
        con.register("log", collector.table())
        counts = con.execute("SELECT etype, count(*) FROM log GROUP BY etype ORDER BY etype").fetchall()
        rows = con.execute(_AUDIT_SQL, {"min_effective": min_effective}).fetchall()
        unsent = con.execute(_UNSENT_SQL).fetchall()
    finally:
        con.close()
    under: list[AuditFinding] = []
    exceptions: list[AuditFinding] = []
    violations: list[AuditFinding] = []
    orphans: list[AuditFinding] = []
    for idx, etype, ref, effective, closed_before in rows:
        finding = AuditFinding(int(idx), bytes(ref).hex(), int(effective))
        if etype == EntryType.REISSUE_VIOLATION:
            violations.append(finding)
            continue
        if not closed_before:
            orphans.append(finding)
        if etype == EntryType.RELEASED_WITH_EXCEPTION:
            exceptions.append(finding)
        elif effective < min_effective:
            under.append(finding)
    by_type = {EntryType(int(t)).label: int(n) for t, n in counts}
    return AuditReport(
        checkpoint=report.checkpoint,
        min_effective=min_effective,
        counts=by_type,
        released=by_type.get(EntryType.RELEASED.label, 0),
        under_reminded=tuple(under),
        exceptions=tuple(exceptions),
        violations=tuple(violations),
        released_without_closure=tuple(orphans),
        effective_without_sent=tuple(
            AuditFinding(int(idx), bytes(ref).hex(), int(eff), int(sent)) for idx, ref, eff, sent in unsent
        ),
    )
