"""The platform side: ``recycle pull`` verifies a published feed (root chain, timestamp,
manifest, files, ledger inclusion) before it stores anything, and ``recycle check`` answers from
the verified copy.

``trust`` is the state machine with no I/O (bytes in, verdicts out); ``fetch`` reads the
server; ``store`` is the verified copy in ``<state>/feed.duckdb``; ``pull`` drives them;
``check`` answers locally.
"""

from pipelines.client.check import LocalAnswer, LocalFeed, check_local
from pipelines.client.fetch import HttpFetcher
from pipelines.client.pull import ClientConfig, PullReport, pull
from pipelines.client.store import stored_root
from pipelines.client.trust import TrustedFeed, verify_receipt

__all__ = [
    "ClientConfig",
    "HttpFetcher",
    "LocalAnswer",
    "LocalFeed",
    "PullReport",
    "TrustedFeed",
    "check_local",
    "pull",
    "stored_root",
    "verify_receipt",
]
