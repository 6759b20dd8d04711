"""The platform side: ``recycle pull`` (fetch and verify the signed feed) and ``recycle check``.

A pull verifies everything before it stores anything, in this order (``docs/feeds.md``):

1. the trusted root (stored, or the ``--root`` file on first use), then every newer root
   ``roots/<N+1>.root.json``, each signed by the old AND the new root keys; not expired;
2. ``timestamp.json``: signed by the timestamp role, not expired (freeze), not older than what
   the client already saw (rollback), pinning a manifest seq >= the stored one;
3. every manifest after the stored seq, fetched by seq: strict format, its seq, feed date
   strictly increasing, ``prev_manifest_sha256`` chaining to the previous one, the newest
   matching the timestamp's pin and signed by the manifest role, not expired;
4. each day's ``recycled.parquet``: length, SHA-256, row count, schema, row seqs contiguous
   with what is stored;
5. the ledger: the manifest's checkpoint is signed by the ledger key the root names, the
   entry at the manifest's index is a feed_manifest entry whose commitment opens (with the
   published opening) to this manifest's core hash, its inclusion proof (from tiles fetched
   from the server) leads to the checkpoint's root, and each checkpoint is consistent with the
   last one the client saw.

Only then rows and state are written, in one DuckDB transaction. Any failure raises a
:class:`~pipelines.errors.VerificationError` subclass naming what failed and stores nothing.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import (
    CommitmentError,
    ExpiredMetadataError,
    FeedGapError,
    FeedOrderError,
    InconsistentCheckpointError,
    LogIntegrityError,
    ProofError,
    RollbackError,
    SignatureError,
    TamperedFileError,
    TerminalError,
    TransientError,
    VerificationError,
)
from pipelines.feeds.publish import FEED_SCHEMA, feed_manifest_value
from pipelines.feeds.wire import (
    ROLE_MANIFEST,
    ROLE_RECEIPT,
    ROLE_ROOT,
    ROLE_TIMESTAMP,
    Envelope,
    Manifest,
    QueryReceipt,
    Root,
    Timestamp,
    sha256_hex,
    verify_root_update,
)
from pipelines.ledger.entries import Entry, EntryType, commitment
from pipelines.ledger.merkle import (
    consistency_path,
    inclusion_path,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from pipelines.ledger.note import Checkpoint, open_checkpoint
from pipelines.ledger.proof import TileReader
from pipelines.ledger.tiles import Tile
from pipelines.numbers import mask, normalise

log = logging.getLogger(__name__)

STATE_DB = "feed.duckdb"
_E164 = re.compile(r"\+[1-9][0-9]{4,14}")

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ClientConfig:
    """Limits and policy of a pull, with safe defaults."""

    max_metadata_bytes: int = 1 << 20  # root, timestamp and manifest files
    max_file_bytes: int = 4 << 30  # one day's parquet
    max_root_rotations: int = 1024  # roots followed in one pull
    require_ledger: bool = True  # refuse manifests that no ledger entry commits to
    timeout_s: float = 120.0


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
        except httpx.HTTPError as exc:
            raise TransientError(f"{self.base_url}{path}: {exc}; retry later") from exc

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class PullReport:
    root_version: int
    from_seq: int  # the last seq stored before this pull (0: none)
    to_seq: int
    rows: int  # rows stored by this pull
    checkpoint_size: int | None
    up_to_date: bool  # nothing new was published


@dataclass(frozen=True)
class LocalAnswer:
    recycled: bool
    row: dict[str, Any] | None  # the feed row that says why (the first disconnection since)
    covered_from: dt.date  # first feed day stored; answers are only about events since


# --------------------------------------------------------------------------- local store


_DDL = (
    """CREATE TABLE IF NOT EXISTS feed_rows (
        seq BIGINT NOT NULL, msisdn VARCHAR NOT NULL, event VARCHAR NOT NULL,
        disconnected_on DATE, released_on DATE, reissued_on DATE, region VARCHAR,
        feed_date DATE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS manifests (
        seq BIGINT NOT NULL, feed_date DATE NOT NULL, sha256 VARCHAR NOT NULL, manifest BLOB NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS client_state (key VARCHAR PRIMARY KEY, value BLOB NOT NULL)",
)


def _connect(state_dir: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    state_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(state_dir / STATE_DB), read_only=read_only)
    if not read_only:
        for stmt in _DDL:
            con.execute(stmt)
    return con


def _state(con: duckdb.DuckDBPyConnection) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in con.execute("SELECT key, value FROM client_state").fetchall()}


