"""What the app holds for as long as it runs, built once by ``create_app`` and read by every
route from ``request.app.state.server``: settings and clock, the token, audit and
acknowledgement and events stores, the rate limiter, the query snapshot, the receipt key, the ETag cache
and the Prometheus metrics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from number_recycling_client.wire import ROLE_RECEIPT

from pipelines.compliance.notifications import AckStore
from pipelines.config import Settings
from pipelines.events.config import EventsConfig
from pipelines.events.store import EventStore
from pipelines.feeds.publish import load_root, role_signers
from pipelines.feeds.query_snapshot import SnapshotHolder, SnapshotIndex
from pipelines.layout import Layout
from pipelines.ledger.signer import FileSigner
from pipelines.server.camara import BODY_TIMEOUT_S, ApiError
from pipelines.server.metrics import ServerMetrics
from pipelines.server.platforms import AuditLog, Clock, RateLimiter, TokenStore


@dataclass
class ReceiptKeys:
    """The online key that signs query receipts, reloaded when root.json changes (rotation)."""

    settings: Settings
    signers: list[FileSigner] | None = None
    root_mtime: int = -1

    def current(self) -> list[FileSigner]:
        path = Layout(self.settings.data_dir).feeds_dir / "root.json"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            raise ApiError(
                503,
                "UNAVAILABLE",
                "the feed keys are not set up yet (no root.json); "
                "bulk answers cannot be signed until the first feed is published",
            ) from None
        if mtime != self.root_mtime or self.signers is None:
            root = load_root(self.settings)
            assert root is not None
            self.signers = role_signers(self.settings, root.signed, ROLE_RECEIPT)
            self.root_mtime = mtime
        return self.signers


class ETags:
    """Strong ETags (SHA-256 of the content), cached per file version."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int, int], str] = {}
        self._lock = threading.Lock()

    def of(self, path: Path, st: os.stat_result) -> str:
        key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            tag = self._cache.get(key)
        if tag is None:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            tag = f'"{h.hexdigest()}"'
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = tag
        return tag


@dataclass(frozen=True)
class ServerState:
    """``clock`` gives wall-clock UTC (audit and receipt times; :meth:`today` turns it into the
    carrier's date for range checks)."""

    settings: Settings
    layout: Layout
    clock: Clock
    tokens: TokenStore
    audit: AuditLog
    acks: AckStore
    limiter: RateLimiter
    snapshots: SnapshotHolder
    receipt_keys: ReceiptKeys
    etags: ETags
    metrics: ServerMetrics
    events: EventStore  # subscriptions, the event log and deliveries (pipelines.events)
    events_config: EventsConfig
    body_timeout_s: float = BODY_TIMEOUT_S  # how long a request body may take (camara.read_body)

    def close(self) -> None:
        self.audit.close()
        self.tokens.close()
        self.acks.close()
        self.events.close()

    def snapshot(self) -> SnapshotIndex:
        index = self.snapshots.current()
        if index is None:
            raise ApiError(
                503,
                "UNAVAILABLE",
                "no query snapshot is published yet; the nightly run publishes one after its first night",
            )
        return index

    def today(self, index: SnapshotIndex) -> dt.date:
        """The carrier's date now (``settings.timezone``: at 04:31 in Beijing it is already the
        Beijing day, while UTC still has the day before), never before the snapshot's own date."""
        return max(self.settings.carrier_day(self.clock()), index.meta.as_of)


def server_state(app: Any) -> ServerState:
    """The state ``create_app`` put on ``app`` (``request.app`` in a route)."""
    state: ServerState = app.state.server
    return state
