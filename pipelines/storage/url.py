"""The storage URL (config key ``storage``, env RECYCLE_STORAGE): parsed and checked here, with
no pyarrow import, so building the settings stays cheap."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipelines.errors import ConfigError

_EXAMPLES = 'e.g. storage = "s3://recycle-prod/cn" or "file:///mnt/recycle" (empty: the data directory)'
# S3 bucket names (AWS's rules, which MinIO and Ceph follow): 3-63 of a-z 0-9 . -, alnum at both ends.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class StorageUrl:
    """``kind`` "data_dir" (the data directory itself), "file" (``path``) or "s3" (``bucket``/``prefix``)."""

    kind: Literal["data_dir", "file", "s3"]
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""  # no leading or trailing slash; "" for the bucket's root


def parse_storage_url(url: str) -> StorageUrl:
    """The parts of ``url``; ConfigError naming the key and an example when it is not one."""
    if url == "":
        return StorageUrl("data_dir")
    if url.startswith("file://"):
        rest = url.removeprefix("file://")
        # "file:///abs" and "file://./rel" (DESIGN.md's example) both read as a path.
        if not rest or rest.startswith("//"):
            raise ConfigError(f"config: storage {url!r} names no directory; {_EXAMPLES}")
        return StorageUrl("file", path=Path(rest))
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        if not _BUCKET.fullmatch(bucket):
            raise ConfigError(f"config: storage {url!r}: {bucket!r} is not an S3 bucket name; {_EXAMPLES}")
        if any(part in {"", ".", ".."} for part in prefix.split("/")) and prefix:
            raise ConfigError(f"config: storage {url!r}: empty, . or .. in the prefix; {_EXAMPLES}")
        return StorageUrl("s3", bucket=bucket, prefix=prefix)
    raise ConfigError(f"config: storage {url!r} is not a file:// or s3:// URL; {_EXAMPLES}")


def check_storage(url: str, endpoint_url: str, allow_http: bool) -> None:
    """Refuse a bad ``storage`` URL or ``[storage.s3] endpoint_url`` when the settings are built."""
    parsed = parse_storage_url(url)
    if parsed.kind != "s3" or not endpoint_url:
        return
    scheme = endpoint_url.partition("://")[0] if "://" in endpoint_url else ""
    if scheme not in {"http", "https"}:
        raise ConfigError(
            f"[storage.s3]: endpoint_url {endpoint_url!r} needs its scheme, "
            'e.g. endpoint_url = "https://minio.internal:9000"'
        )
    if scheme == "http" and not allow_http:
        raise ConfigError(
            f"[storage.s3]: endpoint_url {endpoint_url!r} is plain http; use https, or set "
            "allow_http = true (RECYCLE_S3_ALLOW_HTTP=1) for a loopback or same-host server"
        )


def join_storage(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended (a province's storage: ``join_storage(s, "provinces", "GD")``).

    "" stays "": the data directory itself is the storage, and a province's data directory is
    already joined."""
    parsed = parse_storage_url(url)
    for part in parts:
        if not part or part in {".", ".."} or "/" in part:
            raise ConfigError(f"storage: {part!r} cannot be a path part under {url!r}")
    if parsed.kind == "data_dir" or not parts:
        return url
    return url.rstrip("/") + "/" + "/".join(parts)