@dataclass
class _Trusted:
    root: Envelope[Root] | None = None
    timestamp_version: int = 0
    seq: int = 0
    manifest_sha256: str | None = None
    feed_date: dt.date | None = None
    last_row_seq: int = 0
    checkpoint: bytes | None = None

    @classmethod
    def load(cls, state: dict[str, bytes]) -> _Trusted:
        t = cls()
        if "root" in state:
            t.root = Envelope.from_bytes(state["root"], Root, "stored root")
        t.timestamp_version = int(state.get("timestamp_version", b"0"))
        t.seq = int(state.get("seq", b"0"))
        t.manifest_sha256 = state["manifest_sha256"].decode() if "manifest_sha256" in state else None
        t.feed_date = dt.date.fromisoformat(state["feed_date"].decode()) if "feed_date" in state else None
        t.last_row_seq = int(state.get("last_row_seq", b"0"))
        t.checkpoint = state.get("checkpoint")
        return t


# --------------------------------------------------------------------------- ledger over HTTP


class _HttpTiles(TileReader):
    """The ledger's TileReader, reading tiles from the server instead of a directory."""

    def __init__(self, fetcher: Fetcher, size: int, shared: dict[str, bytes]) -> None:
        super().__init__(Path("ledger"), size)
        self._fetcher = fetcher
        self._shared = shared  # every tile path names fixed content, so one cache serves all sizes

    def _read(self, tile: Tile) -> bytes:
        data = self._shared.get(tile.path)
        if data is None:
            data = self._fetcher.get(f"ledger/{tile.path}", 1 << 20)
            if data is None:
                raise LogIntegrityError(
                    f"the server has no ledger/{tile.path}, which the tree of size {self.size} needs"
                )
            self._shared[tile.path] = data
        return data


def _verify_ledger(
    fetcher: Fetcher,
    root: Root,
    manifest: Manifest,
    previous: Checkpoint | None,
    tile_cache: dict[str, bytes],
) -> tuple[Checkpoint, bytes]:
    ref = manifest.ledger
    assert ref is not None
    if root.ledger is None:
        raise SignatureError(
            f"manifest seq {manifest.seq} names a ledger checkpoint but root "
            f"v{root.version} names no ledger key to verify it with"
        )
    note = ref.checkpoint.encode("utf-8")
    cp = open_checkpoint(note, root.ledger.verifier_key, root.ledger.origin)
    if not 0 <= ref.index < cp.size:
        raise ProofError(
            f"manifest seq {manifest.seq}: ledger index {ref.index} is outside its "
            f"checkpoint of size {cp.size}"
        )
    tiles = _HttpTiles(fetcher, cp.size, tile_cache)
    raw = tiles.entry(ref.index)
    entry = Entry.from_bytes(raw)
    if entry.entry_type != EntryType.FEED_MANIFEST:
        raise CommitmentError(
            f"ledger entry {ref.index} is a {entry.entry_type.label} entry, not the "
            f"feed_manifest of seq {manifest.seq}"
        )
    value = feed_manifest_value(manifest.feed_date, manifest.seq, manifest.core_sha256())
    if commitment(bytes.fromhex(ref.opening), EntryType.FEED_MANIFEST, value.to_bytes()) != entry.commitment:
        raise CommitmentError(
            f"ledger entry {ref.index} does not commit to manifest seq "
            f"{manifest.seq} ({manifest.feed_date}): the manifest was altered"
        )
    verify_inclusion(leaf_hash(raw), ref.index, cp.size, inclusion_path(tiles, ref.index, cp.size), cp.root)
    if previous is not None:
        if cp.size < previous.size:
            raise InconsistentCheckpointError(
                f"manifest seq {manifest.seq} names a ledger of size {cp.size}, smaller than size "
                f"{previous.size} already seen: the ledger was rolled back"
            )
        proof = consistency_path(tiles, previous.size, cp.size)
        verify_consistency(previous.size, cp.size, proof, previous.root, cp.root)
    return cp, note


# --------------------------------------------------------------------------- pull


def _require(fetcher: Fetcher, path: str, max_bytes: int, what: str) -> bytes:
    data = fetcher.get(path, max_bytes)
    if data is None:
        raise FeedGapError(f"{what} ({path}) is missing on the server")
    return data


def _check_fresh(expires: dt.datetime, now: dt.datetime, what: str) -> None:
    if expires <= now:
        raise ExpiredMetadataError(
            f"{what} expired at {expires:%Y-%m-%dT%H:%M:%SZ} (now {now:%Y-%m-%dT%H:%M:%SZ}): the feed "
            "is frozen or stale; do not trust it, and tell the carrier"
        )


