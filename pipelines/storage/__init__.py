"""Storage: where drops arrive and what is published or kept as record lives (issue 17).

``storage`` in the config (env RECYCLE_STORAGE): "" = the data directory itself (the embedded
default: every function here is then a no-op), ``file:///dir`` = another directory (an NFS
mount), ``s3://bucket/prefix`` = S3-compatible object storage (``[storage.s3]``; credentials
from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY only). The data directory stays local and
persistent either way: DuckDB, keys, ``private/``, caches and locks cannot live on S3.

- :class:`Storage` (``store``): the seam, over ``pyarrow.fs``; paths relative to the data dir.
- ``publish``: :func:`publish_ledger`, :func:`publish_feeds`, :func:`publish_snapshot`,
  :func:`push_records`, :func:`purge_storage` - uploads in the reader-safe order.
- ``drops``: :func:`fetch_drops` (storage inbox -> local inbox before ingest), :func:`drop_names`.
- ``sync``: :func:`pull` and :func:`status` for `recycle storage pull | status`.
- ``url``: :func:`join_storage` (a province's storage), :func:`parse_storage_url`.
"""

from pipelines.lazy import lazy_attributes
from pipelines.storage.url import StorageUrl, join_storage, parse_storage_url

# pyarrow loads on first use: the settings import ``url`` for every command.
_LAZY = {
    "Storage": "pipelines.storage.store",
    "PushReport": "pipelines.storage.publish",
    "publish_ledger": "pipelines.storage.publish",
    "publish_feeds": "pipelines.storage.publish",
    "publish_snapshot": "pipelines.storage.publish",
    "push_records": "pipelines.storage.publish",
    "purge_storage": "pipelines.storage.publish",
    "fetch_drops": "pipelines.storage.drops",
    "drop_names": "pipelines.storage.drops",
    "pull": "pipelines.storage.sync",
    "status": "pipelines.storage.sync",
}

__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "PushReport",
    "Storage",
    "StorageUrl",
    "drop_names",
    "fetch_drops",
    "join_storage",
    "parse_storage_url",
    "publish_feeds",
    "publish_ledger",
    "publish_snapshot",
    "pull",
    "purge_storage",
    "push_records",
    "status",
]
