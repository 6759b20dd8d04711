"""number-recycling's light client for platforms: pull the carrier's signed feed, verify all of
it (root chain, timestamp, manifest chain, file hashes, pending list, ledger inclusion), keep a
verified copy in sqlite3, answer checks from it through the one answer rule, and manage event
subscriptions. Depends on ``cryptography`` and ``httpx`` only.

``trust`` is the state machine with no I/O (bytes in, verdicts out); ``fetch`` reads the
server; ``store`` is the verified copy in ``<state>/feed.sqlite``; ``pull`` drives them;
``check`` answers locally; ``subscriptions`` manages CAMARA subscriptions; ``events`` is the wire
format of signed CloudEvents and :func:`verify_event` (one copy: the carrier signs with it); ``cli`` is ``nrc``.
"""

from number_recycling_client.check import LocalAnswer, LocalFeed, check_local
from number_recycling_client.events import EventError, trusted_event_keys, verify_event
from number_recycling_client.fetch import HttpFetcher
from number_recycling_client.pull import ClientConfig, PullReport, pull
from number_recycling_client.store import stored_root
from number_recycling_client.trust import TrustedFeed, verify_receipt

__all__ = [
    "ClientConfig",
    "EventError",
    "HttpFetcher",
    "LocalAnswer",
    "LocalFeed",
    "PullReport",
    "TrustedFeed",
    "check_local",
    "pull",
    "stored_root",
    "trusted_event_keys",
    "verify_event",
    "verify_receipt",
]
