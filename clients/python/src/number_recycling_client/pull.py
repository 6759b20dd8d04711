"""``recycle pull``: fetch the signed feed, drive the trust state machine, then store.

A pull verifies everything before it stores anything (``docs/feeds.md`` §3): the root chain,
the timestamp, every new manifest, each day's ``recycled.csv`` and pending list (``notices.csv``) and the ledger inclusion of
each manifest. The checks are :class:`~number_recycling_client.trust.TrustedFeed`'s (bytes in,
verdicts out); this module only fetches (:mod:`number_recycling_client.fetch`) and, once all of it
verified, stores in one sqlite3 transaction (:mod:`number_recycling_client.store`). Any failure raises
a :class:`~number_recycling_client.errors.VerificationError` subclass naming what failed and stores nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from number_recycling_client.fetch import Fetcher, HttpFetcher, LedgerTiles, require
from number_recycling_client.store import connect, load_last_pull, store_pull
from number_recycling_client.trust import TrustedFeed, VerifiedPull

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ClientConfig:
    """Limits and policy of a pull, with safe defaults."""

    max_metadata_bytes: int = 1 << 20  # root, timestamp and manifest files
    max_file_bytes: int = 4 << 30  # one day's CSV
    max_root_rotations: int = 1024  # roots followed in one pull
    require_ledger: bool = True  # refuse manifests that no ledger entry commits to
    timeout_s: float = 120.0


@dataclass(frozen=True)
class PullReport:
    root_version: int
    from_seq: int  # the last seq stored before this pull (0: none)
    to_seq: int
    rows: int  # rows stored by this pull
    checkpoint_size: int | None
    up_to_date: bool  # nothing new was published
    notices: int = 0  # pending-list rows (pending, withdrawn) stored by this pull


def pull(
    base_url: str,
    token: str,
    state_dir: Path,
    root_file: Path | None = None,
    *,
    clock: Clock = utc_now,
    fetcher: Fetcher | None = None,
    config: ClientConfig = ClientConfig(),
) -> PullReport:
    """Fetch, verify and then store everything new on the server (see the module docstring)."""
    own = fetcher is None
    fetch: Fetcher = fetcher or HttpFetcher(base_url, token, config.timeout_s)
    con = connect(state_dir)
    try:
        trust = TrustedFeed(load_last_pull(con), clock(), require_ledger=config.require_ledger)
        if trust.last.root is None and root_file is not None:
            trust.pin_root(root_file.read_bytes(), str(root_file))
        got = _verify(fetch, trust, config)
        store_pull(con, got)
    finally:
        con.close()
        if own and isinstance(fetch, HttpFetcher):
            fetch.close()
    return _report(trust, got)


def _verify(fetch: Fetcher, trust: TrustedFeed, config: ClientConfig) -> VerifiedPull:
    """Every step of the state machine, in order, each fed the bytes it names."""
    meta_max = config.max_metadata_bytes
    for _ in range(config.max_root_rotations):
        data = fetch.get(f"feeds/roots/{trust.next_root_version}.root.json", meta_max)
        if data is None:
            break
        trust.update_root(data)
    trust.finish_roots()
    trust.update_timestamp(require(fetch, "feeds/timestamp.json", meta_max, "timestamp"))
    while (seq := trust.next_manifest_seq) is not None:
        trust.update_manifest(require(fetch, f"feeds/manifests/{seq}.json", meta_max, f"manifest seq {seq}"))
    while (pending := trust.next_feed_file) is not None:
        path, what = f"feeds/{pending.meta.path}", f"feed file of seq {pending.seq}"
        trust.update_rows(require(fetch, path, config.max_file_bytes, what))
    while (notices := trust.next_notice_file) is not None:
        path, what = f"feeds/{notices.meta.path}", f"pending list of seq {notices.seq}"
        trust.update_notices(require(fetch, path, config.max_file_bytes, what))
    trust.verify_ledger(LedgerTiles(fetch))
    return trust.verified()


def _report(trust: TrustedFeed, got: VerifiedPull) -> PullReport:
    rows = sum(len(t) for t in got.tables)
    version, from_seq, to_seq = got.root.signed.version, trust.last.seq, got.timestamp.manifest.seq
    log.info("pull: root v%d, seq %d -> %d, %d row(s)", version, from_seq, to_seq, rows)
    return PullReport(
        root_version=version,
        from_seq=from_seq,
        to_seq=to_seq,
        rows=rows,
        checkpoint_size=None if got.checkpoint is None else got.checkpoint.size,
        up_to_date=not got.manifests,
        notices=sum(len(t) for t in got.notices),
    )
