"""Drop-file ingestion: reason codes, encodings, registry, idempotence, crash safety, GX gate.

Vectors in ``vectors/ingest/`` are hand-made (``make_binary_vectors.py`` writes the GBK, BOM,
Parquet and undecodable ones); what each line must become is stated next to each test.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import phonenumbers
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.ingest import drops, gx, read
from pipelines.ingest.drops import IngestReport, ingest_day
from pipelines.ingest.phone_classes import normalise_many
from pipelines.ingest.quarantine import export_quarantine
from pipelines.layout import Layout
from pipelines.numbers import normalise

VECTORS = Path(__file__).parent / "vectors"
DAY = dt.date(2026, 1, 5)
TABLES = {
    "files": "file_name, sha256",
    "lifecycle_events": "file_sha256, line_no",
    "reissue_events": "file_sha256, line_no",
    "subscriber_rows": "file_sha256, line_no",
    "receipt_rows": "file_sha256, line_no",
    "quarantine": "file_sha256, line_no, stage",
}


def _settings(tmp_path: Path) -> Settings:
    return load_settings(env={}, data_dir=tmp_path / "var")


def _drop(settings: Settings, day: dt.date, vector: str, name: str | None = None) -> Path:
    inbox = Layout(settings.data_dir).inbox(day)
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / (name or vector)
    shutil.copyfile(VECTORS / vector, target)
    return target


def _by_name(report: IngestReport) -> dict[str, drops.FileReport]:
    return {f.name: f for f in report.files}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path)


def _dump(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        return {
            t: con.execute(f"SELECT {_OPENED.get(t, '*')} FROM {t} ORDER BY {order}").fetchall()
            for t, order in TABLES.items()
        }


# Contacts are sealed under each data directory's own key: compared opened.
_OPENED = dict.fromkeys(
    ("lifecycle_events", "subscriber_rows"),
    "* REPLACE (contact_open(contact_email) AS contact_email, contact_open(contact_phone) AS contact_phone)",
) | {"quarantine": "* REPLACE (contact_open(original_line) AS original_line)"}


def _assert_row_keys_unique(settings: Settings) -> None:
    """(file_sha256, line_no) names one row: the tables have no key constraint to say so."""
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        for table in ("lifecycle_events", "reissue_events", "subscriber_rows", "receipt_rows"):
            repeated = con.execute(
                f"SELECT file_sha256, line_no FROM {table} GROUP BY ALL HAVING count(*) > 1"
            ).fetchall()
            assert repeated == [], table


def _quarantine(settings: Settings, file_name: str) -> dict[int, tuple[str, str, str]]:
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        rows = con.execute(
            "SELECT line_no, reason, detail, contact_open(original_line) FROM quarantine "
            "WHERE file_name = ? ORDER BY line_no",
            [file_name],
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _physical_lines(path: Path, encoding: str) -> list[str]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return [line.decode(encoding) for line in data.splitlines()]


# --------------------------------------------------------------------------- every reason code

LIFECYCLE_EXPECTED = {
    6: "duplicate_row",
    7: "missing_field",
    8: "bad_number",
    9: "bad_date",
    10: "bad_date",
    11: "future_date",
    12: "unknown_region",
    13: "unknown_event",
    14: "bad_tenure",
    15: "malformed_line",
    16: "malformed_line",
    17: "malformed_line",
    19: "missing_field",
    20: "bad_number",
    21: "bad_number",
    23: "malformed_line",
}


def test_lifecycle_vector_gives_every_lifecycle_reason_with_exact_lines(settings: Settings) -> None:
    path = _drop(settings, DAY, "lifecycle_every_reason.csv", "lifecycle_2026-01-05.csv")
    report = ingest_day(settings, DAY)
    (f,) = report.files
    assert f.status == "ingested" and f.encoding == "utf-8" and f.delimiter == ","
    assert f.rows_in == 22 == f.accepted + f.quarantined
    assert f.accepted == 6 and f.gx_success is True

    quarantine = _quarantine(settings, f.name)
    assert {n: q[0] for n, q in quarantine.items()} == LIFECYCLE_EXPECTED
    lines = _physical_lines(path, "utf-8")
    for line_no, (_, _, original) in quarantine.items():
        assert original == lines[line_no - 1]  # header = line 1, text exactly as in the file
    assert quarantine[6][1] == "exact duplicate of line 2"
    assert "truncated last line" in quarantine[23][1]
    assert "2026-02-30" in quarantine[9][1]
    assert f.quarantined_by_reason == {
        "bad_date": 2,
        "bad_number": 3,
        "bad_tenure": 1,
        "duplicate_row": 1,
        "future_date": 1,
        "malformed_line": 4,
        "missing_field": 2,
        "unknown_event": 1,
        "unknown_region": 1,
    }
    assert f.warnings == {"contact_email_dropped": 1, "contact_phone_dropped": 1, "language_defaulted": 1}

    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        rows = con.execute(
            "SELECT line_no, msisdn, event, effective_date, region, subscriber_ref, tenure_start, "
            "contact_open(contact_email), contact_open(contact_phone), language FROM lifecycle_events "
            "ORDER BY line_no"
        ).fetchall()
    assert rows == [
        (
            2,
            "+8613812345678",
            "cancel",
            DAY,
            "GD",
            "S0001",
            dt.date(2019, 3, 1),
            "li.wei@example.cn",
            "+8613912345678",
            "zh-CN",
        ),
        (
            3,
            "+8613912345678",
            "suspend",
            dt.date(2026, 1, 4),
            "SD",
            "S0002",
            dt.date(2018, 1, 1),
            None,
            None,
            "en",
        ),
        (4, "+8613712345678", "restore", DAY, "BJ", "S0003", dt.date(2017, 5, 5), None, None, "zh-CN"),
        (5, "+8613612345678", "port_out", DAY, "ZJ", "S0004", None, None, None, "zh-CN"),
        (18, "+8613812345679", "cancel", DAY, "GD", "S,0015", None, None, None, "en"),
        (22, "+16502530000", "cancel", DAY, "GD", "S0019", None, None, None, "en"),
    ]

    # The operator's export (recycle quarantine export) holds the same rows as the table.
    out = settings.data_dir.parent / "export.parquet"
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        export_quarantine(con, DAY, out, f.name)
    parquet = pq.read_table(out).to_pylist()
    assert [(r["line_no"], r["reason"], r["detail"], r["original_line"]) for r in parquet] == [
        (n, *q) for n, q in sorted(quarantine.items())
    ]
    gx_result = json.loads((Layout(settings.data_dir).run_dir(DAY) / "gx" / f"{f.name}.json").read_text())
    assert gx_result["validated_rows"] == 6 and gx_result["validation_result"]["success"] is True


def test_receipts_reasons_and_times_in_utc(settings: Settings) -> None:
    _drop(settings, DAY, "receipts_every_reason.csv", "receipts_2026-01-05.csv")
    (f,) = ingest_day(settings, DAY).files
    assert f.rows_in == 10 and f.accepted == 3 and f.quarantined == 7
    assert {n: q[0] for n, q in _quarantine(settings, f.name).items()} == {
        5: "unknown_channel",
        6: "unknown_status",
        7: "bad_date",
        8: "future_date",
        # 07:59:59 on 01-06 in Beijing is still 01-05 in UTC, but the carrier's day (the CN
        # default time zone, Asia/Shanghai) is 01-06: after the logical date.
        9: "future_date",
        10: "missing_field",
        11: "bad_date",
    }
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        rows = con.execute(
            'SELECT line_no, reminder_id, channel, status, "at", provider_ref FROM receipt_rows ORDER BY line_no'
        ).fetchall()
    assert rows == [
        (2, "r-1", "email", "delivered", dt.datetime(2026, 1, 5, 8, 0), "p1"),
        (3, "r-2", "sms", "acknowledged", dt.datetime(2026, 1, 5, 15, 30), "p2"),
        (4, "r-3", "letter", "expired", dt.datetime(2026, 1, 5, 12, 0), None),
    ]


def test_gbk_bom_pipe_crlf_and_undecodable_lines(settings: Settings) -> None:
    gbk = _drop(settings, DAY, "lifecycle_gbk.csv", "lifecycle_2026-01-05_gbk.csv")
    bom = _drop(settings, DAY, "subscribers_bom_pipe.csv", "subscribers_2026-01-05.csv")
    _drop(settings, DAY, "lifecycle_undecodable.csv", "lifecycle_2026-01-05_zz.csv")
    files = _by_name(ingest_day(settings, DAY))

    g = files[gbk.name]
    assert (g.encoding, g.delimiter, g.rows_in, g.accepted) == ("gbk", ",", 4, 2)
    gq = _quarantine(settings, gbk.name)
    assert {n: q[0] for n, q in gq.items()} == {3: "unknown_event", 4: "unknown_region"}
    assert gq[3][2] == "13812345679,销户,2026-01-05,GD,S2,,,,zh-CN"  # decoded, not mojibake
    assert "'销户'" in gq[3][1]

    b = files[bom.name]
    assert (b.encoding, b.delimiter, b.rows_in, b.accepted) == ("utf-8-sig", "|", 4, 2)
    bq = _quarantine(settings, bom.name)
    assert {n: q[0] for n, q in bq.items()} == {3: "future_date", 4: "unknown_region"}
    assert bq[3][2] == "13812340002|2026-01-06|GD|T2|||zh-CN"  # no BOM, no \r

    u = files["lifecycle_2026-01-05_zz.csv"]
    assert (u.encoding, u.rows_in, u.accepted, u.quarantined) == ("utf-8", 3, 2, 1)
    ((reason, detail, original),) = _quarantine(settings, u.name).values()
    assert reason == "malformed_line" and "undecodable" in detail and "\\xff\\xfe\\xfd" in original
    assert u.warnings == {"language_defaulted": 1}

    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        got = con.execute(
            "SELECT msisdn, subscriber_ref FROM lifecycle_events WHERE file_sha256 = ? ORDER BY line_no",
            [g.sha256],
        ).fetchall()
        subs = con.execute(
            "SELECT msisdn, region, contact_open(contact_phone), language FROM subscriber_rows ORDER BY line_no"
        ).fetchall()
    assert got == [("+8613812345678", "S1"), ("+8613812345681", "张三-S4")]
    assert subs == [("+8613812340001", "GD", "+8613900000001", "en"), ("+8613812340004", "GD", None, "en")]


def test_parquet_rows_are_numbered_and_rendered_as_json(settings: Settings) -> None:
    _drop(settings, DAY, "reissue_rows.parquet", "reissue_2026-01-05.parquet")
    (f,) = ingest_day(settings, DAY).files
    assert (f.status, f.encoding, f.delimiter, f.rows_in, f.accepted) == ("ingested", None, None, 5, 1)
    q = _quarantine(settings, f.name)
    assert {n: r[0] for n, r in q.items()} == {
        2: "bad_number",
        3: "future_date",
        4: "duplicate_row",
        5: "missing_field",
    }
    assert json.loads(q[2][2]) == {
        "msisdn": "1381234",
        "reissue_date": "2026-01-05",
        "region": "GD",
        "subscriber_ref": "N2",
    }
    assert q[4][1] == "exact duplicate of line 1"


@pytest.mark.parametrize("chunk", [3, 4, 1 << 20])
def test_line_count_of_the_bytes_is_what_the_reader_must_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    # rows_in is checked against this count: \n, \r\n and a lone \r end a line, also across chunks.
    monkeypatch.setattr(read, "_CHUNK", chunk)
    for data in [
        b"",
        b"a",
        b"a\n",
        b"a\nb",
        b"ab\r\ncd\r\n",
        b"a\rb\r",
        b"\n\n",
        b"a\r\n\r\nb",
        b"a\r\r\n\n",
    ]:
        path = tmp_path / "x.csv"
        path.write_bytes(data)
        assert read.sniff(path).lines == len(data.splitlines()), data


# Every way a line can go wrong next to good ones: a blank line, a line of spaces, padded
# fields, quoting (good, with the delimiter inside, unterminated), a repeat, a cut-off end.
_AWKWARD_LINES = [
    "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language",
    "13812345678,cancel,2026-01-05,GD,S1,2019-03-01,li.wei@example.cn,13912345678,zh-CN",
    "",
    "   ",
    " 13812345679 , cancel ,2026-01-05, gd ,S2,,,,en",
    '"13812345680",cancel,2026-01-05,GD,"S,3",,,,en',
    '13812345681,"cancel,2026-01-05,GD,S4,,,,en',
    "13812345678,cancel,2026-01-05,GD,S1,2019-03-01,li.wei@example.cn,13912345678,zh-CN",
    "+86 138-1234-5682,suspend,2026-01-04,SD,S5,,,,",
    "13812345683,cancel,2026-01-05,GD,S6,2020-01-0",
]


def _ingest_lines(
    tmp_path: Path, name: str, data: bytes
) -> tuple[drops.FileReport, dict[str, list[tuple[Any, ...]]]]:
    settings = _settings(tmp_path / name)
    inbox = Layout(settings.data_dir).inbox(DAY)
    inbox.mkdir(parents=True)
    (inbox / "lifecycle_2026-01-05.csv").write_bytes(data)
    (f,) = ingest_day(settings, DAY).files
    return f, _dump(settings)


@pytest.mark.parametrize(("newline", "duckdb_reads_it"), [("\n", True), ("\r\n", True), ("mixed", False)])
def test_duckdb_line_reader_and_the_fallback_readers_give_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str, duckdb_reads_it: bool
) -> None:
    # DuckDB reads the lines when it can (blank ones included); it refuses mixed line ends,
    # and then Arrow reads them. Either way every physical line is one row with its number.
    if newline == "mixed":
        text = "".join(line + ("\r\n" if i % 2 else "\n") for i, line in enumerate(_AWKWARD_LINES[:-1]))
        text += _AWKWARD_LINES[-1]
    else:
        text = newline.join(_AWKWARD_LINES)
    data = b"\xef\xbb\xbf" + text.encode()
    used: list[bool] = []
    real = read._duckdb_lines

    def spy(con: Any, ahead: Any, lines: int) -> bool:
        used.append(real(con, ahead, lines))
        return used[-1]

    monkeypatch.setattr(read, "_duckdb_lines", spy)
    fast, fast_tables = _ingest_lines(tmp_path, "fast", data)
    assert used == [duckdb_reads_it]

    monkeypatch.setattr(read, "read_ahead", lambda con, path: read.ReadAhead(path=path, rows=None))
    slow, slow_tables = _ingest_lines(tmp_path, "slow", data)
    assert used[1:] == [False]
    assert fast_tables == slow_tables
    assert (
        (fast.rows_in, fast.accepted, fast.encoding)
        == (slow.rows_in, slow.accepted, slow.encoding)
        == (9, 4, "utf-8-sig")
    )
    quarantine = {r[4]: (r[6], r[7]) for r in fast_tables["quarantine"]}  # line_no -> (reason, detail)
    assert {n: q[0] for n, q in quarantine.items()} == {
        3: "malformed_line",
        4: "malformed_line",
        7: "malformed_line",
        8: "duplicate_row",
        10: "malformed_line",
    }
    assert quarantine[3][1] == "empty line" and quarantine[4][1] == "expected 9 fields, found 1"
    assert "bad quoting" in quarantine[7][1] and "truncated last line" in quarantine[10][1]
    kept = [(r[1], r[3], r[6], r[7]) for r in fast_tables["lifecycle_events"]]  # line_no, msisdn, region, ref
    assert kept == [
        (2, "+8613812345678", "GD", "S1"),
        (5, "+8613812345679", "GD", "S2"),
        (6, "+8613812345680", "GD", "S,3"),
        (9, "+8613812345682", "SD", "S5"),
    ]


# --------------------------------------------------------------------------- whole-file outcomes


def test_missing_unknown_empty_binary_and_foreign_files_fail_without_stopping_the_run(
    settings: Settings,
) -> None:
    _drop(settings, DAY, "lifecycle_missing_columns.csv", "lifecycle_2026-01-05_a.csv")
    inbox = Layout(settings.data_dir).inbox(DAY)
    (inbox / "lifecycle_2026-01-05_b.csv").write_bytes(b"")
    (inbox / "lifecycle_2026-01-05_c.csv").write_bytes(
        b"msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n"
    )
    (inbox / "lifecycle_2026-01-05_d.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (inbox / "notes_2026-01-05.txt").write_text("hello")
    (inbox / ".lifecycle_2026-01-05_e.csv.part").write_text("in flight")
    _drop(settings, DAY, "receipts_every_reason.csv", "receipts_2026-01-05.csv")

    files = _by_name(ingest_day(settings, DAY))
    assert set(files) == {
        "lifecycle_2026-01-05_a.csv",
        "lifecycle_2026-01-05_b.csv",
        "lifecycle_2026-01-05_c.csv",
        "lifecycle_2026-01-05_d.csv",
        "notes_2026-01-05.txt",
        "receipts_2026-01-05.csv",
    }
    a = files["lifecycle_2026-01-05_a.csv"]
    assert a.status == "failed" and a.error is not None
    assert a.error.startswith("lifecycle_2026-01-05_a.csv: ")
    assert "missing required column(s) effective_date" in a.error and "unknown column(s) 'colour'" in a.error
    assert files["lifecycle_2026-01-05_b.csv"].status == "failed"
    assert "empty file" in (files["lifecycle_2026-01-05_b.csv"].error or "")
    c = files["lifecycle_2026-01-05_c.csv"]
    assert (c.status, c.rows_in, c.accepted, c.quarantined) == ("ingested", 0, 0, 0)
    assert "binary" in (files["lifecycle_2026-01-05_d.csv"].error or "")
    assert (
        files["notes_2026-01-05.txt"].kind == "unknown" and files["notes_2026-01-05.txt"].status == "failed"
    )
    assert files["receipts_2026-01-05.csv"].status == "ingested"
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        registry = dict(con.execute("SELECT file_name, status FROM files").fetchall())
    assert (
        registry["lifecycle_2026-01-05_a.csv"] == "failed"
        and registry["receipts_2026-01-05.csv"] == "ingested"
    )
    # A rerun fails the same files the same way and leaves the registry as it was.
    tables = _dump(settings)
    again = _by_name(ingest_day(settings, DAY))
    assert {n: (f.status, f.error) for n, f in again.items() if f.status == "failed"} == {
        n: (f.status, f.error) for n, f in files.items() if f.status == "failed"
    }
    assert _dump(settings) == tables


def test_same_content_is_skipped_and_a_changed_file_under_an_old_name_fails(settings: Settings) -> None:
    _drop(settings, DAY, "receipts_every_reason.csv", "receipts_2026-01-05.csv")
    ingest_day(settings, DAY)
    before = _dump(settings)

    day2 = DAY + dt.timedelta(days=1)
    _drop(settings, day2, "receipts_every_reason.csv", "receipts_resent.csv")  # same bytes, new name
    _drop(settings, day2, "lifecycle_every_reason.csv", "receipts_2026-01-05.csv")  # new bytes, old name
    _drop(settings, day2, "lifecycle_gbk.csv", "lifecycle_2026-01-06.csv")
    files = _by_name(ingest_day(settings, day2))
    assert files["receipts_resent.csv"].status == "skipped_duplicate"
    clash = files["receipts_2026-01-05.csv"]
    assert clash.status == "failed" and clash.error is not None
    # The message names only what exists: rename and rerun the day; the old rows stay.
    assert "receipts_2026-01-05_v2.csv" in clash.error and "recycle replay" not in clash.error
    assert "stay as ingested" in clash.error and f"recycle run --date {day2}" in clash.error
    assert files["lifecycle_2026-01-06.csv"].status == "ingested"
    after = _dump(settings)
    assert after["receipt_rows"] == before["receipt_rows"]
    assert set(before["quarantine"]) <= set(after["quarantine"])

    # Doing what it says works: a corrected file, renamed, is ingested; the earlier rows stay.
    day3 = day2 + dt.timedelta(days=1)
    inbox = Layout(settings.data_dir).inbox(day3)
    inbox.mkdir(parents=True)
    corrected = (VECTORS / "receipts_every_reason.csv").read_bytes().replace(b",p1\n", b",p1-fixed\n")
    (inbox / "receipts_2026-01-05.csv").write_bytes(corrected)
    assert _by_name(ingest_day(settings, day3))["receipts_2026-01-05.csv"].status == "failed"
    (inbox / "receipts_2026-01-05.csv").rename(inbox / "receipts_2026-01-05_v2.csv")
    renamed = _by_name(ingest_day(settings, day3))["receipts_2026-01-05_v2.csv"]
    assert (renamed.status, renamed.rows_in) == ("ingested", 10) and renamed.accepted >= 4
    rows = _dump(settings)["receipt_rows"]
    assert (
        set(before["receipt_rows"]) <= set(rows)
        and len(rows) == len(before["receipt_rows"]) + renamed.accepted
    )


# --------------------------------------------------------------------------- idempotence, crash safety


def _all_vectors(settings: Settings, day: dt.date, kinds: int = 5) -> None:
    vectors = [
        ("lifecycle_every_reason.csv", "lifecycle_2026-01-05_1.csv"),
        ("receipts_every_reason.csv", "receipts_2026-01-05.csv"),
        ("subscribers_bom_pipe.csv", "subscribers_2026-01-05.csv"),
        ("lifecycle_gbk.csv", "lifecycle_2026-01-05_2.csv"),
        ("reissue_rows.parquet", "reissue_2026-01-05.parquet"),
    ]
    for vector, name in vectors[:kinds]:
        _drop(settings, day, vector, name)


def test_rerunning_a_day_changes_nothing(settings: Settings) -> None:
    _all_vectors(settings, DAY)
    first = ingest_day(settings, DAY)
    assert all(f.status == "ingested" for f in first.files)
    tables = _dump(settings)
    second = ingest_day(settings, DAY)
    assert [f.status for f in second.files] == ["skipped_duplicate"] * len(first.files)
    assert _dump(settings) == tables
    _assert_row_keys_unique(settings)


def test_a_crash_mid_file_leaves_nothing_of_it_and_the_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = _settings(tmp_path / "clean")
    _all_vectors(clean, DAY, kinds=3)
    ingest_day(clean, DAY)

    crashed = _settings(tmp_path / "crashed")
    _all_vectors(crashed, DAY, kinds=3)
    real = drops._register
    calls = {"n": 0}

    def crash_on_second(*args: Any) -> None:  # runs after the rows and the quarantine are inserted
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        real(*args)

    monkeypatch.setattr(drops, "_register", crash_on_second)
    with pytest.raises(OSError, match="simulated"):
        ingest_day(crashed, DAY)
    partial = _dump(crashed)
    assert [r[0] for r in partial["files"]] == ["lifecycle_2026-01-05_1.csv"]  # the 2nd rolled back whole
    assert partial["receipt_rows"] == [] and {r[0] for r in partial["quarantine"]} == {
        "lifecycle_2026-01-05_1.csv"
    }

    monkeypatch.setattr(drops, "_register", real)
    rerun = ingest_day(crashed, DAY)
    assert [f.status for f in rerun.files] == ["skipped_duplicate", "ingested", "ingested"]
    assert _dump(crashed) == _dump(clean)
    _assert_row_keys_unique(crashed)


# --------------------------------------------------------------------------- GX as a second gate


def test_gx_refusals_go_to_quarantine_and_a_big_file_escalates_from_sample(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stricter suite than the SQL rules: GX must move the rows it refuses to quarantine.
    original = gx.suite_doc
    strict = json.loads(json.dumps(original("lifecycle")))
    strict["expectations"].append(
        {
            "type": "expect_column_values_to_not_match_regex",
            "kwargs": {"column": "subscriber_ref", "regex": "^S000[24]$"},
            "meta": {},
        }
    )
    monkeypatch.setattr(gx, "suite_doc", lambda kind: strict if kind == "lifecycle" else original(kind))
    # Accepted lines are 2, 3, 4, 5, 18, 22; two sample rows means every 3rd line: 3 and 18.
    # The sample catches line 3 (S0002), so GX reruns on all rows and also finds line 5 (S0004).
    monkeypatch.setattr(drops, "GX_SAMPLE_ROWS", 2)
    _drop(settings, DAY, "lifecycle_every_reason.csv", "lifecycle_2026-01-05.csv")
    (f,) = ingest_day(settings, DAY).files
    assert f.gx_success is False and f.gx_rows == 6
    assert (f.rows_in, f.accepted, f.quarantined) == (22, 4, 18)
    assert f.quarantined_by_reason["gx_failed"] == 2
    q = _quarantine(settings, f.name)
    for line_no in (3, 5):
        reason, detail, _ = q[line_no]
        assert reason == "gx_failed" and "subscriber_ref" in detail
    with open_state(Layout(settings.data_dir).state_db, read_only=True) as con:
        kept = [r[0] for r in con.execute("SELECT line_no FROM lifecycle_events ORDER BY line_no").fetchall()]
    assert kept == [2, 4, 18, 22]


def test_gx_sample_of_a_clean_big_file_is_not_escalated(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drops, "GX_SAMPLE_ROWS", 2)
    _drop(settings, DAY, "lifecycle_every_reason.csv", "lifecycle_2026-01-05.csv")
    (f,) = ingest_day(settings, DAY).files
    assert f.gx_success is True and f.gx_rows == 2 and f.accepted == 6
    note = json.loads((Layout(settings.data_dir).run_dir(DAY) / "gx" / f"{f.name}.json").read_text())
    assert (note["sample"], note["validated_rows"], note["accepted_rows"]) == ("line_no % 3 = 0", 2, 6)


def test_gx_failing_the_file_as_a_whole_keeps_nothing_of_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GX judges the stored rows inside the file's transaction; its verdict undoes them all.
    original = gx.suite_doc
    broken = json.loads(json.dumps(original("lifecycle")))
    broken["expectations"][0]["kwargs"]["column_set"] = ["msisdn", "colour"]
    monkeypatch.setattr(gx, "suite_doc", lambda kind: broken if kind == "lifecycle" else original(kind))
    _drop(settings, DAY, "lifecycle_every_reason.csv", "lifecycle_2026-01-05.csv")
    _drop(settings, DAY, "receipts_every_reason.csv", "receipts_2026-01-05.csv")
    files = _by_name(ingest_day(settings, DAY))
    failed = files["lifecycle_2026-01-05.csv"]
    assert failed.status == "failed" and "failed for the file as a whole" in (failed.error or "")
    assert files["receipts_2026-01-05.csv"].status == "ingested"
    tables = _dump(settings)
    assert tables["lifecycle_events"] == []
    assert {r[0] for r in tables["quarantine"]} == {"receipts_2026-01-05.csv"}


# --------------------------------------------------------------------------- numbers by class


def _cn_prefix_space(rng: random.Random) -> list[str]:
    """Every five-digit national prefix that the class shortcut can meet, in its three shapes."""
    values = []
    for prefix in range(10_000, 20_000):
        for _ in range(2):
            national = f"{prefix}{rng.randrange(10**6):06d}"
            values += [national, "+86" + national, "86" + national]
    return values


_FULLWIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")


def _decorated(rng: random.Random, n: int) -> list[str]:
    """Random numbers of several countries and lengths, valid and not, dressed as BSS exports are."""
    regions = ["CN", "US", "GB", "DE", "JP", "HK", "SG", "IN", "BR", "AU"]
    out = []
    for _ in range(n):
        region = rng.choice(regions)
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert example is not None
        digits = str(example.national_number)
        cut = rng.choice([0, 0, 0, 1, -1, 3])
        digits = "".join(str(rng.randrange(10)) for _ in range(len(digits) + cut))
        if region == "CN" and rng.random() < 0.6:
            digits = "1" + rng.choice("3456789") + digits[2:]
        form = rng.randrange(9)
        text = {
            0: digits,
            1: f"+{example.country_code}{digits}",
            2: f"00{example.country_code} {digits}",
            3: f"+{example.country_code} {digits[:3]}-{digits[3:7]}-{digits[7:]}",
            4: f"({digits[:3]}) {digits[3:]}",
            5: f"+{example.country_code}{digits}".translate(_FULLWIDTH),
            6: f" {digits} ",
            7: f"{example.country_code}{digits}",
            8: f"+{example.country_code}.{digits}",
        }[form]
        out.append(text)
    return [*out, "", "+", "00", "abc", "+86", "1" * 11, "+861" + "0" * 10, "１３８ １２３４ ５６７８"]


def test_number_classes_match_per_row_normalise() -> None:
    rng = random.Random(20260105)
    values: list[str | None] = [*_cn_prefix_space(rng), *_decorated(rng, 4_000), None]
    got = normalise_many(values, "CN")
    want = [normalise(v, "CN") if v is not None else None for v in values]
    mismatches = [(v, g, w) for v, g, w in zip(values, got, want, strict=True) if g != w]
    assert mismatches == []
    assert sum(w is not None for w in want) > 20_000  # the sample really has valid numbers in it


def test_number_classes_with_another_default_region() -> None:
    rng = random.Random(7)
    values: list[str | None] = [*_decorated(rng, 1_500), "13812345678", "8613812345678", "+8613812345678"]
    assert normalise_many(values, "US") == [normalise(v, "US") if v is not None else None for v in values]


def test_decided_classes_are_cached_per_phonenumbers_version_and_rebuilt_when_unreadable(
    tmp_path: Path,
) -> None:
    import phonenumbers
    import pyarrow as pa

    from pipelines.ingest.phone_classes import class_table

    fresh = class_table("CN")
    assert fresh.num_rows == 30_000 and fresh.column("class_valid").null_count < 100
    assert class_table("CN", tmp_path).equals(fresh)
    cached = tmp_path / f"phone-classes-{phonenumbers.__version__}-CN.parquet"
    assert pq.read_table(cached).equals(fresh)
    # What the cache says is used (it is what makes a night's ingest skip 30,000 phonenumbers calls)...
    doctored = pa.table({"k": fresh.column("k"), "class_valid": pa.array([False] * fresh.num_rows)})
    pq.write_table(doctored, cached)
    assert class_table("CN", tmp_path).equals(doctored)
    # ...and one that cannot be read, or is not a whole table, is decided again and rewritten.
    for broken in (b"not parquet", None):
        if broken is None:
            pq.write_table(fresh.slice(0, 10), cached)
        else:
            cached.write_bytes(broken)
        assert class_table("CN", tmp_path).equals(fresh)
        assert pq.read_table(cached).equals(fresh)
    assert class_table("US", tmp_path).num_rows == 10_000  # only +86 numbers have a class elsewhere


# --------------------------------------------------------------------------- logs


def test_logs_carry_counts_but_never_a_number_or_contact(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _all_vectors(settings, DAY, kinds=1)
    with caplog.at_level(logging.DEBUG, logger="pipelines"):
        ingest_day(settings, DAY)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pipelines"))
    assert "rows in 22, accepted 6, quarantined 16" in text
    assert not re.search(r"1[3-9]\d{9}|\+\d{7,}|@example", text)
    # Great Expectations sets some of its loggers to INFO itself; ingest keeps it to warnings.
    assert [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("great_expectations") and r.levelno < logging.WARNING
    ] == []


# --------------------------------------------------------------------------- against synth's truth


def test_synthetic_days_match_the_generators_truth(settings: Settings) -> None:
    """Four synthetic days (GBK, |, split files, truncated last lines, every defect kind)."""
    from pipelines.dev.synth import generate

    start = dt.date(2026, 3, 1)
    generate(settings.data_dir, start, days=4, rows_per_day=60, seed=11, defect_rate=0.08)
    checked = 0
    for offset in range(4):
        day = start + dt.timedelta(days=offset)
        truth = json.loads((settings.data_dir / "truth" / f"{day}.json").read_text())["files"]
        report = ingest_day(settings, day)
        assert set(_by_name(report)) == set(truth)
        for f in report.files:
            want = truth[f.name]
            if f.status == "skipped_duplicate":  # an empty reissue file repeats yesterday's bytes
                assert want["rows"] == 0
                continue
            assert f.status == "ingested"
            got_lines = [[n, q[0]] for n, q in sorted(_quarantine(settings, f.name).items())]
            assert (
                f.encoding,
                f.delimiter,
                f.rows_in,
                f.accepted,
                dict(f.quarantined_by_reason),
                got_lines,
            ) == (
                want["encoding"],
                want["delimiter"],
                want["rows"],
                want["accepted"],
                want["reasons"],
                want["quarantine_lines"],
            ), f.name
            checked += 1
    assert checked >= 6  # the rest are empty reissue files, skipped as repeats
    _assert_row_keys_unique(settings)


# --------------------------------------------------------------------------- the fast path


def _ingest_all(
    settings: Settings, days: list[dt.date]
) -> tuple[list[IngestReport], dict[str, list[tuple[Any, ...]]]]:
    reports = [ingest_day(settings, day) for day in days]
    return reports, _dump(settings)


def test_fast_path_stores_exactly_what_the_full_checks_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain lines go straight to the table; the rows, quarantine and reports must not change."""
    from pipelines.dev.synth import generate

    start = dt.date(2026, 3, 1)
    days = [start + dt.timedelta(days=i) for i in range(3)]
    results = {}
    for fast in (True, False):
        settings = _settings(tmp_path / ("fast" if fast else "full"))
        generate(settings.data_dir, start, days=3, rows_per_day=400, seed=5, defect_rate=0.1)
        for vector, name in [
            ("lifecycle_every_reason.csv", "lifecycle_2026-03-01_v.csv"),
            ("receipts_every_reason.csv", "receipts_2026-03-01_v.csv"),
        ]:
            _drop(settings, start, vector, name)
        monkeypatch.setattr(drops, "FAST_PATH", fast)
        with caplog.at_level(logging.INFO, logger="pipelines.ingest.drops"):
            caplog.clear()
            reports, tables = _ingest_all(settings, days)
        fast_rows = sum(int(m) for m in re.findall(r"(\d+) row\(s\) by the fast path", caplog.text))
        results[fast] = (
            [
                [
                    (
                        f.name,
                        f.status,
                        f.rows_in,
                        f.accepted,
                        f.quarantined,
                        dict(f.quarantined_by_reason),
                        dict(f.warnings),
                        f.gx_rows,
                    )
                    for f in r.files
                ]
                for r in reports
            ],
            tables,
            fast_rows,
        )
    (fast_reports, fast_tables, fast_rows), (full_reports, full_tables, full_rows) = (
        results[True],
        results[False],
    )
    stored = sum(
        len(fast_tables[t]) for t in ("lifecycle_events", "reissue_events", "subscriber_rows", "receipt_rows")
    )
    assert full_rows == 0 and stored * 0.8 < fast_rows < stored  # the fast path took most rows, not all
    assert fast_reports == full_reports
    assert fast_tables == full_tables


