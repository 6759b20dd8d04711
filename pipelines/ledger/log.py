"""The tiled Merkle log writer: batch appends, crash-safe tile writes, checkpoint file.

Only the right edge of the tree (the "frontier": the partial tile of each level and the
partial entry bundle, at most 255 hashes per level) lives in memory; everything else is on
disk. On open the log trusts its checkpoint: it reloads the partial tiles of that size from
disk, checks they hash to the checkpoint's root, and ignores (and, after a crash, deletes)
anything written beyond it, so the next append repairs a half-finished batch.

Write order makes crashes harmless. A batch's tiles and bundles go to temp files (in worker
threads), then one filesystem sync makes their bytes durable, then each is renamed into place,
then a second sync makes the renames durable - all before ``append`` returns - and only then
may :meth:`TiledLog.write_checkpoint` write the checkpoint (``atomic_write_bytes``). So no tile
is ever visible half-written, and no checkpoint names a tile that could vanish in a crash.
This is ``atomic_write_bytes``'s temp-fsync-rename protocol, batched: a per-file fsync costs
0.3-1.5 ms on our disks and would cap appends far below the nightly volume; two ``syncfs(2)``
calls per batch cost tens of milliseconds (where ``syncfs`` is missing, each temp file and
directory is fsynced instead). A tile file that already exists is never rewritten: its content
is fixed by the entries below it, which are committed (stale files beyond the checkpoint are
deleted on open), so committed files are never exposed to a torn rewrite.
A ``.lock`` file held with ``fcntl.flock`` keeps a second writer out.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from number_recycling_client.ledger.merkle import (
    EMPTY_ROOT,
    fold_subtrees,
    leaf_hashes,
    perfect_root,
)
from number_recycling_client.ledger.tiles import (
    ENTRIES,
    MAX_ENTRY_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    decode_bundle,
    encode_bundle,
    partial_width,
    split_hashes,
)

from pipelines.errors import (
    FormatError,
    LogIntegrityError,
    TerminalError,
    TransientError,
)
from pipelines.layout import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint"
VKEY_FILE = "vkey"
LOCK_FILE = ".lock"
PENDING_FILE = ".pending"  # present while tiles exist beyond the last checkpoint


class WriterLock:
    """Exclusive writer lock on a ledger directory (``fcntl.flock`` on ``<dir>/.lock``)."""

    def __init__(self, ledger_dir: Path, timeout_s: float = 30.0) -> None:
        ledger_dir.mkdir(parents=True, exist_ok=True)
        self.path = ledger_dir / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise TransientError(
                        f"another process is writing the ledger in {ledger_dir} (lock {self.path} "
                        f"held for more than {timeout_s:g}s); wait for it to finish and retry"
                    ) from None
                time.sleep(0.05)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def frontier_root(levels: Sequence[Sequence[bytes]]) -> bytes:
    """Tree root from the partial tile of every level (highest level = leftmost subtrees)."""
    subtrees: list[bytes] = []
    for hashes in reversed(levels):
        pos, n = 0, len(hashes)
        while pos < n:
            width = 1 << ((n - pos).bit_length() - 1)
            subtrees.append(perfect_root(hashes[pos : pos + width]))
            pos += width
    return fold_subtrees(subtrees)


def is_beyond(tile: Tile, size: int) -> bool:
    """True when ``tile`` could only have been written for a tree larger than ``size``."""
    level = max(tile.level, 0)
    return (tile.index << (TILE_HEIGHT * (level + 1))) + (tile.width << (TILE_HEIGHT * level)) > size


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_SYNCFS = _load_syncfs()


def _sync_filesystem(path: str) -> None:
    """``syncfs(2)`` on the filesystem holding ``path``: everything written so far is durable."""
    assert _SYNCFS is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}", path)
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(final: str, tmp: str, data: bytes, fsync: bool) -> bool:
    """Write ``tmp`` unless ``final`` exists (a tile's content never changes); True if written."""
    if os.path.exists(final):
        return False
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return True


class _TileBatch:
    """The files of one append: temp files in parallel, sync, renames, sync (see module doc)."""

    def __init__(self, root: Path, pool: ThreadPoolExecutor) -> None:
        self.root = str(root)
        self.pool = pool
        self.writes: list[tuple[Future[bool], str, str]] = []
        self.new_dirs: set[str] = set()
        self.seen_dirs: set[str] = set()

    def add(self, tile: Tile, data: bytes) -> None:
        path = os.path.join(self.root, tile.path)
        directory = os.path.dirname(path)
        if directory not in self.seen_dirs:
            self.seen_dirs.add(directory)
            missing = directory
            while not os.path.isdir(missing):
                self.new_dirs.add(missing)
                missing = os.path.dirname(missing)
            self.new_dirs.add(missing)  # its entries change
            os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, "." + os.path.basename(path) + ".tmp")
        # Even the existence check runs in the worker: a syscall in this (hashing) thread
        # hands the GIL to the writers and can wait a whole switch interval to get it back.
        self.writes.append((self.pool.submit(_write_temp, path, tmp, data, _SYNCFS is None), tmp, path))

    def commit(self) -> None:
        renames = [(tmp, path) for fut, tmp, path in self.writes if fut.result()]
        if not renames:
            return
        if _SYNCFS is not None:
            _sync_filesystem(self.root)
        for tmp, path in renames:
            os.replace(tmp, path)
        if _SYNCFS is not None:
            _sync_filesystem(self.root)
        else:
            for directory in sorted(self.seen_dirs | self.new_dirs):
                _fsync_path(directory)


