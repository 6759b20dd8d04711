"""Nights with ``storage = "s3://bucket/prefix"`` against a real S3 server on loopback (moto's
server mode): the drops are only in the bucket and ingest fetches them; afterwards the bucket
holds the feeds, the ledger and the query snapshot byte for byte as the data directory does; a
night that dies between the feed's files and its timestamp leaves a platform reading the bucket
on the previous, complete feed, and the rerun completes it; and the light client pulls and
verifies the feed straight from the bucket's URL, as a platform does through a CDN."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from number_recycling_client import pull as client_pull
from storage_testkit import S3Server, s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures

from pipelines.config import S3StorageSettings, Settings, load_settings
from pipelines.dev.synth import generate
from pipelines.errors import StorageError
from pipelines.feeds.query_snapshot import current_snapshot_dir
from pipelines.nightly.steps import RunContext, run_day
from pipelines.storage import Storage
from pipelines.storage.sync import pull, status

START = dt.date(2026, 9, 1)
NIGHTS = 3
CTX = RunContext(simulate_gateways=True, alerts_mode="record")
CONFIG = """\
[policy.default]
freeze_days = 3
suspend_days = 2
reminder_offsets = [0, 1]
min_effective_reminders = 1
max_hold_days = 2
min_notice_days = 0
"""


def night(n: int) -> dt.date:
    return START + dt.timedelta(days=n - 1)


def local_tree(data: Path, area: str) -> dict[str, bytes]:
    return {
        p.relative_to(data).as_posix(): p.read_bytes()
        for p in sorted((data / area).rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(data).parts)
    }


def bucket_tree(storage: Storage, area: str) -> dict[str, bytes]:
    return {rel: storage.read_bytes(rel) for rel in storage.listing(area)}


def platform_view(storage: Storage) -> tuple[int, str]:
    """What a platform reading the bucket sees: the timestamp's manifest, which must be there
    with the bytes the timestamp pins, and every file that manifest lists, with its hash."""
    stamp = json.loads(storage.read_bytes("feeds/timestamp.json"))["signed"]
    pinned = stamp["manifest"]
    manifest_bytes = storage.read_bytes(f"feeds/{pinned['path']}")
    assert hashlib.sha256(manifest_bytes).hexdigest() == pinned["sha256"]
    manifest = json.loads(manifest_bytes)["signed"]
    for meta in manifest["files"]:
        body = storage.read_bytes(f"feeds/{meta['path']}")
        assert hashlib.sha256(body).hexdigest() == meta["sha256"], meta["path"]
    return stamp["version"], manifest["feed_date"]


@pytest.fixture
def s3_night(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> tuple[Settings, Storage]:  # noqa: F811
    drops = tmp_path / "bss"
    generate(drops, START, NIGHTS, 12, seed=3, defect_rate=0.02, freeze_days=3, suspend_days=2)
    (tmp_path / "recycle.toml").write_text(CONFIG)
    settings = load_settings(
        tmp_path / "recycle.toml",
        env={},
        data_dir=tmp_path / "data",
        storage=f"s3://{s3_bucket}/cn",
        storage_s3=S3StorageSettings(s3_server.endpoint, "us-east-1", allow_http=True),
    )
    storage = Storage.from_settings(settings)
    # The BSS uploads the drops to the bucket; the data directory has no inbox at all.
    for path in sorted((drops / "inbox").rglob("*")):
        if path.is_file():
            storage.write_bytes(path.relative_to(drops).as_posix(), path.read_bytes())
    return settings, storage


@pytest.mark.slow  # about 20 s: three nights, a crashed one and its rerun, a pull, a rebuild
def test_nights_on_s3_publish_in_order_and_survive_a_crash_before_the_timestamp(
    s3_night: tuple[Settings, Storage], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, storage = s3_night
    data = settings.data_dir
    assert not (data / "inbox").exists()
    for n in range(1, NIGHTS):
        run_day(settings, night(n), CTX)
    # ingest fetched the drops (0600 locally); the nights published everything they made
    first_drop = sorted((data / "inbox" / START.isoformat()).iterdir())[0]
    assert first_drop.stat().st_mode & 0o077 == 0
    for area in ("feeds", "ledger"):
        assert bucket_tree(storage, area) == local_tree(data, area), area
    pointed = current_snapshot_dir(settings)
    assert pointed is not None
    assert bucket_tree(storage, f"snapshot/{pointed.name}") == local_tree(data, f"snapshot/{pointed.name}")
    assert storage.read_bytes("snapshot/current") == (data / "snapshot/current").read_bytes()
    assert storage.listing(f"runs/{night(1).isoformat()}/steps")
    before = platform_view(storage)
    assert before[1] == night(NIGHTS - 1).isoformat()

    # The last night dies uploading its timestamp: the bucket keeps serving the previous feed.
    real_write = Storage.write_bytes
    failed: list[str] = []

    def flaky(self: Storage, rel: str, data: bytes) -> None:
        if rel == "feeds/timestamp.json" and not failed:
            failed.append(rel)
            raise StorageError("injected: the connection dropped")
        real_write(self, rel, data)

    monkeypatch.setattr(Storage, "write_bytes", flaky)
    with pytest.raises(StorageError, match="injected"):
        run_day(settings, night(NIGHTS), CTX)
    assert failed
    assert storage.listing(f"feeds/daily/{night(NIGHTS).isoformat()}")  # its files went up ...
    assert platform_view(storage) == before  # ... but the platform still sees the previous feed
    assert status(settings)["feeds"] == ["feeds/timestamp.json"]

    run_day(settings, night(NIGHTS), CTX)  # the rerun completes it
    assert platform_view(storage) == (before[0] + 1, night(NIGHTS).isoformat())
    for area in ("feeds", "ledger"):
        assert bucket_tree(storage, area) == local_tree(data, area), area
    assert not any(status(settings).values())

    # A platform pulls and verifies the feed (ledger inclusion too) straight from the bucket URL.
    base = f"{storage.url.replace('s3://', '')}"
    endpoint = settings.storage_s3.endpoint_url
    when = dt.datetime.combine(night(NIGHTS), dt.time(12), dt.UTC)
    got = client_pull(
        f"{endpoint}/{base}/",
        "no-token-needed",
        tmp_path / "platform",
        data / "feeds/roots/1.root.json",
        clock=lambda: when,
    )
    assert got.to_seq == before[0] + 1

    # A rebuilt worker gets the same ledger, feeds and snapshot back from the bucket.
    rebuilt = load_settings(
        env={}, data_dir=tmp_path / "rebuilt", storage=settings.storage, storage_s3=settings.storage_s3
    )
    pull(rebuilt)
    pointed = current_snapshot_dir(settings)
    assert pointed is not None
    for area in ("feeds", "ledger", f"snapshot/{pointed.name}"):  # the pointed snapshot, not older ones
        assert local_tree(rebuilt.data_dir, area) == local_tree(data, area), area
    assert (rebuilt.data_dir / "snapshot/current").read_bytes() == (data / "snapshot/current").read_bytes()
