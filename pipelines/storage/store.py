"""The one seam to storage: :class:`Storage`, over ``pyarrow.fs``.

Why pyarrow.fs and not fsspec/s3fs/boto3: pyarrow is already in the stack (the feeds and
snapshots are Arrow), its ``S3FileSystem`` is the AWS C++ SDK (retries, multipart, the standard
credential chain) and ``LocalFileSystem`` gives the same listing API locally; no new runtime
dependency. Paths are relative to the data directory (``inbox/2026-09-03/lifecycle_x.csv``,
``feeds/timestamp.json``, ``ledger/tile/0/000``), so a province's storage (the same URL joined
with ``provinces/<code>``, :func:`pipelines.storage.url.join_storage`) and its data directory
line up path for path.

Atomicity per object: on S3 one PUT (or a completed multipart upload) appears whole or not at
all; on a directory (``file://``) :func:`pipelines.layout.atomic_write_bytes` writes a temp file
and renames it, because ``LocalFileSystem.open_output_stream`` writes in place and a reader
would see half a file. Order between objects is the caller's (:mod:`pipelines.storage.publish`).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.errors import StorageError
from pipelines.layout import atomic_write_bytes, write_private
from pipelines.storage.url import parse_storage_url

if TYPE_CHECKING:
    from pipelines.config import Settings

log = logging.getLogger(__name__)


def _rel(rel: str) -> str:
    """A storage path as given, refused if it could leave the storage root."""
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"storage path {rel!r} must be relative and stay under the root")
    return path.as_posix()


@dataclass
class Storage:
    """Where drops arrive and what is published lives; ``local`` when it is the data directory.

    ``local`` storage is today's embedded default: every publication is then a no-op (the files
    are already where they belong), so nothing is copied and nothing gets slower."""

    url: str
    local: bool
    _fs: pafs.FileSystem  # rooted at the storage (SubTreeFileSystem): paths are data-dir relative
    _dir: Path | None  # the storage as a directory (file:// and local), for atomic writes

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        parsed = parse_storage_url(settings.storage)
        data_dir = Path(settings.data_dir).resolve()
        if parsed.kind == "s3":
            base = f"{parsed.bucket}/{parsed.prefix}" if parsed.prefix else parsed.bucket
            return cls(settings.storage, False, pafs.SubTreeFileSystem(base, _s3(settings)), None)
        root = data_dir if parsed.path is None else parsed.path.resolve()
        local = root == data_dir  # storage = "file://./var" with data_dir ./var: the same place
        return cls(settings.storage, local, pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem()), root)

    def describe(self, rel: str = "") -> str:
        """``rel`` as an operator finds it (``s3://b/p/inbox/…``, or a local path), for messages."""
        if self._dir is not None:
            return str(self._dir / rel) if rel else str(self._dir)
        return self.url.rstrip("/") + ("/" + rel if rel else "")

    # ------------------------------------------------------------------ objects

    def read_bytes(self, rel: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        try:
            with self._fs.open_input_stream(_rel(rel)) as fh:
                data: bytes = fh.read()
                return data
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"reading {self.describe(rel)} failed: {exc}; retry") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Put one object whole (see the module doc for why that is atomic on each backend)."""
        rel = _rel(rel)
        try:
            if self._dir is not None:
                atomic_write_bytes(self._dir / rel, data)
                return
            with self._fs.open_output_stream(rel) as fh:
                fh.write(data)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"writing {self.describe(rel)} failed: {exc}; run the step again") from exc

    def exists(self, rel: str) -> bool:
        return self.sizes([rel]).get(_rel(rel)) is not None

    def sizes(self, rels: list[str]) -> dict[str, int | None]:
        """Each path's size, None when absent (one HEAD each on S3)."""
        try:
            infos = self._fs.get_file_info([_rel(r) for r in rels])
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"looking up {self.describe()} failed: {exc}; retry") from exc
        return {i.path: (i.size if i.type == pafs.FileType.File else None) for i in infos}

    def listing(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` (recursive): data-dir relative path -> size. Names that
        start with a dot (uploads in flight, temp files) are left out, as ingest leaves them."""
        selector = pafs.FileSelector(_rel(prefix), recursive=True, allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"listing {self.describe(prefix)} failed: {exc}; retry") from exc
        return {
            i.path: i.size
            for i in infos
            if i.type == pafs.FileType.File and not any(p.startswith(".") for p in i.path.split("/"))
        }

    def delete_tree(self, rel: str) -> None:
        """Delete ``rel`` (a file or everything under it); nothing there is not an error."""
        rel = _rel(rel)
        try:
            if self._dir is not None:
                path = self._dir / rel
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
                return
            info = self._fs.get_file_info(rel)
            if info.type == pafs.FileType.Directory:
                self._fs.delete_dir(rel)
            elif info.type == pafs.FileType.File:
                self._fs.delete_file(rel)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"deleting {self.describe(rel)} failed: {exc}; retry") from exc

    # ------------------------------------------------------------------ trees

    def put_tree(self, local_root: Path, rels: list[str]) -> None:
        """Upload ``local_root/rel`` to ``rel`` for each of ``rels``, one after another in the
        order given: the caller's order is the publication order."""
        for rel in rels:
            self.write_bytes(rel, (local_root / rel).read_bytes())

    def get_tree(self, prefix: str, local_root: Path, *, private: bool = False) -> list[str]:
        """Download every object under ``prefix`` to ``local_root/<rel>`` that is missing there or
        has another size; ``private``: files 0600 in 0700 directories (personal data)."""
        got = []
        for rel, size in sorted(self.listing(prefix).items()):
            target = local_root / rel
            if target.is_file() and target.stat().st_size == size:
                continue
            self.get_file(rel, target, private=private, top=local_root / _rel(prefix).split("/")[0])
            got.append(rel)
        return got

    def get_file(self, rel: str, target: Path, *, private: bool, top: Path | None = None) -> None:
        data = self.read_bytes(rel)
        if private:
            write_private(target, data, top)
        else:
            atomic_write_bytes(target, data)


def _s3(settings: Settings) -> pafs.S3FileSystem:
    """The S3 client. Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and
    AWS_SESSION_TOKEN) when set, else the SDK's own chain (a pod or instance role): never the
    config file, never an argument that could end up in a log."""
    s3 = settings.storage_s3
    kwargs: dict[str, object] = {}
    if s3.endpoint_url:
        scheme, _, host = s3.endpoint_url.partition("://")
        kwargs |= {"endpoint_override": host.rstrip("/"), "scheme": scheme}
    if s3.region:
        kwargs["region"] = s3.region
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs |= {"access_key": key, "secret_key": secret}
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    try:
        return pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"storage {settings.storage}: cannot set up the S3 client ({exc})") from exc
