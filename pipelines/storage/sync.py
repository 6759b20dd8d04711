"""The other direction, for a rebuilt worker: :func:`pull` copies what storage holds of the
ledger, the feeds and the query snapshot into the data directory (in the same reader-safe order
as publication: tiles before checkpoint, files before timestamp, snapshot before pointer);
:func:`status` lists what the data directory holds that storage lacks (`recycle storage status`).

A pull never moves the data directory backwards: a local ledger or feed newer than storage's is
left alone and said so (publish it instead)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.layout import atomic_write_bytes, write_private
from pipelines.ledger.log import CHECKPOINT_FILE
from pipelines.storage.publish import _Pusher, checkpoint_size, local_files
from pipelines.storage.store import Storage

if TYPE_CHECKING:
    from pipelines.config import Settings

log = logging.getLogger(__name__)

AREAS: tuple[str, ...] = ("ledger", "feeds", "snapshot")
STATUS_AREAS: tuple[str, ...] = ("inbox", "runs", "ledger", "feeds", "snapshot")


@dataclass
class PullReport:
    fetched: dict[str, list[str]] = field(default_factory=dict)  # area -> paths written
    skipped: dict[str, str] = field(default_factory=dict)  # area -> why nothing was pulled


def pull(settings: Settings, what: tuple[str, ...] = AREAS) -> PullReport:
    storage = Storage.from_settings(settings)
    report = PullReport()
    if storage.local:
        report.skipped = dict.fromkeys(what, "the storage is the data directory itself")
        return report
    root = Path(settings.data_dir)
    for area in what:
        why = {"ledger": _pull_ledger, "feeds": _pull_feeds, "snapshot": _pull_snapshot}[area](
            storage, root, report.fetched.setdefault(area, [])
        )
        if why:
            report.skipped[area] = why
    return report


def _pull_ledger(storage: Storage, root: Path, got: list[str]) -> str | None:
    rel_cp = f"ledger/{CHECKPOINT_FILE}"
    try:
        remote = storage.read_bytes(rel_cp)
    except FileNotFoundError:
        return f"no {storage.describe(rel_cp)}"
    local = root / rel_cp
    newer = (
        local.is_file()
        and checkpoint_size(local.read_bytes(), str(local))[0] >= checkpoint_size(remote, rel_cp)[0]
    )
    if newer:
        return f"{local} is as new as storage's or newer; nothing to pull"
    got += storage.get_tree("ledger/tile", root)
    if storage.exists(rel_vkey := "ledger/vkey"):
        storage.get_file(rel_vkey, root / rel_vkey, private=False)
        got.append(rel_vkey)
    atomic_write_bytes(local, remote)  # last: it names tiles that are all here now
    got.append(rel_cp)
    return None


def _version(data: bytes) -> int:
    version: int = json.loads(data)["signed"]["version"]
    return version


def _pull_feeds(storage: Storage, root: Path, got: list[str]) -> str | None:
    rel_ts = "feeds/timestamp.json"
    try:
        stamp = storage.read_bytes(rel_ts)
    except FileNotFoundError:
        return f"no {storage.describe(rel_ts)}"
    local = root / rel_ts
    if local.is_file() and _version(local.read_bytes()) >= _version(stamp):
        return f"{local} is as new as storage's or newer; nothing to pull"
    mutable = ("feeds/root.json", "feeds/snapshot/")
    listed = sorted(storage.listing("feeds"))  # one listing of the prefix: on S3 it is paged requests
    for rel in listed:
        if rel != rel_ts and not rel.startswith(mutable) and not (root / rel).is_file():
            storage.get_file(rel, root / rel, private=False)
            got.append(rel)
    for rel in (r for r in listed if r.startswith(mutable)):
        storage.get_file(rel, root / rel, private=False)
        got.append(rel)
    atomic_write_bytes(local, stamp)
    got.append(rel_ts)
    return None


def _pull_snapshot(storage: Storage, root: Path, got: list[str]) -> str | None:
    from pipelines.feeds.query_snapshot import POINTER

    rel_ptr = f"snapshot/{POINTER}"
    try:
        pointer = storage.read_bytes(rel_ptr)
    except FileNotFoundError:
        return f"no {storage.describe(rel_ptr)}"
    name = pointer.decode("ascii", "replace").strip()
    local = root / rel_ptr
    if local.is_file() and local.read_bytes().strip()[:10] >= pointer.strip()[:10]:
        return f"{local} names a snapshot as new as storage's or newer; nothing to pull"
    # Every number is in a snapshot: 0600 files in 0700 directories, like the local original.
    got += storage.get_tree(f"snapshot/{name}", root, private=True)
    write_private(local, pointer, top=root / "snapshot")
    got.append(rel_ptr)
    return None


def status(settings: Settings) -> dict[str, list[str]]:
    """Per area, the local files storage lacks or holds with another size ({} when local)."""
    storage = Storage.from_settings(settings)
    if storage.local:
        return {}
    root = Path(settings.data_dir)
    pushed = _Pusher(settings, storage)  # the record tells a same-size mutable file apart
    missing: dict[str, list[str]] = {}
    for area in STATUS_AREAS:
        listing = storage.listing(area)
        rels = local_files(root, area, lambda r: "/gx/" not in r)
        missing[area] = [rel for rel in rels if pushed.changed(rel, listing, rel in pushed.record)]
    return missing
