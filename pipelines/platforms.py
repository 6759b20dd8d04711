"""Platforms that use the server: bearer tokens (stored hashed), scopes, audit log, rate limit.

Everything lives under ``<data>/server/`` and never in the nightly state file: the token
store is a small SQLite file (the server reads it on every request, so a revocation takes
effect at once), the audit log is append-only JSONL, one file per UTC day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, TerminalError

SCOPES = ("check", "bulk", "feeds")
DEFAULT_RATE = 50.0  # requests per second, refilled continuously
DEFAULT_BURST = 100  # bucket size
TOKEN_PREFIX = "nrp_"  # noqa: S105 - a visible prefix so leaked tokens are easy to scan for, not a secret
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

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
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA busy_timeout = 5000")
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

    @classmethod
    def open(cls, data_dir: Path, clock: Clock = utc_now) -> TokenStore:
        return cls(server_dir(data_dir) / "platforms.sqlite", clock)

    def close(self) -> None:
        self._con.close()

    def add(self, name: str, scopes: Iterable[str], rate: float = DEFAULT_RATE,
            burst: int = DEFAULT_BURST) -> str:
        """Register ``name`` and return its new token (shown once; only its hash is kept).

        A revoked platform may be added again (it gets a new token); an active one may not.
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
                "INSERT OR REPLACE INTO platforms VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (name, token_hash(token), ",".join(sorted(scope_set)), float(rate), int(burst), now),
            )
        return token

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
                "SELECT name, scopes, rate, burst, created_at, revoked_at FROM platforms ORDER BY name"
            ).fetchall()
        return [self._platform(r) for r in rows]

    def authenticate(self, token: str) -> Platform | None:
        """The active platform owning ``token``, or None (unknown or revoked)."""
        with self._lock:
            row = self._con.execute(
                "SELECT name, scopes, rate, burst, created_at, revoked_at FROM platforms "
                "WHERE token_sha256 = ?",
                (token_hash(token),),
            ).fetchone()
        if row is None:
            return None
        platform = self._platform(row)
        return platform if platform.active else None

    @staticmethod
    def _platform(row: tuple[Any, ...]) -> Platform:
        return Platform(row[0], frozenset(row[1].split(",")), float(row[2]), int(row[3]), row[4], row[5])


class AuditLog:
    """Append-only JSONL, one file per UTC day: who downloaded or asked what, and when.

    Callers pass numbers already masked (``pipelines.numbers.mask``); nothing here unmasks.
    """

    def __init__(self, directory: Path, clock: Clock = utc_now) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._day: dt.date | None = None
        self._fh: Any = None

    @classmethod
    def open(cls, data_dir: Path, clock: Clock = utc_now) -> AuditLog:
        return cls(server_dir(data_dir) / "audit", clock)

    def record(self, platform: str | None, action: str, **fields: Any) -> None:
        now = self._clock()
        line = json.dumps(
            {"at": now.isoformat(timespec="milliseconds"), "platform": platform, "action": action, **fields},
            sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
        )
        with self._lock:
            if self._day != now.date():
                if self._fh is not None:
                    self._fh.close()
                self._day = now.date()
                self._fh = open(self.dir / f"{now.date().isoformat()}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


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
