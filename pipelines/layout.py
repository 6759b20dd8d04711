"""Where everything lives under the data directory. One place for every path rule."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


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

    def quarantine_dir(self, day: dt.date) -> Path:
        return self.root / "quarantine" / day.isoformat()

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