class TiledLog:
    """Append-only writer over one ledger directory. Use :meth:`load` under a :class:`WriterLock`."""

    def __init__(
        self,
        ledger_dir: Path,
        lock: WriterLock,
        size: int,
        levels: list[list[bytes]],
        bundle: list[bytes],
        workers: int,
    ) -> None:
        self.dir = ledger_dir
        self._lock = lock
        self._size = size
        self._checkpointed = size
        self._levels = levels
        self._bundle = bundle
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-writer")
        self._broken: str | None = None

    @classmethod
    def load(
        cls, ledger_dir: Path, lock: WriterLock, size: int, root: bytes, *, workers: int = 8
    ) -> TiledLog:
        """Resume the log at a trusted checkpoint (``size``, ``root``) from its partial tiles."""
        if not lock.held:
            raise TerminalError("TiledLog.load needs a held WriterLock")
        levels: list[list[bytes]] = []
        level = 0
        while size >> (TILE_HEIGHT * level):
            width = partial_width(size, level)
            hashes: list[bytes] = []
            if width:
                tile = Tile(level, size >> (TILE_HEIGHT * (level + 1)), width)
                hashes = split_hashes(_read_required(ledger_dir, tile, size), tile.path)
                if len(hashes) != width:
                    raise LogIntegrityError(f"{tile.path}: holds {len(hashes)} hashes, expected {width}")
            levels.append(hashes)
            level += 1
        bundle: list[bytes] = []
        if size % TILE_WIDTH:
            tile = Tile(ENTRIES, size >> TILE_HEIGHT, size % TILE_WIDTH)
            bundle = decode_bundle(_read_required(ledger_dir, tile, size), tile.width, tile.path)
            if leaf_hashes(bundle) != levels[0]:
                raise LogIntegrityError(
                    f"{tile.path} does not hash to tile/0 of the same size; the ledger is damaged. "
                    "Run verify_log to locate the damage and restore from a mirror"
                )
        got = frontier_root(levels) if size else EMPTY_ROOT
        if got != root:
            raise LogIntegrityError(
                f"the partial tiles for size {size} do not hash to the checkpoint root; the ledger "
                "is damaged. Run verify_log to locate the damage and restore from a mirror"
            )
        log = cls(ledger_dir, lock, size, levels, bundle, workers)
        if (ledger_dir / PENDING_FILE).exists():
            log._prune_beyond(size)
        return log

    @property
    def size(self) -> int:
        """Entries appended so far (the checkpointed ones and any appended since)."""
        return self._size

    @property
    def checkpointed_size(self) -> int:
        return self._checkpointed

    def root(self) -> bytes:
        """Root hash of the tree at the current :attr:`size`."""
        return frontier_root(self._levels) if self._size else EMPTY_ROOT

    def _check_usable(self) -> None:
        if self._broken:
            raise TerminalError(
                f"ledger writer unusable after an earlier failure ({self._broken}); reopen it"
            )
        if not self._lock.held:
            raise TerminalError("the ledger writer lock was released; reopen the ledger")

    def append(self, entries: Sequence[bytes]) -> int:
        """Append ``entries`` in one batch; return the index of the first. Tiles are durable on return."""
        self._check_usable()
        first = self._size
        if not entries:
            return first
        if max(map(len, entries)) > MAX_ENTRY_SIZE:
            raise TerminalError(f"a ledger entry is longer than {MAX_ENTRY_SIZE} bytes")
        if not (self.dir / PENDING_FILE).exists():
            atomic_write_bytes(self.dir / PENDING_FILE, b"")
        leaves = leaf_hashes(entries)
        levels = [list(h) for h in self._levels] or [[]]
        bundle = list(self._bundle)
        batch = _TileBatch(self.dir, self._pool)
        size, pos, n = first, 0, len(entries)
        level0 = levels[0]
        try:
            while pos < n:
                take = min(TILE_WIDTH - len(level0), n - pos)
                level0.extend(leaves[pos : pos + take])
                bundle.extend(entries[pos : pos + take])
                pos += take
                size += take
                if len(level0) == TILE_WIDTH:
                    index = (size >> TILE_HEIGHT) - 1
                    batch.add(Tile(0, index), b"".join(level0))
                    batch.add(Tile(ENTRIES, index), encode_bundle(bundle))
                    self._carry(levels, perfect_root(level0), size, batch)
                    level0.clear()
                    bundle.clear()
            for level, hashes in enumerate(levels):
                if hashes:
                    tile = Tile(level, size >> (TILE_HEIGHT * (level + 1)), len(hashes))
                    batch.add(tile, b"".join(hashes))
            if bundle:
                batch.add(Tile(ENTRIES, size >> TILE_HEIGHT, len(bundle)), encode_bundle(bundle))
            batch.commit()
        except OSError as exc:
            self._broken = f"tile write failed: {exc}"
            raise TransientError(
                f"writing ledger tiles in {self.dir} failed ({exc}); nothing beyond the last checkpoint "
                "counts: reopen the ledger and rerun the batch"
            ) from exc
        except BaseException as exc:
            self._broken = f"append interrupted: {exc!r}"
            raise
        self._levels, self._bundle, self._size = levels, bundle, size
        return first

    def _carry(self, levels: list[list[bytes]], h: bytes, size: int, batch: _TileBatch) -> None:
        level = 1
        while True:
            if len(levels) <= level:
                levels.append([])
            levels[level].append(h)
            if len(levels[level]) < TILE_WIDTH:
                return
            index = (size >> (TILE_HEIGHT * (level + 1))) - 1
            batch.add(Tile(level, index), b"".join(levels[level]))
            h = perfect_root(levels[level])
            levels[level] = []
            level += 1

    def write_checkpoint(self, signed_note: bytes, size: int) -> None:
        """Publish a signed checkpoint for ``size`` (must be the current size; tiles are on disk)."""
        self._check_usable()
        if size != self._size:
            raise TerminalError(f"checkpoint for size {size} but the log holds {self._size} entries")
        atomic_write_bytes(self.dir / CHECKPOINT_FILE, signed_note)
        self._checkpointed = size
        (self.dir / PENDING_FILE).unlink(missing_ok=True)

    def _prune_beyond(self, size: int) -> None:
        """Delete tiles and bundles that only a tree larger than ``size`` has (left by a crash)."""
        tile_root = self.dir / "tile"
        for dirpath, _dirnames, filenames in os.walk(tile_root):
            for fname in filenames:
                path = Path(dirpath) / fname
                if fname.startswith("."):  # an atomic_write_bytes temp file a crash left behind
                    path.unlink(missing_ok=True)
                    continue
                try:
                    tile = Tile.parse(path.relative_to(self.dir).as_posix())
                except FormatError:
                    continue
                if is_beyond(tile, size):
                    path.unlink(missing_ok=True)
        (self.dir / PENDING_FILE).unlink(missing_ok=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._lock.release()


def _read_required(ledger_dir: Path, tile: Tile, size: int) -> bytes:
    try:
        return (ledger_dir / tile.path).read_bytes()
    except FileNotFoundError as exc:
        raise LogIntegrityError(
            f"{tile.path} is missing, but the tree of size {size} needs it; restore the ledger "
            f"directory {ledger_dir} from backup or a mirror"
        ) from exc