def _verify_rows(data: bytes, manifest: Manifest, first_seq: int) -> pa.Table:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise TamperedFileError(f"feed seq {manifest.seq}: the parquet file does not parse ({exc})") from None
    if table.schema.names != FEED_SCHEMA.names or not all(
        a.type == b.type for a, b in zip(table.schema, FEED_SCHEMA, strict=True)
    ):
        raise TamperedFileError(f"feed seq {manifest.seq}: unexpected columns {table.schema.names}")
    if table.num_rows != manifest.row_count:
        raise TamperedFileError(
            f"feed seq {manifest.seq}: {table.num_rows} rows, the manifest says {manifest.row_count}"
        )
    if manifest.row_seq_start != first_seq:
        raise FeedGapError(
            f"feed seq {manifest.seq} starts at row {manifest.row_seq_start}, expected "
            f"{first_seq}: rows are missing or repeated"
        )
    seqs = table.column("seq").to_numpy()
    if not np.array_equal(seqs, np.arange(first_seq, first_seq + table.num_rows)):
        raise FeedGapError(f"feed seq {manifest.seq}: row seqs are not contiguous from {first_seq}")
    events = set(table.column("event").to_pylist())
    if not events <= {"released", "reissued"}:
        raise TamperedFileError(f"feed seq {manifest.seq}: unknown event(s) {sorted(events)}")
    return table


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
    con = _connect(state_dir)
    try:
        return _pull(fetch, con, root_file, clock(), config)
    finally:
        con.close()
        if own and isinstance(fetch, HttpFetcher):
            fetch.close()


@dataclass
class _Verified:
    roots: list[Envelope[Root]] = field(default_factory=list)
    manifests: list[tuple[Envelope[Manifest], bytes]] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)


