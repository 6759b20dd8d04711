"""Fuzzing the drop reader (issue 12): arbitrary bytes and CSV-ish text, never a traceback.

Properties: reading a file raises nothing but the package's errors (and, after a sound header,
none at all: a bad record is that record's problem); every record is one row,
refused with a reason or not; and where Python's ``csv`` module (strict) reads the same text
without error, sees no line over the cap and every record spanning lines is a sound one (the
header's width, within the caps), the reader finds exactly the records ``csv`` finds. The
line cap is made small here so that "huge" fields are cheap.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import tempfile
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config import load_settings
from pipelines.db import open_state
from pipelines.errors import RecycleError
from pipelines.ingest import read
from pipelines.ingest.drops import ingest_day
from pipelines.ingest.spec import REASONS, drop_specs
from pipelines.layout import Layout

HEADER = "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language"
WIDTH = 9
CAP = 200  # bytes per line and per record, instead of read.MAX_LINE_BYTES
DAY = dt.date(2026, 1, 5)

_ODD = [",", '"', "\n", "\r", "\r\n", " ", "|", "\x00", "a", "7", "中", "é"]
_GOOD = ["13812345678", "cancel", "2026-01-05", "GD", "S1", "", "en", "+86 138 1234 5679"]
fields = st.one_of(st.sampled_from(_GOOD), st.lists(st.sampled_from(_ODD), max_size=6).map("".join))
huge = st.integers(CAP, CAP + 50).map(lambda n: "x" * n)  # over the cap
rows = st.lists(
    st.one_of(
        st.lists(fields, min_size=WIDTH, max_size=WIDTH),
        st.lists(fields, min_size=WIDTH - 1, max_size=WIDTH + 1),
        st.lists(st.one_of(fields, huge), min_size=WIDTH, max_size=WIDTH),
    ),
    max_size=8,
)


def _written(records: list[list[str]], terminator: str) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=terminator)
    writer.writerow(HEADER.split(","))
    writer.writerows(records)
    return out.getvalue().encode("utf-8")


csvish = st.builds(_written, rows, st.sampled_from(["\n", "\r\n", "\r"]))
text_lines = st.lists(
    st.lists(st.sampled_from([*_ODD, "13812345678", "2026-01-05"]), max_size=12).map("".join)
)
raw = st.one_of(
    csvish,
    st.binary(max_size=400).map(lambda b: (HEADER + "\n").encode() + b),
    st.tuples(text_lines, st.sampled_from(["utf-8", "gbk"])).map(
        lambda t: (HEADER + "\n" + "\n".join(t[0])).encode(t[1], "ignore")
    ),
)


def _reference_records(data: bytes) -> int | None:
    """The data records ``csv`` (strict) sees, where the reader must agree; None where undefined."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(len(line.encode()) > CAP for line in text.splitlines()) or "\x1f" in text:
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    count, seen = 0, 0
    try:
        for record in reader:
            span, seen = reader.line_num - seen, reader.line_num
            joined = len(",".join(record).encode()) + 2 * span
            if span > 1 and (len(record) != WIDTH or span > read.MAX_RECORD_LINES or joined > CAP):
                return None
            count += 1
    except csv.Error:
        return None
    return count - 1 if count else None


def _stage_rows(data: bytes) -> tuple[int, list[tuple[int, str | None]]] | None:
    """(rows_in, [(line_no, malformed)]) as the reader stages ``data``; None: refused as a whole."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lifecycle_2026-01-05.csv"
        path.write_bytes(data)
        con = duckdb.connect()
        try:
            staged = read.stage_csv(con, path, read.sniff(path), drop_specs()["lifecycle"], Path(tmp) / "w")
            got = con.execute(f"SELECT line_no, malformed FROM ({staged.select_sql}) ORDER BY line_no")
            return staged.rows_in, [(int(n), m) for n, m in got.fetchall()]
        except RecycleError:
            return None
        finally:
            read.release(con)
            con.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw)
def test_the_reader_gives_every_record_one_row_and_agrees_with_csv(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(read, "MAX_LINE_BYTES", CAP)
        mp.setattr(read, "SHOWN_CHARS", 50)
        staged = _stage_rows(data)
    # Every example starts with a sound header: no file is refused as a whole, whatever follows.
    assert staged is not None
    rows_in, got = staged
    line_nos = [n for n, _ in got]
    assert len(got) == rows_in and line_nos == sorted(set(line_nos)) and all(n >= 2 for n in line_nos)
    assert all(m is None or m.strip() for _, m in got)
    expected = _reference_records(data)
    if expected is not None:
        assert rows_in == expected


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw)
def test_a_night_accepts_or_quarantines_every_record_with_a_reason(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(read, "MAX_LINE_BYTES", CAP)
        config = load_settings(env={}, data_dir=Path(tmp) / "var")
        inbox = Layout(config.data_dir).inbox(DAY)
        inbox.mkdir(parents=True)
        (inbox / "lifecycle_2026-01-05.csv").write_bytes(data)
        (f,) = ingest_day(config, DAY).files  # raises nothing: a broken file is a failed report
        if f.status == "failed":
            assert f.error and f.error.startswith("lifecycle_2026-01-05.csv: ")
            return
        assert f.rows_in == f.accepted + f.quarantined
        expected = _reference_records(data)
        assert expected is None or f.rows_in == expected
        with open_state(Layout(config.data_dir).state_db, read_only=True) as con:
            reasons = con.execute("SELECT reason, detail FROM quarantine").fetchall()
        assert len(reasons) == f.quarantined
        assert all(r in REASONS and d for r, d in reasons)
