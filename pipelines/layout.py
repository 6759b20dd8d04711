"""Where everything lives under the data directory. One place for every path rule."""

from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    """Paths under ``data_dir`` (``./var`` by default)."""

    root: Path

    def inbox(self, day: dt.date) -> Path:
        """Drop files for logical date ``day``: ``inbox/<YYYY-MM-DD>/``."""
        return self.root / "inbox" / day.isoformat()

    @property
    def state_db(self) -> Path:
        """The nightly run's DuckDB state file (one writer; the server never opens it)."""
        return self.root / "state.duckdb"

    def run_dir(self, day: dt.date) -> Path:
        """Per-run artefacts: GX validation results, run summary."""
        return self.root / "runs" / day.isoformat()

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    @property
    def feeds_dir(self) -> Path:
        return self.root / "feeds"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def private_dir(self) -> Path:
        """Never published: encrypted ledger openings and other carrier-only material."""
        return self.root / "private"

    @property
    def snapshot_dir(self) -> Path:
        """Immutable query snapshots published for the server."""
        return self.root / "snapshot"

    @property
    def cache_dir(self) -> Path:
        """Derived data kept between runs to save time (e.g. decided phone-number classes); safe to delete."""
        return self.root / "cache"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask() is process-wide and not safe to flip while threads write.
_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half of one.

    ``mode`` defaults to what a plain ``open()`` would give (0o666 minus the umask); pass
    ``0o600`` for secrets.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, (0o666 & ~_UMASK) if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------- private files
#
# The one rule for files at rest: a file holding numbers or contacts (the state file and its
# WAL and spill directory, query snapshots, the server's token,
# acknowledgement and audit files, the letters batch) is created 0600 in directories 0700;
# published files (feeds/, ledger tiles and checkpoint, keys/*.pub, vkey) keep the umask's
# world-readable modes.
#
# Why explicit modes and not a process-wide ``umask 077`` set once at start: the public tree
# is written by plain ``open()``/``mkdir()`` in many places (feeds, tiles, checkpoint) and is
# copied to a CDN by another user, so a restrictive umask would silently lock the published
# files away; and a library call (tests, Airflow tasks) never goes through a CLI start. Explicit
# modes here keep public and private decided per file, in one place. The one exception is
# DuckDB's ``.wal``, which DuckDB deletes at every checkpoint and re-creates with the process
# umask: :func:`private_umask` narrows the umask around DuckDB's commits only (see
# ``pipelines.db.client``).

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path, top: Path | None = None) -> Path:
    """Create ``path`` (and its missing parents) and make every directory from ``top`` down to
    ``path`` mode 0700 (``top`` defaults to ``path``): a directory of personal data."""
    top = path if top is None else top
    chain = [path, *path.parents]
    if top not in chain:
        raise ValueError(f"{top} is not {path} or one of its parents")
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    for directory in chain[: chain.index(top) + 1]:
        if stat.S_IMODE(directory.stat().st_mode) != PRIVATE_DIR_MODE:
            os.chmod(directory, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, data: bytes, top: Path | None = None) -> None:
    """``atomic_write_bytes`` of a personal-data file: mode 0600 in a 0700 directory (every
    directory from ``top`` down to the file's, see :func:`private_dir`)."""
    private_dir(path.parent, top)
    atomic_write_bytes(path, data, mode=PRIVATE_FILE_MODE)


def create_private(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist: FileExistsError) with mode 0600 and write ``data``: a
    personal-data file written outside the data directory on the operator's request, in a
    directory the operator chose (so its mode is theirs: not changed here)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask
            fh.write(data)
            fh.flush()
            os.fsync(fd)
        except BaseException:
            path.unlink(missing_ok=True)  # no half-written export left behind
            raise


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600, or make an existing one 0600 (one written by an
    older version), before a library opens it with its own mode (SQLite gives its journals
    the database file's mode)."""
    os.close(open_private_append(path))


def open_private_append(path: Path) -> int:
    """A file descriptor appending to ``path``, created 0600 if new and made 0600 if not."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def check_private(path: Path) -> None:
    """Refuse (ConfigError, a terminal error) a personal-data file others can read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise ConfigError(
            f"{path} holds personal data but is readable by other users (mode {mode:04o}); "
            f"run `chmod 600 {path}` and start again"
        )


_UMASK_LOCK = threading.RLock()


@contextmanager
def private_umask() -> Iterator[None]:
    """Narrow the process umask to 077 for a block (files created in it are 0600, directories
    0700), for a library that creates files by itself with the umask's mode (DuckDB's WAL).
    Process-wide while it lasts: keep the block short and free of public writes."""
    with _UMASK_LOCK:
        before = os.umask(0o077)
        try:
            yield
        finally:
            os.umask(before)
