"""pipelines.storage: the seam on its three backends (the data directory itself, another
directory, S3 through a real S3 server on loopback), the publication order, the drops' fetch,
and the configuration that chooses them."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from storage_testkit import S3Server, s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures

from pipelines.config import S3StorageSettings, Settings, load_settings
from pipelines.errors import ConfigError, StorageConflictError
from pipelines.storage import Storage, join_storage, parse_storage_url
from pipelines.storage.drops import drop_names, fetch_drops
from pipelines.storage.publish import RECORD, publish_feeds, publish_ledger, push_records
from pipelines.storage.sync import pull, status

D = dt.date(2026, 9, 3)


def s3_settings(data: Path, server: S3Server, bucket: str, prefix: str = "cn") -> Settings:
    return load_settings(
        env={},
        data_dir=data,
        storage=f"s3://{bucket}/{prefix}",
        storage_s3=S3StorageSettings(server.endpoint, "us-east-1", allow_http=True),
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


# ------------------------------------------------------------------ configuration


def test_urls_parse_and_bad_ones_name_the_key_and_an_example() -> None:
    assert parse_storage_url("").kind == "data_dir"
    assert parse_storage_url("file:///mnt/x").path == Path("/mnt/x")
    s3 = parse_storage_url("s3://recycle-prod/cn/")
    assert (s3.kind, s3.bucket, s3.prefix) == ("s3", "recycle-prod", "cn")
    for bad in ("gs://b/p", "s3://B_ad/p", "s3://ok-bucket/a//b", "file://", "/just/a/path"):
        with pytest.raises(ConfigError, match=r"storage .*e\.g\. storage = "):
            load_settings(env={}, storage=bad)
    with pytest.raises(ConfigError, match="allow_http"):
        load_settings(env={}, storage="s3://b-1/p", storage_s3=S3StorageSettings("http://127.0.0.1:9"))


def test_join_storage_for_a_province() -> None:
    assert join_storage("s3://b-1/cn", "provinces", "GD") == "s3://b-1/cn/provinces/GD"
    assert join_storage("file:///mnt/r/", "provinces", "GD") == "file:///mnt/r/provinces/GD"
    assert join_storage("", "provinces", "GD") == ""  # the province's data_dir is joined already
    with pytest.raises(ConfigError):
        join_storage("s3://b-1/cn", "..")


def test_the_file_form_and_env(tmp_path: Path) -> None:
    cfg = tmp_path / "recycle.toml"
    cfg.write_text(
        '[storage]\nurl = "s3://recycle-prod/cn"\n[storage.s3]\nendpoint_url = "https://minio:9000"\n'
    )
    s = load_settings(cfg, env={})
    assert (s.storage, s.storage_s3.endpoint_url) == ("s3://recycle-prod/cn", "https://minio:9000")
    cfg.write_text('storage = "file:///srv/recycle"\n')
    assert load_settings(cfg, env={}).storage == "file:///srv/recycle"
    env = {"RECYCLE_STORAGE": "s3://other-b/x", "RECYCLE_S3_REGION": "cn-north-1"}
    s = load_settings(cfg, env=env)
    assert (s.storage, s.storage_s3.region) == ("s3://other-b/x", "cn-north-1")


def test_keys_in_the_file_are_refused_naming_the_variables(tmp_path: Path) -> None:
    cfg = tmp_path / "recycle.toml"
    cfg.write_text('[storage]\nurl = "s3://b-1/p"\n[storage.s3]\nsecret_access_key = "hunter2"\n')
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as got:
        load_settings(cfg, env={})
    assert "hunter2" not in str(got.value)


# ------------------------------------------------------------------ the seam


def test_local_storage_is_the_data_dir_and_writes_nothing_extra(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "ledger").mkdir(parents=True)
    (data / "ledger" / "checkpoint").write_bytes(b"o\n1\nAAAA\n\n")
    for settings in (Settings(data_dir=data), Settings(data_dir=data, storage=f"file://{data}")):
        assert Storage.from_settings(settings).local
        before = tree(data)
        assert publish_ledger(settings).uploaded == []
        assert publish_feeds(settings, D).uploaded == []
        assert push_records(settings, D).uploaded == []
        assert fetch_drops(settings, D) == [] and drop_names(settings, D) == []
        assert status(settings) == {}
        assert tree(data) == before and not (data / RECORD).exists()


def test_a_file_url_is_another_directory(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    settings = Settings(data_dir=data, storage=f"file://{store}")
    storage = Storage.from_settings(settings)
    assert not storage.local
    storage.write_bytes("feeds/a/b.json", b"{}")
    assert (store / "feeds/a/b.json").read_bytes() == b"{}"
    assert storage.listing("feeds") == {"feeds/a/b.json": 2}
    assert storage.read_bytes("feeds/a/b.json") == b"{}" and storage.exists("feeds/a/b.json")
    with pytest.raises(ValueError, match="stay under the root"):
        storage.write_bytes("../escape", b"x")


def test_s3_read_write_list_and_trees(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:  # noqa: F811
    settings = s3_settings(tmp_path / "data", s3_server, s3_bucket)
    storage = Storage.from_settings(settings)
    assert not storage.local
    storage.write_bytes("feeds/daily/2026-09-03/recycled.csv", b"msisdn\n")
    storage.write_bytes("feeds/.upload-in-flight", b"x")
    assert storage.listing("feeds") == {"feeds/daily/2026-09-03/recycled.csv": 7}
    assert storage.listing("nothing-here") == {}
    assert storage.read_bytes("feeds/daily/2026-09-03/recycled.csv") == b"msisdn\n"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("feeds/none")

    src = tmp_path / "src"
    for rel, body in {"snapshot/s1/meta.json": b"{}", "snapshot/s1/tenures.parquet": b"PAR1"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
    storage.put_tree(src, ["snapshot/s1/tenures.parquet", "snapshot/s1/meta.json"])
    out = tmp_path / "out"
    assert storage.get_tree("snapshot", out, private=True) == [
        "snapshot/s1/meta.json",
        "snapshot/s1/tenures.parquet",
    ]
    assert tree(out) == tree(src)
    assert stat.S_IMODE((out / "snapshot/s1/meta.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "snapshot/s1").stat().st_mode) == 0o700
    assert storage.get_tree("snapshot", out) == []  # all there: nothing fetched twice
    storage.delete_tree("snapshot/s1")
    assert storage.listing("snapshot") == {}


# ------------------------------------------------------------------ drops


def test_drops_are_fetched_private_and_a_changed_drop_is_refused(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    settings = s3_settings(tmp_path / "data", s3_server, s3_bucket)
    storage = Storage.from_settings(settings)
    storage.write_bytes("inbox/2026-09-03/lifecycle_2026-09-03.csv", b"msisdn,event\n")
    storage.write_bytes("inbox/2026-09-03/.reissue_2026-09-03.csv.part", b"half")
    assert drop_names(settings, D) == ["lifecycle_2026-09-03.csv"]
    assert fetch_drops(settings, D) == ["lifecycle_2026-09-03.csv"]
    local = tmp_path / "data/inbox/2026-09-03/lifecycle_2026-09-03.csv"
    assert local.read_bytes() == b"msisdn,event\n"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert stat.S_IMODE(local.parent.stat().st_mode) == 0o700
    assert fetch_drops(settings, D) == []  # same bytes: nothing to do

    # a drop written here (the send step's receipts for the next night) goes up
    (local.parent / "receipts_2026-09-02.csv").write_bytes(b"reminder_id\n")
    fetch_drops(settings, D)
    assert storage.read_bytes("inbox/2026-09-03/receipts_2026-09-02.csv") == b"reminder_id\n"

    storage.write_bytes("inbox/2026-09-03/lifecycle_2026-09-03.csv", b"msisdn,event\nother\n")
    with pytest.raises(StorageConflictError, match=r"lifecycle_2026-09-03.csv: s3://.* and .* differ"):
        fetch_drops(settings, D)
    assert local.read_bytes() == b"msisdn,event\n"  # never overwritten


# ------------------------------------------------------------------ ledger order and pull


def _fake_ledger(data: Path, size: int, tiles: list[str]) -> None:
    led = data / "ledger"
    for rel in tiles:
        (led / rel).parent.mkdir(parents=True, exist_ok=True)
        (led / rel).write_bytes(rel.encode())
    (led / "vkey").write_bytes(b"vkey\n")
    (led / "checkpoint").write_bytes(f"origin\n{size}\nROOT{size}\n\n- sig\n".encode())


def test_ledger_uploads_new_tiles_then_the_checkpoint(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    data = tmp_path / "data"
    settings = s3_settings(data, s3_server, s3_bucket)
    _fake_ledger(data, 3, ["tile/0/000.p/3", "tile/entries/000.p/3"])
    first = publish_ledger(settings).uploaded
    assert first[-1] == "ledger/checkpoint" and set(first[:2]) == {
        "ledger/tile/0/000.p/3",
        "ledger/tile/entries/000.p/3",
    }
    assert publish_ledger(settings).uploaded == []  # unchanged checkpoint: not even a listing
    # size 5: two new partial tiles; the old ones are not sent again, a tile beyond 5 (a crash's
    # leftover) never goes up
    _fake_ledger(data, 5, ["tile/0/000.p/5", "tile/entries/000.p/5", "tile/0/000.p/7"])
    second = publish_ledger(settings).uploaded
    assert sorted(second[:2]) == ["ledger/tile/0/000.p/5", "ledger/tile/entries/000.p/5"]
    assert second[2:] == ["ledger/checkpoint"]

    # a rebuilt worker pulls it; a data directory behind storage may not publish over it
    rebuilt = tmp_path / "rebuilt"
    again = s3_settings(rebuilt, s3_server, s3_bucket)
    got = pull(again, ("ledger",))
    assert got.fetched["ledger"][-1] == "ledger/checkpoint"
    assert (rebuilt / "ledger/checkpoint").read_bytes() == (data / "ledger/checkpoint").read_bytes()
    assert not (rebuilt / "ledger/tile/0/000.p/7").exists()
    _fake_ledger(rebuilt, 4, [])
    with pytest.raises(StorageConflictError, match="recycle storage pull --what ledger"):
        publish_ledger(again)


def test_records_skip_gx_and_upload_only_changes(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    data = tmp_path / "data"
    settings = s3_settings(data, s3_server, s3_bucket)
    run = data / "runs" / D.isoformat()
    (run / "steps").mkdir(parents=True)
    (run / "gx").mkdir()
    (run / "steps/ingest.json").write_text('{"a": 1}')
    (run / "gx/lifecycle.json").write_text("refused values in clear")
    assert push_records(settings, D).uploaded == ["runs/2026-09-03/steps/ingest.json"]
    assert push_records(settings, D).uploaded == []
    (run / "steps/ingest.json").write_text('{"a": 2}')  # same size, other bytes: a rerun
    assert push_records(settings, D).uploaded == ["runs/2026-09-03/steps/ingest.json"]
    missing = status(settings)
    assert missing["runs"] == [] and os.path.basename(str(RECORD)) == "storage-pushed.json"
