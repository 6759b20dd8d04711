"""The platform side: ``recycle pull`` verifies a published feed (root chain, timestamp,
manifest, files, ledger inclusion) before it stores anything, and ``recycle check`` answers from
the verified copy.
"""

from pipelines.client.pull import (
    ClientConfig,
    HttpFetcher,
    LocalAnswer,
    PullReport,
    check_local,
    pull,
    stored_root,
)

__all__ = [
    "ClientConfig",
    "HttpFetcher",
    "LocalAnswer",
    "PullReport",
    "check_local",
    "pull",
    "stored_root",
]
