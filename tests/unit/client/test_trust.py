"""The client's trust state machine: bytes in, verdicts out, no HTTP and no client database.

:class:`Publisher` is a small repository simulator (roots, manifests, timestamp and each
day's CSV, as bytes; optionally a real ledger in a temporary directory whose tiles are
handed over by a callable); a fixed ``NOW`` is the clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from number_recycling_client.feedfiles import FEED_COLUMNS, GRADE_COLUMNS
from number_recycling_client.trust import LastPull, TrustedFeed, verify_notices, verify_rows
from number_recycling_client.wire import (
    ROLE_MANIFEST,
    ROLE_RECEIPT,
    ROLE_ROOT,
    ROLE_TIMESTAMP,
    Envelope,
    Key,
    LedgerPointer,
    Manifest,
    Role,
    Root,
    Timestamp,
    day_start,
    file_meta,
    keyid_of,
    pin,
    sha256_hex,
)

from pipelines.errors import (
    CommitmentError,
    ExpiredMetadataError,
    FeedGapError,
    FeedOrderError,
    FormatError,
    LogIntegrityError,
    ProofError,
    RollbackError,
    SignatureError,
    TamperedFileError,
)
from pipelines.feeds.publish import FEED_SCHEMA, NOTICE_SCHEMA, _csv_bytes, commit_manifest
from pipelines.ledger import FileSigner, Ledger, OpeningsStore, load_or_create_signer
from pipelines.ledger.signer import verifier_key

D1 = dt.date(2026, 9, 1)
NOW = day_start(D1) + dt.timedelta(days=1, hours=12)  # day 2, noon
ORIGIN = "carrier.example/ledger"


def rows_table(first_seq: int, count: int) -> pa.Table:
    return pa.table(
        {
            "msisdn": [f"+86138000{first_seq + i:05d}" for i in range(count)],
            "event": ["released"] * count,
            "disconnected_on": [dt.date(2026, 8, 1)] * count,
            "released_on": [D1] * count,
            "reissued_on": pa.array([None] * count, pa.date32()),
            "region": ["GD"] * count,
            "seq": pa.array(range(first_seq, first_seq + count), pa.int64()),
            "prior_end": ["cancel"] * count,
            "reminders_reached": pa.array([2] * count, pa.int8()),
            "release_exception": [False] * count,
            "violation": [False] * count,
            "risk": ["low"] * count,
        },
        schema=FEED_SCHEMA,
    )


def feed_csv(table: pa.Table) -> bytes:
    """The day's file as the light client reads it: the publisher's own CSV writer."""
    return _csv_bytes(table)


class Publisher:
    """The carrier's side in memory: documents as bytes, keyed by the path a client would fetch."""

    def __init__(self, tmp: Path, ledger: Ledger | None = None, signer: FileSigner | None = None) -> None:
        self.root_key = load_or_create_signer(tmp / "keys", "t/root")
        self.online = load_or_create_signer(tmp / "keys", "t/online")
        self.ledger = ledger
        pointer = None if signer is None else LedgerPointer(ORIGIN, verifier_key(signer))
        self.roots = [Envelope.create(self.root_doc(1, pointer), [self.root_key])]
        self.manifests: list[bytes] = []
        self.files: list[bytes] = []

    def root_doc(self, version: int, ledger: LedgerPointer | None = None) -> Root:
        online = Role((keyid_of(self.online.public_key),), 1)
        keys = [self.root_key.public_key, self.online.public_key]
        return Root(
            version=version,
            expires=day_start(D1) + dt.timedelta(days=365),
            keys={keyid_of(k): Key(k) for k in keys},
            roles={
                ROLE_ROOT: Role((keyid_of(self.root_key.public_key),), 1),
                ROLE_MANIFEST: online,
                ROLE_TIMESTAMP: online,
                ROLE_RECEIPT: online,
            },
            ledger=ledger,
        )

    def publish(self, rows: int = 2, **changes: Any) -> Manifest:
        seq = len(self.manifests) + 1
        first = 1 + sum(Envelope.from_bytes(m, Manifest).signed.row_count for m in self.manifests)
        data = feed_csv(rows_table(first, rows))
        day = D1 + dt.timedelta(days=seq - 1)
        manifest = Manifest(
            feed_date=day,
            seq=seq,
            expires=day_start(day) + dt.timedelta(days=31),
            prev_manifest_sha256=sha256_hex(self.manifests[-1]) if self.manifests else None,
            row_seq_start=first,
            row_count=rows,
            files=(file_meta(f"daily/{day}/recycled.csv", data, rows),),
            snapshot=(),
        )
        manifest = dataclasses.replace(manifest, **changes)
        if self.ledger is not None:
            manifest = dataclasses.replace(manifest, ledger=commit_manifest(self.ledger, manifest))
        self.manifests.append(Envelope.create(manifest, [self.online]).to_bytes())
        self.files.append(data)
        return manifest

    def timestamp(self, signer: FileSigner | None = None, **changes: Any) -> bytes:
        seq = len(self.manifests)
        stamp = Timestamp(
            seq, day_start(D1) + dt.timedelta(days=seq + 1), pin("m.json", seq, self.manifests[-1])
        )
        return Envelope.create(dataclasses.replace(stamp, **changes), [signer or self.online]).to_bytes()