def _pull(
    fetch: Fetcher,
    con: duckdb.DuckDBPyConnection,
    root_file: Path | None,
    now: dt.datetime,
    config: ClientConfig,
) -> PullReport:
    trusted = _Trusted.load(_state(con))
    meta_max = config.max_metadata_bytes

    # 1. roots
    root = trusted.root
    if root is None:
        if root_file is None:
            raise SignatureError(
                "no trusted root yet: the first pull needs --root FILE, the carrier's root.json "
                "obtained out of band (trust on first use only with an explicit root)"
            )
        root = Envelope.from_bytes(root_file.read_bytes(), Root, str(root_file))
        root.verify_role(root.signed, ROLE_ROOT, f"pinned root {root_file}")
    chain = [root]
    for _ in range(config.max_root_rotations):
        version = chain[-1].signed.version + 1
        data = fetch.get(f"feeds/roots/{version}.root.json", meta_max)
        if data is None:
            break
        new = Envelope.from_bytes(data, Root, f"root v{version}")
        verify_root_update(chain[-1], new, data)
        chain.append(new)
    root = chain[-1]
    _check_fresh(root.signed.expires, now, f"root v{root.signed.version}")

    # 2. timestamp
    ts_bytes = _require(fetch, "feeds/timestamp.json", meta_max, "timestamp")
    ts_env = Envelope.from_bytes(ts_bytes, Timestamp, "timestamp.json")
    ts_env.verify_role(root.signed, ROLE_TIMESTAMP, "timestamp.json")
    ts = ts_env.signed
    _check_fresh(ts.expires, now, "timestamp.json")
    if ts.version < trusted.timestamp_version or ts.manifest.seq < trusted.seq:
        raise RollbackError(
            f"the server offers timestamp v{ts.version} (manifest seq {ts.manifest.seq}) but this "
            f"client already trusts v{trusted.timestamp_version} (seq {trusted.seq}): a rollback"
        )
    if ts.manifest.seq == trusted.seq and ts.manifest.sha256 != trusted.manifest_sha256:
        raise RollbackError(
            f"timestamp pins a different manifest for seq {trusted.seq} than the one stored: the "
            "feed was forked or rewritten"
        )

    # 3. manifests
    got = _Verified(roots=chain)
    prev_sha, prev_date = trusted.manifest_sha256, trusted.feed_date
    for seq in range(trusted.seq + 1, ts.manifest.seq + 1):
        data = _require(fetch, f"feeds/manifests/{seq}.json", meta_max, f"manifest seq {seq}")
        env = Envelope.from_bytes(data, Manifest, f"manifest seq {seq}")
        m = env.signed
        if m.seq != seq:
            raise FeedOrderError(f"manifests/{seq}.json holds manifest seq {m.seq}: manifests were reordered")
        if m.prev_manifest_sha256 != prev_sha:
            raise FeedOrderError(
                f"manifest seq {seq} ({m.feed_date}) does not chain to seq {seq - 1}: its "
                "prev_manifest_sha256 differs (reordered, replaced or forked feed)"
            )
        if prev_date is not None and m.feed_date <= prev_date:
            raise FeedOrderError(f"manifest seq {seq} is dated {m.feed_date}, not after {prev_date}")
        _verify_signature_any(env, chain, f"manifest seq {seq}")
        got.manifests.append((env, data))
        prev_sha, prev_date = sha256_hex(data), m.feed_date
    if got.manifests:
        newest_env, newest_bytes = got.manifests[-1]
        pinned = ts.manifest
        if len(newest_bytes) != pinned.length or sha256_hex(newest_bytes) != pinned.sha256:
            raise TamperedFileError(
                f"manifest seq {pinned.seq} does not match the length and SHA-256 the timestamp pins"
            )
        newest_env.verify_role(root.signed, ROLE_MANIFEST, f"manifest seq {pinned.seq}")
        _check_fresh(newest_env.signed.expires, now, f"manifest seq {pinned.seq}")

    # 4. files
    next_row = trusted.last_row_seq + 1
    for env, _ in got.manifests:
        m = env.signed
        meta = next((f for f in m.files if f.path.endswith("/recycled.parquet")), None)
        if meta is None:
            raise TamperedFileError(f"manifest seq {m.seq} lists no recycled.parquet")
        data = _require(fetch, f"feeds/{meta.path}", config.max_file_bytes, f"feed file of seq {m.seq}")
        if len(data) != meta.length or sha256_hex(data) != meta.sha256:
            raise TamperedFileError(
                f"{meta.path}: length or SHA-256 differs from the signed manifest seq {m.seq}; the "
                "file was altered in transit or on the server"
            )
        if meta.rows != m.row_count:
            raise TamperedFileError(f"manifest seq {m.seq}: file rows {meta.rows} != row_count {m.row_count}")
        table = _verify_rows(data, m, next_row)
        got.tables.append(
            table.append_column("feed_date", pa.array([m.feed_date] * table.num_rows, pa.date32()))
        )
        next_row += table.num_rows

    # 5. ledger
    checkpoint = None
    last_note = trusted.checkpoint
    if last_note is not None and root.signed.ledger is not None:
        checkpoint = open_checkpoint(last_note, root.signed.ledger.verifier_key, root.signed.ledger.origin)
    tile_cache: dict[str, bytes] = {}
    for env, _ in got.manifests:
        m = env.signed
        if m.ledger is None:
            if config.require_ledger:
                raise CommitmentError(
                    f"manifest seq {m.seq} ({m.feed_date}) is not committed to the ledger; this "
                    "client requires every manifest to be logged"
                )
            continue
        checkpoint, last_note = _verify_ledger(fetch, root.signed, m, checkpoint, tile_cache)

    # all verified: store
    rows = sum(t.num_rows for t in got.tables)
    _store(con, root, ts, got, last_note, next_row - 1)
    to_seq = ts.manifest.seq
    log.info("pull: root v%d, seq %d -> %d, %d row(s)", root.signed.version, trusted.seq, to_seq, rows)
    return PullReport(
        root_version=root.signed.version,
        from_seq=trusted.seq,
        to_seq=to_seq,
        rows=rows,
        checkpoint_size=None if checkpoint is None else checkpoint.size,
        up_to_date=not got.manifests,
    )


def _verify_signature_any(env: Envelope[Manifest], chain: Sequence[Envelope[Root]], what: str) -> None:
    """An older manifest may be signed by an online key a later root rotated away."""
    errors = []
    for root in reversed(chain):
        try:
            env.verify_role(root.signed, ROLE_MANIFEST, what)
            return
        except SignatureError as exc:
            errors.append(str(exc))
    raise SignatureError(errors[0])