def test_fast_path_switches_off_only_optimisers_this_duckdb_has() -> None:
    import duckdb

    con = duckdb.connect()
    assert drops._known_optimizers(con, "filter_pushdown,no_such_optimizer,build_side_probe_side") == (
        "filter_pushdown,build_side_probe_side"
    )
    con.execute(
        f"SET disabled_optimizers = '{drops._known_optimizers(con, drops._FAST_OFF)}'"
    )  # accepted as is


def test_a_failing_fast_insert_keeps_its_error_and_leaves_the_connection_as_it_was(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    _drop(settings, DAY, "lifecycle_every_reason.csv", "lifecycle_2026-01-05.csv")
    real = drops.fast_insert_sql
    monkeypatch.setattr(
        drops, "fast_insert_sql", lambda *a: real(*a).replace("lifecycle_events", "gone_events", 1)
    )
    names = ("preserve_insertion_order", "disabled_optimizers")
    with open_state(Layout(settings.data_dir).state_db) as con:
        before = [con.execute(f"SELECT current_setting('{n}')").fetchall()[0][0] for n in names]
        with pytest.raises(duckdb.Error, match="gone_events"):  # not DuckDB's "transaction is aborted"
            ingest_day(settings, DAY, con)
        assert [con.execute(f"SELECT current_setting('{n}')").fetchall()[0][0] for n in names] == before
        assert con.execute("SELECT count(*) FROM lifecycle_events").fetchall() == [(0,)]
        monkeypatch.setattr(drops, "fast_insert_sql", real)
        (f,) = ingest_day(settings, DAY, con).files
    assert (f.status, f.accepted, f.quarantined) == ("ingested", 6, 16)