@pytest.fixture
def repo(tmp_path: Path) -> Publisher:
    repo = Publisher(tmp_path)
    repo.publish(2)
    repo.publish(3)
    return repo


def trusting(repo: Publisher, last: LastPull | None = None, *, require_ledger: bool = False) -> TrustedFeed:
    trust = TrustedFeed(last or LastPull(), NOW, require_ledger=require_ledger)
    if trust.last.root is None:
        trust.pin_root(repo.roots[0].to_bytes(), "root.json")
    return trust


def through_manifests(trust: TrustedFeed, repo: Publisher) -> TrustedFeed:
    trust.finish_roots()
    trust.update_timestamp(repo.timestamp())
    while (seq := trust.next_manifest_seq) is not None:
        trust.update_manifest(repo.manifests[seq - 1])
    return trust


def through_rows(trust: TrustedFeed, repo: Publisher) -> TrustedFeed:
    through_manifests(trust, repo)
    while (pending := trust.next_feed_file) is not None:
        trust.update_rows(repo.files[pending.seq - 1])
    return trust


def no_tiles(path: str) -> bytes | None:
    raise AssertionError(f"no ledger: no tile should be read ({path})")


# ------------------------------------------------------------------ the whole walk


def test_a_fresh_client_verifies_everything_in_order(repo: Publisher) -> None:
    trust = through_rows(trusting(repo), repo)
    assert trust.verify_ledger(no_tiles) is None
    got = trust.verified()
    assert [env.signed.seq for env, _ in got.manifests] == [1, 2]
    assert [len(t) for t in got.tables] == [2, 3] and got.last_row_seq == 5
    assert [row[-1] for row in got.tables[1]] == [D1 + dt.timedelta(days=1)] * 3  # feed_date appended
    assert got.root.signed.version == 1 and got.timestamp.version == 2


def test_a_client_up_to_date_verifies_nothing_new(repo: Publisher) -> None:
    last = LastPull(
        root=repo.roots[0],
        timestamp_version=2,
        seq=2,
        manifest_sha256=sha256_hex(repo.manifests[-1]),
        feed_date=D1 + dt.timedelta(days=1),
        last_row_seq=5,
    )
    trust = through_rows(trusting(repo, last), repo)
    trust.verify_ledger(no_tiles)
    assert not trust.verified().manifests


def test_each_step_needs_the_one_before(repo: Publisher) -> None:
    trust = trusting(repo)
    with pytest.raises(RuntimeError):
        trust.update_timestamp(repo.timestamp())  # roots not final
    trust.finish_roots()
    with pytest.raises(RuntimeError):
        trust.update_root(repo.roots[0].to_bytes())  # the chain is final
    with pytest.raises(RuntimeError):
        trust.update_manifest(repo.manifests[0])  # no timestamp yet
    trust.update_timestamp(repo.timestamp())
    with pytest.raises(RuntimeError):
        _ = trust.next_feed_file  # manifests first
    with pytest.raises(RuntimeError):
        trust.verified()


# ------------------------------------------------------------------ roots


def test_without_a_trusted_root_nothing_starts(repo: Publisher) -> None:
    with pytest.raises(SignatureError, match="--root"):
        _ = TrustedFeed(LastPull(), NOW).next_root_version


def test_a_pinned_root_must_be_signed_by_its_own_root_keys(repo: Publisher, tmp_path: Path) -> None:
    rogue = load_or_create_signer(tmp_path / "rogue", "rogue/root")
    with pytest.raises(SignatureError, match="pinned root"):
        TrustedFeed(LastPull(), NOW).pin_root(Envelope.create(repo.root_doc(1), [rogue]).to_bytes(), "x")


def test_roots_chain_by_version_and_both_key_sets(repo: Publisher, tmp_path: Path) -> None:
    rogue = load_or_create_signer(tmp_path / "rogue", "rogue/root")
    trust = trusting(repo)
    assert trust.next_root_version == 2
    with pytest.raises(SignatureError, match="root v2"):
        trust.update_root(Envelope.create(repo.root_doc(2), [rogue]).to_bytes())
    with pytest.raises(SignatureError, match="does not follow"):
        trust.update_root(Envelope.create(repo.root_doc(3), [repo.root_key]).to_bytes())
    assert trust.update_root(Envelope.create(repo.root_doc(2), [repo.root_key]).to_bytes()).version == 2
    assert trust.next_root_version == 3


