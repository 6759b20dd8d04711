"""Platforms that use the server: bearer tokens (stored hashed), scopes, audit log, rate limit.

Everything lives under ``<data>/server/`` and never in the nightly state file: the token
store is a small SQLite file (the server reads it on every request, so a revocation takes
effect at once), the audit log is append-only JSONL, one file per UTC day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import queue
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, TerminalError
from pipelines.layout import create_private_file, open_private_append, private_dir
from pipelines.numbers import mask

log = logging.getLogger(__name__)

# `metrics` is the operators' (Prometheus) scope: never in DEFAULT_SCOPES, because the metrics
# name every platform and its volumes (pipelines.server.metrics).
SCOPES = ("check", "bulk", "feeds", "ack", "subscriptions", "metrics")
# What `recycle platform add` grants unless told otherwise: everything, acknowledgements and
# event subscriptions included, because a platform that reads the feed is the one expected to
# report back and to be told early.
DEFAULT_SCOPES = "check,bulk,feeds,ack,subscriptions"
PHONE_PATTERN = r"^\+[1-9][0-9]{4,14}$"  # E.164 as CAMARA writes it; numbers on the wire match this
DEFAULT_RATE = 50.0  # requests per second, refilled continuously
DEFAULT_BURST = 100  # bucket size
TOKEN_PREFIX = "nrp_"  # noqa: S105 - a visible prefix so leaked tokens are easy to scan for, not a secret
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Feed files that list numbers; successful downloads of these are what notification evidence needs.
FEED_DATA_PATH = re.compile(r"/feeds/(?:daily/\d{4}-\d{2}-\d{2}|snapshot)/recycled\.(?:parquet|csv)")
FEED_DOWNLOADS = "feed-downloads"  # audit/<this>/<UTC day>.jsonl

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def server_dir(data_dir: Path) -> Path:
    return data_dir / "server"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Platform:
    name: str
    scopes: frozenset[str]
    rate: float
    burst: int
    created_at: str
    revoked_at: str | None
    # The platform agreed to be named to a number's new holder (docs/feeds.md, "The new holder's
    # notice"); without it the holder's notice and view only count it.
    named: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise ConfigError(f"scopes must be a comma-separated subset of {','.join(SCOPES)}; got {text!r}")
    return scopes


class TokenStore:
    """Platform tokens in SQLite: only SHA-256 of each 32-byte random token is stored."""

    def __init__(self, path: Path, clock: Clock = utc_now) -> None:
        private_dir(path.parent)
        create_private_file(path)  # SQLite gives its journal the database file's mode
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA busy_timeout = 5000")
        self._con.execute("PRAGMA journal_mode = DELETE")  # the change counter below needs it
        self._cache: dict[str, Platform | None] = {}
        self._cache_counter = b""
        self._fd: int | None = None
        self._con.execute(
            """
            CREATE TABLE IF NOT EXISTS platforms (
                name TEXT PRIMARY KEY,
                token_sha256 TEXT NOT NULL UNIQUE,
                scopes TEXT NOT NULL,
                rate REAL NOT NULL,
                burst INTEGER NOT NULL,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )
            """
        )
        columns = {row[1] for row in self._con.execute("PRAGMA table_info(platforms)")}
        if "named" not in columns:  # a store made before platforms could agree to be named
            self._con.execute("ALTER TABLE platforms ADD COLUMN named INTEGER NOT NULL DEFAULT 0")

    @classmethod
    def open(cls, data_dir: Path, clock: Clock = utc_now) -> TokenStore:
        return cls(server_dir(data_dir) / "platforms.sqlite", clock)

    def close(self) -> None:
        self._con.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _change_counter(self) -> bytes:
        """SQLite's file change counter (header bytes 24..27): bumped by every committed write,
        from any process, so a cached answer is dropped the moment a token is added or revoked."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self._fd, 4, 24)

    def add(
        self,
        name: str,
        scopes: Iterable[str],
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        *,
        named: bool = False,
    ) -> str:
        """Register ``name`` and return its new token (shown once; only its hash is kept).

        A revoked platform may be added again (it gets a new token); an active one may not.
        ``named``: it agreed to be named to new holders (else it is only counted).
        """
        if not _NAME.fullmatch(name):
            raise ConfigError(f"platform name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
        scope_set = parse_scopes(scopes)
        if rate <= 0 or burst < 1:
            raise ConfigError("rate must be > 0 requests/s and burst >= 1")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock().isoformat(timespec="seconds")
        with self._lock:
            row = self._con.execute("SELECT revoked_at FROM platforms WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None:
                raise TerminalError(
                    f"platform {name!r} already has an active token; revoke it first "
                    f"(recycle platform revoke {name}) to issue a new one"
                )
            self._con.execute(
                "INSERT OR REPLACE INTO platforms"
                " (name, token_sha256, scopes, rate, burst, created_at, revoked_at, named)"
                " VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    name,
                    token_hash(token),
                    ",".join(sorted(scope_set)),
                    float(rate),
                    int(burst),
                    now,
                    int(named),
                ),
            )
        return token

    def set_scopes(self, name: str, scopes: Iterable[str]) -> None:
        """Replace an active platform's scopes; its token stays the same and the change applies
        to the next request (the server notices the store's change counter)."""
        scope_set = parse_scopes(scopes)
        with self._lock:
            cur = self._con.execute(
                "UPDATE platforms SET scopes = ? WHERE name = ? AND revoked_at IS NULL",
                (",".join(sorted(scope_set)), name),
            )
        if cur.rowcount == 0:
            raise TerminalError(f"no active platform named {name!r}; see `recycle platform list`")

    def set_named(self, name: str, named: bool) -> None:
        """Record whether ``name`` agrees to be named to new holders (a revoked platform too: its
        past answers are still shown)."""
        with self._lock:
            cur = self._con.execute("UPDATE platforms SET named = ? WHERE name = ?", (int(named), name))
        if cur.rowcount == 0:
            raise TerminalError(f"no platform named {name!r}; see `recycle platform list`")

    def named_platforms(self) -> frozenset[str]:
        """The platforms that agreed to be named to a number's new holder."""
        with self._lock:
            rows = self._con.execute("SELECT name FROM platforms WHERE named <> 0").fetchall()
        return frozenset(r[0] for r in rows)

    def revoke(self, name: str) -> None:
        now = self._clock().isoformat(timespec="seconds")
        with self._lock:
            cur = self._con.execute(
                "UPDATE platforms SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name)
            )
        if cur.rowcount == 0:
            raise TerminalError(f"no active platform named {name!r}; see `recycle platform list`")

    def list(self) -> list[Platform]:
        with self._lock:
            rows = self._con.execute(
                "SELECT name, scopes, rate, burst, created_at, revoked_at, named FROM platforms ORDER BY name"
            ).fetchall()
        return [self._platform(r) for r in rows]

    def authenticate(self, token: str) -> Platform | None:
        """The active platform owning ``token``, or None (unknown or revoked)."""
        digest = token_hash(token)
        with self._lock:
            counter = self._change_counter()
            if counter != self._cache_counter:
                self._cache.clear()
                self._cache_counter = counter
            elif digest in self._cache:
                return self._cache[digest]
            row = self._con.execute(
                "SELECT name, scopes, rate, burst, created_at, revoked_at, named FROM platforms "
                "WHERE token_sha256 = ?",
                (digest,),
            ).fetchone()
            platform = None if row is None else self._platform(row)
            if platform is not None and not platform.active:
                platform = None
            if len(self._cache) > 100_000:  # unknown tokens are cached too; bound the memory
                self._cache.clear()
            self._cache[digest] = platform
        return platform

    @staticmethod
    def _platform(row: tuple[Any, ...]) -> Platform:
        return Platform(
            row[0], frozenset(row[1].split(",")), float(row[2]), int(row[3]), row[4], row[5], bool(row[6])
        )


class AuditLog:
    """Append-only JSONL, one file per UTC day: who downloaded or asked what, and when.

    ``record`` only queues the event (the time is taken then); a writer thread masks the
    number (``pipelines.numbers.mask``), serialises and appends it, so a query's latency does
    not include the disk. ``flush`` waits until everything queued is written; ``close`` flushes.
    A number passed as ``number=`` is written only masked, as ``phone``.

    Successful downloads (200/304) of feed files that list numbers (``FEED_DATA_PATH``) are
    also copied, line for line, to ``feed-downloads/<UTC day>.jsonl``: notification evidence
    reads those few lines instead of a day of checks. That copy is started only together with
    the day's main file, so an existing copy is complete for its day; a day without one (logged
    before this copy existed) is read from the main file.
    """

    def __init__(self, directory: Path, clock: Clock = utc_now) -> None:
        private_dir(directory, top=directory.parent)  # server/ and server/audit/: 0700
        self.dir = directory
        self._clock = clock
        self._queue: queue.Queue[tuple[dt.datetime, str | None, str, str | None, dict[str, Any]] | None] = (
            queue.Queue()
        )
        self._day: dt.date | None = None
        self._fh: Any = None
        self._feed_fh: Any = None
        self._writer = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._writer.start()

    @classmethod
    def open(cls, data_dir: Path, clock: Clock = utc_now) -> AuditLog:
        return cls(server_dir(data_dir) / "audit", clock)

    def record(self, platform: str | None, action: str, *, number: str | None = None, **fields: Any) -> None:
        self._queue.put((self._clock(), platform, action, number, fields))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(*item)
            except Exception:  # an audit line must never take the server down; say so loudly
                log.exception("audit log: could not write an entry")
            finally:
                self._queue.task_done()

    def _write(
        self, at: dt.datetime, platform: str | None, action: str, number: str | None, fields: dict[str, Any]
    ) -> None:
        if number is not None:
            fields = {**fields, "phone": mask(number)}
        line = json.dumps(
            {"at": at.isoformat(timespec="milliseconds"), "platform": platform, "action": action, **fields},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        if self._day != at.date():
            self._close_files()
            self._day = at.date()
            main = self.dir / f"{at.date().isoformat()}.jsonl"
            copy = self.dir / FEED_DOWNLOADS / main.name
            complete = not main.exists() or copy.exists()
            self._fh = open(open_private_append(main), "a", encoding="utf-8")  # noqa: SIM115
            if complete:
                private_dir(copy.parent)
                self._feed_fh = open(open_private_append(copy), "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(line + "\n")
        if (
            self._feed_fh is not None
            and action == "download"
            and fields.get("status") in (200, 304)
            and FEED_DATA_PATH.fullmatch(str(fields.get("path", "")))
        ):
            self._feed_fh.write(line + "\n")
        if self._queue.empty():  # a burst is written with one flush
            self._flush_files()

    def _flush_files(self) -> None:
        for fh in (self._fh, self._feed_fh):
            if fh is not None:
                fh.flush()

    def _close_files(self) -> None:
        for fh in (self._fh, self._feed_fh):
            if fh is not None:
                fh.close()
        self._fh = self._feed_fh = None

    def flush(self) -> None:
        self._queue.join()
        self._flush_files()

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        self._close_files()


class RateLimiter:
    """One token bucket per platform: ``rate`` requests/s, up to ``burst`` at once."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    def take(self, name: str, rate: float, burst: int) -> int | None:
        """Spend one request; None if allowed, else the whole seconds to wait (Retry-After)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(name, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return None
            self._buckets[name] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / rate))
