"""The daily feed: rows, seqs, manifests, timestamp, root rotation, idempotency, ledger commitment."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import jsonschema
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from lifecycle_testkit import insert_tenure
from number_recycling_client.ledger.note import open_checkpoint
from number_recycling_client.wire import (
    ROLE_MANIFEST,
    ROLE_ROOT,
    ROLE_TIMESTAMP,
    Envelope,
    Manifest,
    Root,
    Timestamp,
    sha256_hex,
    verify_root_update,
)

import pipelines.feeds.publish as feeds
from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.errors import FeedConflictError, SignatureError
from pipelines.feeds.publish import (
    FeedPaths,
    ensure_root,
    feed_manifest_value,
    load_root,
    publish_feed,
    rotate_root,
)
from pipelines.layout import Layout
from pipelines.ledger.ledger import Ledger
from pipelines.ledger.openings import OpeningsStore
from pipelines.ledger.signer import load_or_create_signer

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "feeds"
D1 = dt.date(2026, 9, 1)


def day(n: int) -> dt.date:
    return D1 + dt.timedelta(days=n - 1)


# ------------------------------------------------------------------ lifecycle rows (as lifecycle writes them)


def release(
    con: duckdb.DuckDBPyConnection,
    msisdn: str,
    tid: str,
    disconnected: dt.date,
    released: dt.date,
    logical: dt.date | None = None,
    region: str = "GD",
) -> None:
    con.execute(
        "INSERT INTO releases VALUES (?, ?, ?, ?, 2, false, ?, ?)",
        [msisdn, tid, disconnected, released, logical or released, region],
    )


def reissue(
    con: duckdb.DuckDBPyConnection,
    msisdn: str,
    prior: str | None,
    new: str,
    on: dt.date,
    disconnected: dt.date | None,
    released: dt.date | None,
    region: str = "GD",
) -> None:
    con.execute(
        "INSERT INTO reissues VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'f', 1)",
        [msisdn, prior, new, on, disconnected, released, released is None, on, region],
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={}, data_dir=tmp_path / "data")


@pytest.fixture
def con(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    with open_state(Layout(settings.data_dir).state_db) as c:
        yield c


A, B, C, P, S, R = (f"+86138000000{i:02d}" for i in range(1, 7))


def history(con: duckdb.DuckDBPyConnection) -> None:
    """Day 1: A released; B reissued (after release on day 1 too); day 3: C reissued with a
    violation. P was ported out, came back and was reissued on day 2 (a change of subscriber,
    listed with prior_end port_out); S is suspended (no release); R was cancelled and restored
    (no release)."""
    insert_tenure(con, "TA", A, dt.date(2020, 1, 1), dt.date(2026, 6, 1), "cancel")
    release(con, A, "TA", dt.date(2026, 6, 1), day(1))
    insert_tenure(con, "TB", B, dt.date(2021, 1, 1), dt.date(2026, 5, 1), "reissue")
    release(con, B, "TB", dt.date(2026, 5, 1), day(1))
    insert_tenure(con, "TB2", B, day(1))
    reissue(con, B, "TB", "TB2", day(1), dt.date(2026, 5, 1), day(1))
    insert_tenure(con, "TC", C, dt.date(2022, 1, 1), day(3), "reissue", region="BJ")
    insert_tenure(con, "TC2", C, day(3), region="BJ")
    reissue(con, C, "TC", "TC2", day(3), day(3), None, region="BJ")
    insert_tenure(con, "TP", P, dt.date(2019, 1, 1), dt.date(2026, 8, 1), "port_out")
    insert_tenure(con, "TP2", P, day(2))
    reissue(con, P, "TP", "TP2", day(2), dt.date(2026, 8, 1), None)
    insert_tenure(con, "TS", S, dt.date(2019, 1, 1))  # suspended: the tenure is still open
    insert_tenure(con, "TR", R, dt.date(2019, 1, 1))  # cancelled then restored: open again, no release


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load(path: Path, kind: type) -> Envelope:  # type: ignore[type-arg]
    return Envelope.from_bytes(path.read_bytes(), kind)


# ------------------------------------------------------------------ tests


def test_rows_come_only_from_releases_and_reissues(
    settings: Settings, con: duckdb.DuckDBPyConnection
) -> None:
    history(con)
    reports = [publish_feed(settings, day(n), con) for n in (1, 2, 3)]
    paths = FeedPaths.of(settings)

    d1 = pq.read_table(paths.day_dir(day(1)) / "recycled.parquet").to_pylist()
    assert [(r["msisdn"], r["event"], r["seq"]) for r in d1] == [
        (A, "released", 1),
        (B, "released", 2),
        (B, "reissued", 3),
    ]
    assert d1[2]["disconnected_on"] == dt.date(2026, 5, 1) and d1[2]["reissued_on"] == day(1)
    assert d1[0]["reissued_on"] is None and d1[0]["region"] == "GD"
    assert [r["prior_end"] for r in d1] == ["cancel", "reissue", "reissue"]
    # day 2: the reissue of a number that came back from a port is a change of subscriber too,
    # flagged by prior_end (docs/answers.md); the port itself never is
    d2 = pq.read_table(paths.day_dir(day(2)) / "recycled.parquet").to_pylist()
    assert [(r["msisdn"], r["event"], r["seq"], r["prior_end"]) for r in d2] == [
        (P, "reissued", 4, "port_out")
    ]
    d3 = pq.read_table(paths.day_dir(day(3)) / "recycled.parquet").to_pylist()
    assert [(r["msisdn"], r["event"], r["seq"], r["released_on"], r["region"]) for r in d3] == [
        (C, "reissued", 5, None, "BJ")
    ]
    every = {
        r["msisdn"]
        for n in (1, 2, 3)
        for r in pq.read_table(paths.day_dir(day(n)) / "recycled.parquet").to_pylist()
    }
    assert not every & {S, R}
    # CSV and Parquet carry the same rows
    csv = pacsv.read_csv(
        paths.day_dir(day(1)) / "recycled.csv",
        convert_options=pacsv.ConvertOptions(column_types={"msisdn": "string"}),
    ).to_pylist()
    assert [(r["msisdn"], r["event"], r["seq"]) for r in csv] == [
        (r["msisdn"], r["event"], r["seq"]) for r in d1
    ]
    assert [(r.seq, r.rows, r.row_seq_start, r.released, r.reissued) for r in reports] == [
        (1, 3, 1, 2, 1),
        (2, 1, 4, 0, 1),
        (3, 1, 5, 0, 1),
    ]


def test_manifests_chain_pin_their_files_and_match_the_schemas(
    settings: Settings, con: duckdb.DuckDBPyConnection
) -> None:
    history(con)
    notices_rows = {n: publish_feed(settings, day(n), con).notices for n in (1, 2, 3)}
    paths = FeedPaths.of(settings)
    root = load(paths.current_root, Root).signed
    prev = None
    for n in (1, 2, 3):
        raw = paths.manifest(day(n)).read_bytes()
        assert raw == paths.by_seq(n).read_bytes()
        jsonschema.validate(json.loads(raw), json.loads((SCHEMAS / "manifest.schema.json").read_text()))
        env = Envelope.from_bytes(raw, Manifest)
        env.verify_role(root, ROLE_MANIFEST, "manifest")
        m = env.signed
        assert (m.seq, m.feed_date, m.prev_manifest_sha256) == (n, day(n), prev)
        assert m.expires == dt.datetime(2026, 9, n, tzinfo=dt.UTC) + dt.timedelta(days=31)
        for f in m.files:
            data = (paths.root / f.path).read_bytes()
            # recycled.* carry the day's rows; notices.* the pending list's
            rows = m.row_count if "/recycled." in f.path else notices_rows[n]
            assert (len(data), hashlib.sha256(data).hexdigest(), f.rows) == (f.length, f.sha256, rows)
        prev = sha256_hex(raw)
    stamp_raw = paths.timestamp.read_bytes()
    jsonschema.validate(json.loads(stamp_raw), json.loads((SCHEMAS / "timestamp.schema.json").read_text()))
    jsonschema.validate(
        json.loads(paths.current_root.read_bytes()), json.loads((SCHEMAS / "root.schema.json").read_text())
    )
    stamp = Envelope.from_bytes(stamp_raw, Timestamp)
    stamp.verify_role(root, ROLE_TIMESTAMP, "timestamp")
    assert stamp.signed.manifest.seq == 3 and stamp.signed.manifest.sha256 == prev
    assert stamp.signed.expires == dt.datetime(2026, 9, 5, tzinfo=dt.UTC)  # 2 days after D, from D
    # the rolling snapshot holds every row so far, in seq order
    snap = pq.read_table(paths.root / "snapshot" / "recycled.parquet")
    assert snap.column("seq").to_pylist() == [1, 2, 3, 4, 5]
    assert Envelope.from_bytes(stamp_raw, Timestamp).signed.version == 3


def test_rerunning_days_is_byte_identical(settings: Settings, con: duckdb.DuckDBPyConnection) -> None:
    history(con)
    for n in (1, 2, 3):
        publish_feed(settings, day(n), con)
    before = tree_bytes(Layout(settings.data_dir).feeds_dir)
    for n in (2, 3, 1):
        report = publish_feed(settings, day(n), con)
        assert report.already_published
    assert tree_bytes(Layout(settings.data_dir).feeds_dir) == before


def test_published_days_never_change_and_days_go_in_order(
    settings: Settings, con: duckdb.DuckDBPyConnection
) -> None:
    history(con)
    publish_feed(settings, day(1), con)
    publish_feed(settings, day(2), con)
    release(con, S, "TS", day(1), day(1))  # a late row for an already published day
    with pytest.raises(FeedConflictError, match="already published"):
        publish_feed(settings, day(1), con)
    with pytest.raises(FeedConflictError, match="not published"):
        publish_feed(settings, day(4), con)
    with pytest.raises(FeedConflictError, match="start at"):
        publish_feed(settings, day(0), con)


def test_snapshot_keeps_the_last_window_of_days(
    settings: Settings, con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "SNAPSHOT_DAYS", 2)
    history(con)
    for n in (1, 2, 3):
        report = publish_feed(settings, day(n), con)
    snap = pq.read_table(FeedPaths.of(settings).root / "snapshot" / "recycled.parquet")
    assert snap.column("seq").to_pylist() == [4, 5]  # days 2..3 only
    assert report.snapshot_rows == 2


def test_a_failed_publication_leaves_nothing_half_written(
    settings: Settings, con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    history(con)
    publish_feed(settings, day(1), con)
    paths = FeedPaths.of(settings)
    stamp = paths.timestamp.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(feeds.os, "rename", crash)
    with pytest.raises(OSError, match="disk full"):
        publish_feed(settings, day(2), con)
    monkeypatch.undo()
    assert not paths.day_dir(day(2)).exists()
    assert [p.name for p in (paths.root / "daily").iterdir()] == [day(1).isoformat()]
    assert paths.timestamp.read_bytes() == stamp
    assert publish_feed(settings, day(2), con).seq == 2  # and the rerun succeeds


def test_manifest_is_committed_to_the_ledger_before_publication(
    settings: Settings, con: duckdb.DuckDBPyConnection
) -> None:
    history(con)
    layout = Layout(settings.data_dir)
    signer = load_or_create_signer(layout.keys_dir, settings.ledger.key_name)
    with OpeningsStore.open(settings.data_dir / "private" / "openings", layout.keys_dir) as store:
        ledger = Ledger.open(layout.ledger_dir, signer, settings.ledger.origin, store)
        try:
            r1 = publish_feed(settings, day(1), con, ledger)
            r2 = publish_feed(settings, day(2), con, ledger)
            again = publish_feed(settings, day(2), con, ledger)
            size = ledger.size
            opened = ledger.opening(r2.ledger_index or 0)
        finally:
            ledger.close()
    assert (r1.ledger_index, r2.ledger_index, again.ledger_index, size) == (0, 1, 1, 2)
    m = load(FeedPaths.of(settings).manifest(day(2)), Manifest).signed
    assert m.ledger is not None and m.ledger.index == 1
    assert opened.value == feed_manifest_value(day(2), 2, m.core_sha256())
    assert opened.opening.hex() == m.ledger.opening
    root = load_root(settings)
    assert root is not None and root.signed.ledger is not None
    cp = open_checkpoint(
        m.ledger.checkpoint.encode(), root.signed.ledger.verifier_key, settings.ledger.origin
    )
    assert cp.size == 2


def test_root_rotation_is_signed_by_old_and_new_keys(
    settings: Settings, con: duckdb.DuckDBPyConnection
) -> None:
    history(con)
    publish_feed(settings, day(1), con)
    v1 = load_root(settings)
    assert v1 is not None
    v2 = rotate_root(settings, day(2))
    paths = FeedPaths.of(settings)
    assert v2.signed.version == 2 and paths.root_version(2).read_bytes() == paths.current_root.read_bytes()
    verify_root_update(v1, v2, v2.to_bytes())
    assert v1.signed.roles[ROLE_ROOT].keyids != v2.signed.roles[ROLE_ROOT].keyids
    assert len(v2.signatures) == 2
    # day 2 is signed by the new online key: the old root cannot verify it, the new one can
    publish_feed(settings, day(2), con)
    stamp = load(paths.timestamp, Timestamp)
    stamp.verify_role(v2.signed, ROLE_TIMESTAMP, "timestamp")
    with pytest.raises(SignatureError):
        stamp.verify_role(v1.signed, ROLE_TIMESTAMP, "timestamp")


def test_root_is_renewed_before_it_expires(settings: Settings) -> None:
    v1 = ensure_root(settings, D1)
    assert ensure_root(settings, D1 + dt.timedelta(days=200)) == v1
    v2 = ensure_root(settings, D1 + dt.timedelta(days=310))
    assert v2.signed.version == 2 and v2.signed.expires > v1.signed.expires
    verify_root_update(v1, v2, v2.to_bytes())
