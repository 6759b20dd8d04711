"""The client's network side: a :class:`Fetcher` reads server-relative paths (``feeds/…``,
``ledger/tile/…``); :class:`HttpFetcher` is the real one, wrapping httpx errors at the boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx

from number_recycling_client.errors import FeedGapError, TamperedFileError, TerminalError, TransientError

MAX_TILE_BYTES = 1 << 20


class Fetcher(Protocol):
    """Reads a server-relative path (``feeds/timestamp.json``, ``ledger/tile/0/000``)."""

    def get(self, path: str, max_bytes: int) -> bytes | None:
        """The body, or None when the server says 404."""
        ...


class _RetryAfter(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds} s")
        self.seconds = seconds


class HttpFetcher:
    """httpx over HTTP(S) with the platform's bearer token; errors are wrapped at the boundary."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        max_wait_s: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )
        self._max_wait_s = max_wait_s  # total time spent honouring 429 Retry-After in one pull
        self._waited = 0.0
        self._sleep = sleep

    def get(self, path: str, max_bytes: int) -> bytes | None:
        # A catch-up pull makes many requests: wait out the server's rate limit, do not fail.
        while True:
            try:
                return self._get(path, max_bytes)
            except _RetryAfter as limited:
                wait = min(max(limited.seconds, 0.1), 60.0)
                if self._waited + wait > self._max_wait_s:
                    raise TransientError(
                        f"{self.base_url}{path}: rate limited for more than {self._max_wait_s:g} s; "
                        "retry later"
                    ) from None
                self._waited += wait
                self._sleep(wait)

    def _get(self, path: str, max_bytes: int) -> bytes | None:
        try:
            with self._client.stream("GET", path) as resp:
                if resp.status_code == 429:
                    try:
                        retry = float(resp.headers.get("retry-after", "1"))
                    except ValueError:
                        retry = 1.0
                    raise _RetryAfter(retry)
                if resp.status_code == 404:
                    return None
                if resp.status_code in (401, 403):
                    raise TerminalError(
                        f"{self.base_url}{path}: the server refused the token ({resp.status_code}); "
                        "ask the carrier for a platform token with the 'feeds' scope"
                    )
                if resp.status_code != 200:
                    raise TransientError(f"{self.base_url}{path}: HTTP {resp.status_code}; retry later")
                return _read_capped(resp, path, max_bytes)
        except httpx.HTTPError as exc:
            raise TransientError(f"{self.base_url}{path}: {exc}; retry later") from exc

    def close(self) -> None:
        self._client.close()


def _read_capped(resp: httpx.Response, path: str, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise TamperedFileError(
                f"{path} is larger than {max_bytes} bytes; refusing it (endless-data attack?)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def require(fetcher: Fetcher, path: str, max_bytes: int, what: str) -> bytes:
    """The body of ``path``; a 404 is a gap in the feed."""
    data = fetcher.get(path, max_bytes)
    if data is None:
        raise FeedGapError(f"{what} ({path}) is missing on the server")
    return data


class LedgerTiles:
    """Reads ledger tiles from the server for :meth:`TrustedFeed.verify_ledger`, once each."""

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher
        self._cache: dict[str, bytes] = {}  # every tile path names fixed content: one cache serves all sizes

    def __call__(self, path: str) -> bytes | None:
        data = self._cache.get(path)
        if data is None:
            data = self._fetcher.get(f"ledger/{path}", MAX_TILE_BYTES)
            if data is not None:
                self._cache[path] = data
        return data