def test_an_expired_root_is_refused(repo: Publisher) -> None:
    trust = TrustedFeed(LastPull(), NOW + dt.timedelta(days=400))
    trust.pin_root(repo.roots[0].to_bytes(), "root.json")
    with pytest.raises(ExpiredMetadataError, match="root v1"):
        trust.finish_roots()


# ------------------------------------------------------------------ timestamp


def test_timestamp_rollback_fork_freeze_and_strangers(repo: Publisher, tmp_path: Path) -> None:
    ahead = LastPull(root=repo.roots[0], timestamp_version=3, seq=3, last_row_seq=9)
    cases: list[tuple[LastPull | None, bytes, type[Exception], str]] = [
        (ahead, repo.timestamp(), RollbackError, "rollback"),
        (
            LastPull(root=repo.roots[0], timestamp_version=2, seq=2, manifest_sha256="0" * 64),
            repo.timestamp(),
            RollbackError,
            "forked",
        ),
        (None, repo.timestamp(expires=NOW), ExpiredMetadataError, "timestamp.json expired"),
        (
            None,
            repo.timestamp(load_or_create_signer(tmp_path / "rogue", "rogue/online")),
            SignatureError,
            "timestamp",
        ),
        (None, repo.timestamp(spec_version="2.0"), FormatError, "upgrade"),
    ]
    for last, stamp, error, message in cases:
        trust = trusting(repo, last)
        trust.finish_roots()
        with pytest.raises(error, match=message):
            trust.update_timestamp(stamp)
        assert trust.timestamp is None


# ------------------------------------------------------------------ manifests


def test_manifests_must_arrive_in_order_and_chain(repo: Publisher, tmp_path: Path) -> None:
    fork = Publisher(tmp_path)  # same keys, another day 1
    fork.publish(4)
    fork.publish(3)
    trust = trusting(repo)
    trust.finish_roots()
    trust.update_timestamp(repo.timestamp())
    with pytest.raises(FeedOrderError, match="reordered"):
        trust.update_manifest(repo.manifests[1])  # seq 2 where seq 1 belongs
    trust.update_manifest(repo.manifests[0])
    with pytest.raises(FeedOrderError, match="does not chain"):
        trust.update_manifest(fork.manifests[1])
    assert trust.next_manifest_seq == 2


def test_the_newest_manifest_must_match_the_pin_and_be_fresh(repo: Publisher, tmp_path: Path) -> None:
    other = Publisher(tmp_path)  # same keys, a different day 2
    other.publish(2)
    other.publish(4)
    trust = trusting(repo)
    trust.finish_roots()
    trust.update_timestamp(repo.timestamp())
    trust.update_manifest(repo.manifests[0])
    with pytest.raises(TamperedFileError, match="timestamp pins"):
        trust.update_manifest(other.manifests[1])

    stale = Publisher(tmp_path)
    stale.publish(2, expires=NOW)
    trust = trusting(stale)
    trust.finish_roots()
    trust.update_timestamp(stale.timestamp())
    with pytest.raises(ExpiredMetadataError, match="manifest seq 1"):
        trust.update_manifest(stale.manifests[0])


# ------------------------------------------------------------------ files


