"""The tiled log on disk: tiles and partials, reopen, proofs from disk, crashes, the writer lock."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from ledger_testkit import ORIGIN, LedgerEnv, MemoryTree, tenure_entries
from number_recycling_client.ledger.merkle import (
    EMPTY_ROOT,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from number_recycling_client.ledger.proof import TileReader, consistency_proof, inclusion_proof
from number_recycling_client.ledger.tiles import ENTRIES, Tile, decode_bundle, tiles_for_size

from pipelines.errors import LogIntegrityError, TransientError
from pipelines.ledger import verify_log
from pipelines.ledger.log import PENDING_FILE, TiledLog, WriterLock


def _entries(n: int, start: int = 0) -> list[bytes]:
    return [b"entry-%d" % i for i in range(start, start + n)]


def _files(ledger_dir: Path) -> set[Tile]:
    root = ledger_dir / "tile"
    return {Tile.parse(p.relative_to(ledger_dir).as_posix()) for p in root.rglob("*") if p.is_file()}


def test_70000_entries_in_batches_match_the_reference_tree(tmp_path: Path) -> None:
    batch_ends = [1, 256, 257, 300, 65536, 65537, 70000]
    entries = _entries(70000)
    tree = MemoryTree(entries)
    lock = WriterLock(tmp_path)
    log = TiledLog.load(tmp_path, lock, 0, EMPTY_ROOT)
    start = 0
    for end in batch_ends:
        assert log.append(entries[start:end]) == start
        assert log.size == end and log.root() == root_of(tree.leaves[:end])
        start = end
    log.close()

    files = _files(tmp_path)
    expected_final = set(tiles_for_size(70000, entries=True))
    assert expected_final <= files
    # Every batch end left its partial tiles behind (a checkpoint may have been taken there).
    for end in batch_ends:
        assert {t for t in tiles_for_size(end, entries=True) if t.is_partial} <= files
    assert (tmp_path / "tile/2/000.p/1").read_bytes() == tree.node(16, 0)
    assert (tmp_path / "tile/1/001.p/17").read_bytes() == b"".join(tree.node(8, 256 + i) for i in range(17))
    assert decode_bundle((tmp_path / "tile/entries/005").read_bytes(), 256) == entries[1280:1536]
    assert decode_bundle((tmp_path / "tile/entries/273.p/112").read_bytes(), 112) == entries[69888:]

    reader = TileReader(tmp_path, 70000)
    rng = random.Random(4)
    sizes = [*batch_ends, *(rng.randint(1, 70000) for _ in range(6))]
    roots = {n: root_of(tree.leaves[:n]) for n in {0, *sizes}}  # the oracle is slow: few sizes
    for _ in range(40):
        size = rng.choice(sizes)
        index = rng.randrange(size)
        proof = inclusion_proof(reader, index, size)
        verify_inclusion(tree.leaves[index], index, size, proof, roots[size])
        old = rng.choice([n for n in roots if n <= size])
        cons = consistency_proof(reader, old, size)
        verify_consistency(old, size, cons, roots[old], roots[size])
        assert reader.entry(index) == entries[index]


def test_reopen_resumes_from_partial_tiles(tmp_path: Path) -> None:
    entries = _entries(1000)
    tree = MemoryTree(entries)
    lock = WriterLock(tmp_path)
    log = TiledLog.load(tmp_path, lock, 0, EMPTY_ROOT)
    log.append(entries[:600])
    log.write_checkpoint(b"(note)", 600)
    log.close()
    log = TiledLog.load(tmp_path, WriterLock(tmp_path), 600, root_of(tree.leaves[:600]))
    log.append(entries[600:])
    assert log.root() == root_of(tree.leaves)
    log.close()
    with pytest.raises(LogIntegrityError, match="do not hash to the checkpoint root"):
        TiledLog.load(tmp_path, WriterLock(tmp_path), 600, root_of(tree.leaves[:599]))


def test_damaged_partial_tile_is_detected_on_reopen(tmp_path: Path) -> None:
    entries = _entries(300)
    lock = WriterLock(tmp_path)
    log = TiledLog.load(tmp_path, lock, 0, EMPTY_ROOT)
    log.append(entries)
    log.close()
    path = tmp_path / "tile/0/001.p/44"
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(LogIntegrityError):
        TiledLog.load(tmp_path, WriterLock(tmp_path), 300, root_of(MemoryTree(entries).leaves))


def test_second_writer_is_locked_out(env: LedgerEnv) -> None:
    with env.open(), pytest.raises(TransientError, match="another process is writing"):
        env.open()
    env.open().close()  # released on close


def test_crash_between_tiles_and_checkpoint_then_reopen_and_append(env: LedgerEnv) -> None:
    with env.open() as ledger:
        ledger.append(tenure_entries(30, prefix="a"))
        published = ledger.publish_checkpoint()
        ledger.append(tenure_entries(80, prefix="lost"))  # tiles written, never checkpointed
        assert (env.ledger_dir / PENDING_FILE).exists()
        lost_size = ledger.size
    # "Crash": the process ends without publish_checkpoint.
    stale = {t for t in _files(env.ledger_dir) if t not in set(tiles_for_size(published.size, entries=True))}
    assert any(t.width == lost_size % 256 for t in stale)
    with env.open() as ledger:
        assert ledger.size == published.size
        assert ledger.index_of("lost0:closed") is None  # its opening was rolled back too
        assert not (env.ledger_dir / PENDING_FILE).exists()
        assert all(
            not (env.ledger_dir / t.path).exists()
            for t in stale
            if t.width == lost_size % 256 and t.is_partial
        )
        indices = ledger.append(tenure_entries(50, prefix="b"))
        assert indices[0] == published.size
        final = ledger.publish_checkpoint()
        proof = ledger.consistency_proof(published.size)
        verify_consistency(published.size, final.size, proof, published.root, final.root)
    report = verify_log(env.ledger_dir, env.signer.vkey, ORIGIN)
    assert report.entries == final.size and report.ignored_files == ()


def test_signed_but_unwritten_checkpoint_is_rolled_forward(env: LedgerEnv) -> None:
    with env.open() as ledger:
        ledger.append(tenure_entries(10))
        ledger.publish_checkpoint()
        ledger.append(tenure_entries(10, prefix="more"))
        size = ledger.size
        # Crash after the signer recorded the signature but before the checkpoint file was written.
        from number_recycling_client.ledger.note import Checkpoint

        cp = Checkpoint(ORIGIN, size, ledger._log.root())
        env.signer.sign_checkpoint(cp, ledger.consistency_proof(ledger.checkpoint.size, size))  # type: ignore[union-attr]
    with env.open() as ledger:
        assert ledger.size == size and ledger.checkpoint == cp
        assert ledger.index_of("more3:released") is not None
    verify_log(env.ledger_dir, env.signer.vkey, ORIGIN)


def test_tmp_files_left_by_a_crash_are_ignored_and_cleaned(env: LedgerEnv) -> None:
    with env.open() as ledger:
        ledger.append(tenure_entries(3))
        ledger.publish_checkpoint()
        ledger.append(tenure_entries(3, prefix="x"))
    leftover = env.ledger_dir / "tile/0/.000.p.abc.tmp"
    leftover.write_bytes(b"half a tile")
    os.utime(leftover)
    assert ".000.p.abc.tmp" in str(verify_log(env.ledger_dir, env.signer.vkey).ignored_files)
    env.open().close()  # the pending marker makes the reopen clean up
    assert not leftover.exists()
    assert Tile(ENTRIES, 0, 12) in _files(env.ledger_dir)
