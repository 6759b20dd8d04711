"""Hostile drops (issue 12): each way a tester's file broke a night, read as a careful reader would.

Vectors in ``vectors/hostile/`` (``make_hostile_vectors.py`` writes them, and says what each
holds); the big ones are generated here. Every file of a night ends accepted, quarantined
or failed alone with a message naming it; the rest of the night goes on; reruns change nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_drops import DAY, _by_name, _dump, _quarantine, _settings

from pipelines.config import Settings
from pipelines.db import open_state
from pipelines.ingest import read
from pipelines.ingest.drops import ingest_day
from pipelines.layout import Layout

HOSTILE = Path(__file__).parent / "vectors" / "hostile"
ROOT = Path(__file__).resolve().parents[3]
HEADER = (
    b"msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path)


def _inbox(settings: Settings) -> Path:
    inbox = Layout(settings.data_dir).inbox(DAY)
    inbox.mkdir(parents=True, exist_ok=True)
    return inbox


def _put(settings: Settings, vector: str) -> Path:
    target = _inbox(settings) / vector
    shutil.copyfile(HOSTILE / vector, target)
    return target


def _refs(settings: Settings, sha256: str) -> list[tuple[int, str]]:
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        rows = con.execute(
            "SELECT line_no, subscriber_ref FROM lifecycle_events WHERE file_sha256 = ? ORDER BY line_no",
            [sha256],
        ).fetchall()
    return [(int(n), str(r)) for n, r in rows]


def _rerun_changes_nothing(settings: Settings) -> None:
    before = _dump(settings)
    ingest_day(settings, DAY)
    assert _dump(settings) == before


def test_a_quoted_line_break_is_one_record_numbered_by_its_first_line(settings: Settings) -> None:
    _put(settings, "lifecycle_quoted_newline.csv")
    (f,) = ingest_day(settings, DAY).files
    # 8 physical lines: header, a record on lines 2-3, a stray quote (4), a good line (5), a
    # record on lines 6-8 (a blank line inside its quotes): 4 records, one of them refused.
    assert (f.status, f.rows_in, f.accepted, f.quarantined) == ("ingested", 4, 3, 1)
    assert _refs(settings, f.sha256) == [(2, "S1 line one\nline two"), (5, "S3"), (6, "S4\n\nthree lines")]
    ((line_no, (reason, detail, original)),) = _quarantine(settings, f.name).items()
    assert (line_no, reason) == (4, "malformed_line")
    assert "unterminated quote" in detail and original.endswith('"S2 stray quote,,,,en')
    _rerun_changes_nothing(settings)


def test_a_nul_byte_quarantines_its_line_only(settings: Settings) -> None:
    _put(settings, "lifecycle_nul.csv")
    (f,) = ingest_day(settings, DAY).files
    assert (f.status, f.rows_in, f.accepted, f.quarantined) == ("ingested", 3, 2, 1)
    assert _quarantine(settings, f.name) == {
        3: (
            "malformed_line",
            "NUL byte in the line (binary data in a field); fix the field in the export",
            "13812345679,cancel,2026-01-05,GD,S\x002,,,,zh-CN",
        )
    }
    assert [n for n, _ in _refs(settings, f.sha256)] == [2, 4]


def test_unknown_columns_are_ignored_with_one_warning_naming_them(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _put(settings, "lifecycle_extra_columns.csv")
    with caplog.at_level(logging.WARNING, logger="pipelines.ingest.drops"):
        (f,) = ingest_day(settings, DAY).files
    assert (f.status, f.rows_in, f.accepted, f.ignored_columns) == ("ingested", 2, 2, ("colour", "notes"))
    assert _refs(settings, f.sha256) == [(2, "S1"), (3, "S2")]  # read by name, around the extra one
    warned = [r.getMessage() for r in caplog.records if "ignored column" in r.getMessage()]
    assert len(warned) == 1 and "colour, notes" in warned[0] and f.name in warned[0]


@pytest.mark.parametrize(
    ("vector", "encoding", "other"),
    [("lifecycle_mixed_encoding.csv", "utf-8", "GBK"), ("lifecycle_mostly_gbk.csv", "gbk", "UTF-8")],
)
def test_a_line_in_another_encoding_is_quarantined_not_garbled(
    settings: Settings, vector: str, encoding: str, other: str
) -> None:
    _put(settings, vector)
    (f,) = ingest_day(settings, DAY).files
    assert (f.encoding, f.rows_in, f.accepted, f.quarantined) == (encoding, 4, 3, 1)
    ((line_no, (reason, detail, original)),) = _quarantine(settings, f.name).items()
    assert (line_no, reason) == (5, "malformed_line")
    assert detail.startswith(f"a {other} line in a {encoding.upper()} file (mixed encodings")
    assert original == "13812345680,cancel,2026-01-05,GD,王五-S3,,,,zh-CN"  # shown decoded, not mojibake
    assert _refs(settings, f.sha256) == [(2, "张三-S1"), (3, "李四-S2"), (4, "S4")]


def test_a_corrupt_parquet_and_a_long_name_fail_alone_and_the_night_goes_on(settings: Settings) -> None:
    _put(settings, "reissue_corrupt.parquet")
    long_name = "lifecycle_" + "x" * 226 + ".csv"  # 240 bytes
    (_inbox(settings) / long_name).write_bytes(HEADER + b"13812345678,cancel,2026-01-05,GD,S1,,,,zh-CN\n")
    good = _put(settings, "lifecycle_nul.csv")
    files = _by_name(ingest_day(settings, DAY))
    corrupt = files["reissue_corrupt.parquet"]
    assert corrupt.status == "failed" and corrupt.error is not None
    assert corrupt.error.startswith("reissue_corrupt.parquet: not a readable Parquet file")
    named = files[long_name]
    assert named.status == "failed" and named.error is not None
    assert "a file name of 240 bytes" in named.error and "Rename it" in named.error
    assert files[good.name].status == "ingested"
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM reissue_events").fetchall() == [(0,)]
    _rerun_changes_nothing(settings)


@pytest.mark.parametrize("mib", [2, 20])  # DuckDB refuses 2 MiB, Arrow reads it; 20 MiB exceeds Arrow's block
def test_an_over_long_line_is_quarantined_and_its_neighbours_kept(settings: Settings, mib: int) -> None:
    path = _inbox(settings) / "lifecycle_2026-01-05.csv"
    with open(path, "wb") as fh:
        fh.write(HEADER + b"13812345678,cancel,2026-01-05,GD,S1,,,,zh-CN\n13812345679,cancel,2026-01-05,GD,")
        fh.write(b"y" * (mib << 20))
        fh.write(b",,,,zh-CN\n13812345680,cancel,2026-01-05,GD,S3,,,,zh-CN\n")
    (f,) = ingest_day(settings, DAY).files
    assert (f.rows_in, f.accepted, f.quarantined) == (3, 2, 1)
    ((line_no, (reason, detail, original)),) = _quarantine(settings, f.name).items()
    assert (line_no, reason) == (3, "malformed_line")
    assert f"over the limit of {read.MAX_LINE_BYTES}" in detail.replace(",", "")
    assert len(original) == read.SHOWN_CHARS


@pytest.mark.slow
def test_a_200_mib_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    # The tester's 200 MB line took 4.5 GB; the benchmark ingests one in a child process.
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_long_line.py"),
            "--mib",
            "200",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    last = out.stdout.strip().splitlines()[-1]
    peak = float(last.split("peak RSS ")[1].split(" MiB")[0].replace(",", ""))
    result = json.loads(last.split("; ", 1)[1])
    assert result["quarantined"] == {"malformed_line": 1} and result["accepted"] == 2
    assert peak < 1024, last


def test_links_and_non_regular_entries_are_refused_unread(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_bytes(HEADER + b"13812345678,cancel,2026-01-05,GD,SECRET,,,,zh-CN\n")
    inbox = _inbox(settings)
    (inbox / "lifecycle_link.csv").symlink_to(outside)
    os.mkfifo(inbox / "lifecycle_fifo.csv")  # opening it would block the night forever
    (inbox / "lifecycle_dir.csv").mkdir()
    files = _by_name(ingest_day(settings, DAY))
    expected = {
        "lifecycle_link.csv": "a symbolic link",
        "lifecycle_fifo.csv": "a fifo (named pipe)",
        "lifecycle_dir.csv": "a directory",
    }
    assert set(files) == set(expected)
    for name, what in expected.items():
        f = files[name]
        assert f.status == "failed" and f.error == (
            f"{inbox / name}: {what}, not a regular file; refused unread. Put the drop itself in the "
            f"inbox (not a link to it) and rerun the day (`recycle run --date {DAY}`)"
        )
    tables = _dump(settings)
    assert "SECRET" not in repr(tables["quarantine"]) and tables["lifecycle_events"] == []
    _rerun_changes_nothing(settings)


def test_a_nul_in_the_header_still_fails_the_file_as_binary(settings: Settings) -> None:
    (_inbox(settings) / "lifecycle_utf16.csv").write_bytes(HEADER.decode().encode("utf-16-le"))
    (f,) = ingest_day(settings, DAY).files
    assert f.status == "failed" and "binary content (NUL bytes)" in (f.error or "")


def test_day_with_every_hostile_file_is_idempotent(settings: Settings) -> None:
    for vector in sorted(p.name for p in HOSTILE.iterdir() if p.suffix in {".csv", ".parquet"}):
        _put(settings, vector)
    first = ingest_day(settings, DAY)
    assert all(f.rows_in == f.accepted + f.quarantined for f in first.files)
    assert {f.status for f in first.files} == {"ingested", "failed"}  # the corrupt Parquet alone fails
    _rerun_changes_nothing(settings)
