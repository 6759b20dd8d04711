"""Publication to storage in an order that keeps every reader consistent (DESIGN.md, "Feeds",
"Ledger"): an object appears only after everything it names.

- ledger: new tiles and entry bundles, then ``checkpoint`` (a checkpoint never names a tile a
  reader cannot fetch);
- feeds: the ledger first (a manifest names a checkpoint and its entry), then each new day's
  data files, then its ``manifest.json``, the by-seq copies, root versions, ``root.json``, the
  rolling snapshot files, and ``timestamp.json`` LAST: a platform reading the bucket mid-way
  sees the previous timestamp, which pins a previous manifest whose files are all there;
- query snapshot: the snapshot directory's files, then the ``current`` pointer;
- records: the night's ``runs/<D>/`` step reports.

Only what changed goes up: immutable objects (tiles, day directories, manifests by seq, root
versions, snapshot directories) when storage lacks them or holds another size; the few mutable
ones (checkpoint, timestamp, root.json, the rolling snapshot, the pointer, step reports) when
their bytes differ from what this data directory last pushed (``cache/storage-pushed.json``,
safe to delete: it only costs one re-upload). Tiles go by the checkpoints: those a tree larger
than storage's checkpoint needs and the local one has, so a night uploads its new tiles, not
the ledger. With local storage (the data directory itself) every function here returns at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from number_recycling_client.errors import FormatError
from number_recycling_client.ledger.tiles import Tile

from pipelines.errors import StorageConflictError
from pipelines.layout import atomic_write_bytes
from pipelines.ledger.log import CHECKPOINT_FILE, is_beyond
from pipelines.storage.store import Storage

if TYPE_CHECKING:
    from pipelines.config import Settings

log = logging.getLogger(__name__)

RECORD = "cache/storage-pushed.json"
# Uploads of one phase (objects whose mutual order does not matter) run this many at once:
# an S3 PUT is latency-bound (tens of ms), and a night's tiles are hundreds of small objects.
UPLOAD_WORKERS = 8


@dataclass
class PushReport:
    """What one publication uploaded (data-dir relative paths, in upload order)."""

    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


class _Pusher:
    """Uploads phases in order, each only with what changed, and keeps the record of pushes."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.root = Path(settings.data_dir)
        self.storage = storage
        path = self.root / RECORD
        self.record: dict[str, str] = json.loads(path.read_bytes()) if path.is_file() else {}
        self.report = PushReport()

    def phase(self, rels: Iterable[str], listing: dict[str, int] | None, mutable: bool = False) -> None:
        """Upload what changed of ``rels``, concurrently. ``listing`` (storage's sizes) None: the
        caller already chose immutable ``rels`` by other means; mutable ones go by the record."""
        todo = [rel for rel in rels if self.changed(rel, listing, mutable)]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(UPLOAD_WORKERS, len(todo))) as pool:
            digests = list(pool.map(self._put, todo))
        for rel, digest in zip(todo, digests, strict=True):
            if mutable:
                self.record[rel] = digest
        self.report.uploaded += todo

    def changed(self, rel: str, listing: dict[str, int] | None, mutable: bool) -> bool:
        if listing is not None and listing.get(rel) != (self.root / rel).stat().st_size:
            return True
        if mutable:
            return self.record.get(rel) != _sha256(self.root / rel)
        return listing is None

    def _put(self, rel: str) -> str:
        data = (self.root / rel).read_bytes()
        self.storage.write_bytes(rel, data)
        return hashlib.sha256(data).hexdigest()

    def save(self) -> PushReport:
        if self.report.uploaded:
            body = json.dumps(self.record, indent=1, sort_keys=True).encode()
            atomic_write_bytes(self.root / RECORD, body)
            log.info("storage %s: uploaded %d file(s)", self.storage.url, len(self.report.uploaded))
        return self.report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def local_files(root: Path, under: str, keep: Callable[[str], bool] = lambda _rel: True) -> list[str]:
    """Data-dir relative paths of the regular files under ``root/under``, sorted; dot names
    (temp files, locks, ``.pending``) and everything under a dot directory are left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root / under):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not name.startswith(".") and path.is_file() and not path.is_symlink() and keep(rel):
                found.append(rel)
    return sorted(found)


# --------------------------------------------------------------------------- ledger


def checkpoint_size(note: bytes, where: str) -> tuple[int, str]:
    """(tree size, base64 root) of a C2SP checkpoint note; enough to order two of them."""
    lines = note.decode("utf-8", "replace").split("\n")
    try:
        return int(lines[1]), lines[2]
    except (IndexError, ValueError):
        raise FormatError(f"{where} is not a checkpoint note; restore it from the other copy") from None


def publish_ledger(settings: Settings) -> PushReport:
    """New tiles and entry bundles, the verifier key, then the checkpoint (last)."""
    storage = Storage.from_settings(settings)
    local_cp = Path(settings.data_dir) / "ledger" / CHECKPOINT_FILE
    if storage.local or not local_cp.is_file():
        return PushReport()
    note = local_cp.read_bytes()
    new_size, new_root = checkpoint_size(note, str(local_cp))
    rel_cp = f"ledger/{CHECKPOINT_FILE}"
    try:
        remote = storage.read_bytes(rel_cp)
    except FileNotFoundError:
        remote = None
    old_size = None
    if remote is not None:
        if remote == note:
            return PushReport()
        old_size, old_root = checkpoint_size(remote, storage.describe(rel_cp))
        if old_size > new_size or (old_size == new_size and old_root != new_root):
            raise StorageConflictError(
                f"{storage.describe(rel_cp)} holds a ledger of {old_size} entries that {local_cp} "
                f"({new_size} entries) does not extend; this data directory is behind storage: "
                "run `recycle storage pull --what ledger` (or restore the data directory) first"
            )

    def new_tile(rel: str) -> bool:
        try:
            tile = Tile.parse(rel.removeprefix("ledger/"))
        except FormatError:
            return False
        return (old_size is None or is_beyond(tile, old_size)) and not is_beyond(tile, new_size)

    pusher = _Pusher(settings, storage)
    try:
        pusher.phase(local_files(pusher.root, "ledger/tile", new_tile), None)
        pusher.phase(local_files(pusher.root, "ledger", lambda r: r == "ledger/vkey"), None, mutable=True)
        pusher.phase([rel_cp], None)  # storage holds another: always, whatever the record says
    finally:
        report = pusher.save()
    return report


# --------------------------------------------------------------------------- feeds


def publish_feeds(settings: Settings, day: dt.date | None = None) -> PushReport:
    """Every feed file storage lacks, in the reader-safe order, the timestamp last.

    ``day`` is the night's date, for the log only: days an earlier night failed to push go up
    too (before the newer ones), so one successful night catches storage up."""
    storage = Storage.from_settings(settings)
    if storage.local:
        return PushReport()
    ledger = publish_ledger(settings)  # the manifest names a checkpoint: readable first
    root = Path(settings.data_dir)
    listing = storage.listing("feeds")
    daily = local_files(root, "feeds/daily")
    pusher = _Pusher(settings, storage)
    try:
        pusher.phase([r for r in daily if not r.endswith("/manifest.json")], listing)
        pusher.phase([r for r in daily if r.endswith("/manifest.json")], listing)
        pusher.phase(sorted(local_files(root, "feeds/manifests"), key=_number), listing)
        pusher.phase(sorted(local_files(root, "feeds/roots"), key=_number), listing)
        pusher.phase(_present(root, "feeds/root.json"), listing, mutable=True)
        pusher.phase(local_files(root, "feeds/snapshot"), listing, mutable=True)
        pusher.phase(_present(root, "feeds/timestamp.json"), listing, mutable=True)
    finally:
        report = pusher.save()
    log.info("storage: feeds of %s published to %s", day or "every day", storage.url)
    return PushReport(ledger.uploaded + report.uploaded)


def _number(rel: str) -> int:
    """The version or seq a ``manifests/<seq>.json`` or ``roots/<N>.root.json`` name carries."""
    head = rel.rsplit("/", 1)[-1].split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def _present(root: Path, rel: str) -> list[str]:
    return [rel] if (root / rel).is_file() else []


# --------------------------------------------------------------------------- query snapshot


def publish_snapshot(settings: Settings) -> PushReport:
    """The pointed snapshot directory's files, then the ``current`` pointer; then directories
    the data directory pruned go from storage too (each lists every number: keep no more
    copies than the data directory keeps)."""
    from pipelines.feeds.query_snapshot import POINTER, current_snapshot_dir

    storage = Storage.from_settings(settings)
    pointed = current_snapshot_dir(settings)
    if storage.local or pointed is None:
        return PushReport()
    root = Path(settings.data_dir)
    listing = storage.listing("snapshot")
    pusher = _Pusher(settings, storage)
    try:
        pusher.phase(local_files(root, f"snapshot/{pointed.name}"), listing)
        pusher.phase([f"snapshot/{POINTER}"], listing, mutable=True)
    finally:
        report = pusher.save()
    kept = {p.name for p in (root / "snapshot").iterdir() if p.is_dir()}
    for gone in sorted({rel.split("/")[1] for rel in listing if rel.count("/") >= 2} - kept):
        storage.delete_tree(f"snapshot/{gone}")
        report.deleted.append(f"snapshot/{gone}")
    return report


# --------------------------------------------------------------------------- records


def push_records(settings: Settings, day: dt.date) -> PushReport:
    """The night's record: ``runs/<D>/`` (step reports, preflight), and the drops it wrote for
    the next night (receipts in ``inbox/<D+1>/``: a rebuilt worker must find them). Not
    ``runs/<D>/gx/``: Great Expectations results quote refused values in clear, and a bucket
    (its versions, its replicas) would keep them past the retention that deletes them here."""
    from pipelines.storage.drops import push_local_drops

    storage = Storage.from_settings(settings)
    if storage.local:
        return PushReport()
    prefix = f"runs/{day.isoformat()}"
    rels = local_files(Path(settings.data_dir), prefix, lambda r: not r.startswith(f"{prefix}/gx/"))
    pusher = _Pusher(settings, storage)
    try:
        pusher.phase(rels, storage.listing(prefix), mutable=True)
    finally:
        report = pusher.save()
    nxt = day + dt.timedelta(days=1)
    report.uploaded += [f"inbox/{nxt.isoformat()}/{n}" for n in push_local_drops(settings, nxt)]
    return report


def purge_storage(settings: Settings, cutoff: dt.date) -> list[str]:
    """Delete from storage the drops (``inbox/<D>/``) of nights up to ``cutoff``: the clear
    copies retention deletes locally (``pipelines.contacts.retention``). Read from storage's own
    listing, so a night this data directory never held (a rebuilt worker) goes too."""
    storage = Storage.from_settings(settings)
    if storage.local:
        return []
    nights = sorted({rel.split("/")[1] for rel in storage.listing("inbox") if rel.count("/") >= 2})
    gone = [f"inbox/{n}" for n in nights if _night(n) <= cutoff]
    for rel in gone:
        storage.delete_tree(rel)
    return gone


def _night(name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return dt.date.max  # not a night's folder: never old
