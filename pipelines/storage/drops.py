"""Drops arrive in storage (``inbox/<D>/`` under the storage root: the BSS uploads there) and
ingest reads the local ``<data>/inbox/<D>/``: :func:`fetch_drops` copies one to the other
before ingest, and sends up the drops the night itself wrote locally (receipts the send step
wrote for D+1), so storage holds every drop a night read (a rebuilt worker can replay it).

A drop is personal data (numbers, contacts): the local copy is 0600 in 0700 directories, like
every file at rest (:mod:`pipelines.layout`). Published names never change meaning: a drop
already here under the same name with other bytes is refused, never overwritten, because the
file registry (ingest) keys on the name and the night may already have read the other one.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import StorageConflictError
from pipelines.layout import Layout, write_private
from pipelines.storage.store import Storage

if TYPE_CHECKING:
    from pipelines.config import Settings

log = logging.getLogger(__name__)


def drop_names(settings: Settings, day: dt.date) -> list[str]:
    """The drop files of ``day`` in storage (top level of ``inbox/<D>/``, no dot names); [] when
    the storage is the data directory (the preflight looks there itself)."""
    storage = Storage.from_settings(settings)
    if storage.local:
        return []
    prefix = f"inbox/{day.isoformat()}/"
    return sorted(
        rel.removeprefix(prefix) for rel in storage.listing(prefix) if "/" not in rel.removeprefix(prefix)
    )


def fetch_drops(settings: Settings, day: dt.date) -> list[str]:
    """Copy ``day``'s drops from storage into the local inbox (names fetched), then upload the
    local drops storage lacks. StorageConflictError when one name holds two different files."""
    storage = Storage.from_settings(settings)
    if storage.local:
        return []
    root = Path(settings.data_dir)
    inbox = Layout(root).inbox(day)
    prefix = f"inbox/{day.isoformat()}"
    remote = storage.listing(prefix)
    fetched = []
    for rel in sorted(remote):
        name = rel.removeprefix(prefix + "/")
        if "/" in name:
            log.warning("storage: %s is in a folder of the inbox; ingest reads no folders", rel)
            continue
        data = storage.read_bytes(rel)
        target = inbox / name
        if target.exists() or target.is_symlink():
            if not target.is_file() or target.is_symlink() or target.read_bytes() != data:
                raise StorageConflictError(
                    f"drop {name}: {storage.describe(rel)} and {target} differ under one name; a "
                    "corrected drop goes in under a new name. Remove the wrong one, then run the "
                    f"night again: recycle run --date {day}"
                )
            continue
        write_private(target, data, top=root / "inbox")
        fetched.append(name)
    local_only = push_local_drops(settings, day, remote)
    if fetched or local_only:
        log.info("storage: inbox %s: %d drop(s) fetched, %d sent up", day, len(fetched), len(local_only))
    return fetched


def push_local_drops(settings: Settings, day: dt.date, remote: dict[str, int] | None = None) -> list[str]:
    """Upload the drops of ``inbox/<D>/`` written here (receipts the send step wrote for the
    next night) that storage lacks; their names. ``remote``: storage's listing, if already read."""
    storage = Storage.from_settings(settings)
    inbox = Layout(Path(settings.data_dir)).inbox(day)
    if storage.local or not inbox.is_dir():
        return []
    prefix = f"inbox/{day.isoformat()}"
    remote = storage.listing(prefix) if remote is None else remote
    local_only = [
        p.name
        for p in sorted(inbox.iterdir())
        if p.is_file()
        and not p.is_symlink()
        and not p.name.startswith(".")
        and f"{prefix}/{p.name}" not in remote
    ]
    for name in local_only:
        storage.write_bytes(f"{prefix}/{name}", (inbox / name).read_bytes())
    return local_only