def _store(
    con: duckdb.DuckDBPyConnection,
    root: Envelope[Root],
    ts: Timestamp,
    got: _Verified,
    checkpoint: bytes | None,
    last_row_seq: int,
) -> None:
    state: dict[str, bytes] = {
        "root": root.to_bytes(),
        "timestamp_version": str(ts.version).encode(),
    }
    if got.manifests:
        env, data = got.manifests[-1]
        state |= {
            "seq": str(env.signed.seq).encode(),
            "manifest_sha256": sha256_hex(data).encode(),
            "feed_date": env.signed.feed_date.isoformat().encode(),
            "last_row_seq": str(last_row_seq).encode(),
        }
    if checkpoint is not None:
        state["checkpoint"] = checkpoint
    con.execute("BEGIN TRANSACTION")
    try:
        if got.tables:
            con.register("pulled_rows", pa.concat_tables(got.tables))
            con.execute(
                "INSERT INTO feed_rows SELECT seq, msisdn, event, disconnected_on, released_on, "
                "reissued_on, region, feed_date FROM pulled_rows"
            )
            con.unregister("pulled_rows")
        for env, data in got.manifests:
            con.execute(
                "INSERT INTO manifests VALUES (?, ?, ?, ?)",
                [env.signed.seq, env.signed.feed_date, sha256_hex(data), data],
            )
        for key, value in state.items():
            con.execute("INSERT OR REPLACE INTO client_state VALUES (?, ?)", [key, value])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# --------------------------------------------------------------------------- local check


class LocalFeed:
    """The pulled feed, opened read-only, for many local checks (``with LocalFeed(dir) as feed``)."""

    _COLS = ("seq", "msisdn", "event", "disconnected_on", "released_on", "reissued_on", "region", "feed_date")

    def __init__(self, state_dir: Path, default_region: str = "CN") -> None:
        if not (state_dir / STATE_DB).exists():
            raise TerminalError(f"{state_dir} holds no pulled feed; run `recycle pull` first")
        self._con = _connect(state_dir, read_only=True)
        self._region = default_region
        first = self._con.execute("SELECT min(feed_date) FROM manifests").fetchone()
        if first is None or first[0] is None:
            self._con.close()
            raise TerminalError(f"{state_dir} holds no verified feed yet; run `recycle pull` first")
        self.covered_from: dt.date = first[0]

    def __enter__(self) -> LocalFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def check(self, number: str, since: dt.date) -> LocalAnswer:
        """Was ``number`` recycled since ``since``? (FCC RND ``yes``/``no``)

        Yes when a row says the number was permanently disconnected on or after ``since``: an
        account bound to it before ``disconnected_on`` belongs to a prior owner.
        """
        e164 = number if _E164.fullmatch(number) else normalise(number, self._region)
        if e164 is None:
            raise TerminalError(f"{mask(number)} is not a valid phone number; give it in E.164 (+86...)")
        row = self._con.execute(
            f"SELECT {', '.join(self._COLS)} FROM feed_rows WHERE msisdn = ? AND disconnected_on >= ? "
            "ORDER BY disconnected_on, seq LIMIT 1",
            [e164, since],
        ).fetchone()
        found = None if row is None else dict(zip(self._COLS, row, strict=True))
        return LocalAnswer(row is not None, found, self.covered_from)


def check_local(state_dir: Path, number: str, since: dt.date, default_region: str = "CN") -> LocalAnswer:
    """One local check (see :meth:`LocalFeed.check`)."""
    with LocalFeed(state_dir, default_region) as feed:
        return feed.check(number, since)


def stored_root(state_dir: Path) -> Envelope[Root] | None:
    con = _connect(state_dir, read_only=True)
    try:
        state = _state(con)
    finally:
        con.close()
    return None if "root" not in state else Envelope.from_bytes(state["root"], Root, "stored root")


def verify_receipt(
    receipt: dict[str, Any], root: Root, phones: Sequence[str], dates: Sequence[str], answers: Sequence[str]
) -> QueryReceipt:
    """Check a bulk-check receipt: signed by the receipt role, digests match what was asked and answered."""
    from pipelines.feeds.wire import canonical_json

    env = Envelope.from_bytes(canonical_json(receipt), QueryReceipt, "query receipt")
    env.verify_role(root, ROLE_RECEIPT, "query receipt")
    lines = "".join(f"{p},{d}\n" for p, d in zip(phones, dates, strict=True)).encode()
    if sha256_hex(lines) != env.signed.request_sha256:
        raise TamperedFileError("the receipt's request_sha256 is not this request")
    if sha256_hex("".join(f"{a}\n" for a in answers).encode()) != env.signed.response_sha256:
        raise TamperedFileError("the receipt's response_sha256 does not match these answers")
    if env.signed.pairs != len(answers):
        raise TamperedFileError(f"the receipt covers {env.signed.pairs} pairs, not {len(answers)}")
    return env.signed


__all__ = [
    "ClientConfig",
    "Fetcher",
    "HttpFetcher",
    "LocalAnswer",
    "LocalFeed",
    "PullReport",
    "VerificationError",
    "check_local",
    "pull",
    "stored_root",
    "verify_receipt",
]