def test_a_file_must_be_what_its_manifest_signs(repo: Publisher) -> None:
    trust = through_manifests(trusting(repo), repo)
    data = bytearray(repo.files[0])
    data[len(data) // 2] ^= 1
    with pytest.raises(TamperedFileError, match="SHA-256"):
        trust.update_rows(bytes(data))
    trust.update_rows(repo.files[0])
    assert trust.next_feed_file is not None and trust.next_feed_file.seq == 2


def test_rows_must_continue_from_the_stored_ones(repo: Publisher) -> None:
    manifest = Envelope.from_bytes(repo.manifests[1], Manifest).signed
    verify_rows(repo.files[1], manifest, 3)
    with pytest.raises(FeedGapError, match="expected 4"):
        verify_rows(repo.files[1], manifest, 4)
    with pytest.raises(TamperedFileError, match="missing"):
        verify_rows(b"not a feed file", manifest, 3)
    with pytest.raises(TamperedFileError, match="does not parse"):
        verify_rows(b"\xff\xfe", manifest, 3)


def test_a_file_of_an_earlier_publisher_reads_with_null_grades(repo: Publisher) -> None:
    manifest = Envelope.from_bytes(repo.manifests[0], Manifest).signed
    older = rows_table(1, 2).drop_columns(list(GRADE_COLUMNS))
    table = verify_rows(feed_csv(older), manifest, 1)
    assert all(len(row) == len(FEED_COLUMNS) for row in table)
    assert [row[-1] for row in table] == [None, None]  # risk, the last column, empty


def notices_table(first_seq: int, events: list[str]) -> pa.Table:
    n = len(events)
    return pa.table(
        {
            "msisdn": [f"+86139000{first_seq + i:05d}" for i in range(n)],
            "event": events,
            "disconnected_on": [dt.date(2026, 8, 30)] * n,
            "earliest_release_on": [dt.date(2026, 9, 6)] * n,
            "cause": ["cancel"] * n,
            "region": ["GD"] * n,
            "seq": pa.array(range(first_seq, first_seq + n), pa.int64()),
        },
        schema=NOTICE_SCHEMA,
    )


def test_a_pending_list_is_contiguous_counted_and_knows_its_events(repo: Publisher) -> None:
    manifest = Envelope.from_bytes(repo.manifests[0], Manifest).signed
    good = feed_csv(notices_table(5, ["pending", "withdrawn"]))
    assert len(verify_notices(good, manifest, 2, 5)) == 2
    with pytest.raises(FeedGapError, match="contiguous from 4"):
        verify_notices(good, manifest, 2, 4)
    with pytest.raises(TamperedFileError, match="the manifest says 3"):
        verify_notices(good, manifest, 3, 5)
    with pytest.raises(TamperedFileError, match="unknown event"):
        verify_notices(feed_csv(notices_table(5, ["released"])), manifest, 1, 5)


# ------------------------------------------------------------------ ledger


@pytest.fixture
def ledger_repo(tmp_path: Path) -> Iterator[tuple[Publisher, Path]]:
    signer = load_or_create_signer(tmp_path / "keys", "carrier.example/ledger")
    store = OpeningsStore.open(tmp_path / "openings", tmp_path / "keys")
    ledger = Ledger.open(tmp_path / "ledger", signer, ORIGIN, store)
    try:
        repo = Publisher(tmp_path, ledger, signer)
        repo.publish(2)
        repo.publish(3)
        yield repo, tmp_path / "ledger"
    finally:
        ledger.close()
        store.close()


def tiles_of(ledger_dir: Path) -> Any:
    def read(path: str) -> bytes | None:
        file = ledger_dir / path
        return file.read_bytes() if file.exists() else None

    return read


def test_every_manifest_is_committed_to_the_ledger(ledger_repo: tuple[Publisher, Path]) -> None:
    repo, ledger_dir = ledger_repo
    trust = through_rows(trusting(repo, require_ledger=True), repo)
    checkpoint = trust.verify_ledger(tiles_of(ledger_dir))
    assert checkpoint is not None and checkpoint.size == 2
    assert (
        trust.verified().checkpoint_note
        == Envelope.from_bytes(repo.manifests[1], Manifest).signed.ledger.checkpoint.encode()
    )  # type: ignore[union-attr]


def test_a_damaged_or_missing_tile_is_refused(ledger_repo: tuple[Publisher, Path]) -> None:
    repo, ledger_dir = ledger_repo
    read = tiles_of(ledger_dir)

    def flipped(path: str) -> bytes | None:  # a hash tile altered: entry bundles stay intact
        data = read(path)
        return data if data is None or "entries" in path else bytes([data[0] ^ 0x80]) + data[1:]

    with pytest.raises(ProofError):
        through_rows(trusting(repo, require_ledger=True), repo).verify_ledger(flipped)
    with pytest.raises(LogIntegrityError, match="tree of size"):
        through_rows(trusting(repo, require_ledger=True), repo).verify_ledger(lambda p: None)


def test_an_unlogged_manifest_is_refused_when_the_ledger_is_required(repo: Publisher) -> None:
    trust = through_rows(trusting(repo, require_ledger=True), repo)
    with pytest.raises(CommitmentError, match="not committed"):
        trust.verify_ledger(no_tiles)


# ------------------------------------------------------------------ a later 1.x publisher


def test_documents_of_a_later_minor_version_pass_the_whole_walk(tmp_path: Path) -> None:
    repo = Publisher(tmp_path)
    later = {"x_later": [1, "two"]}
    repo.publish(2, spec_version="1.7", unrecognized_fields=later)
    trust = trusting(repo)
    trust.finish_roots()
    trust.update_timestamp(repo.timestamp(spec_version="1.3", unrecognized_fields=later))
    manifest = trust.update_manifest(repo.manifests[0])
    assert manifest.unrecognized_fields == later and manifest.spec_version == "1.7"
    trust.update_rows(repo.files[0])
    trust.verify_ledger(no_tiles)
    assert trust.verified().manifests[0][0].to_bytes() == repo.manifests[0]
