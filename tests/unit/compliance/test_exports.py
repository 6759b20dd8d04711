"""Regulator exports against hand-built histories: the FCC RND monthly disconnect report
(incremental, split into batches, a confirmation for an empty month) and the China
二次号码焕新 list of numbers released in a month.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from pipelines import db
from pipelines.cli import app
from pipelines.compliance.exports import (
    export_cn_renewal,
    export_fcc_disconnects,
    month_bounds,
    parse_month,
)
from pipelines.errors import TerminalError

SHA = "e" * 64
MARCH, APRIL, MAY = dt.date(2026, 3, 1), dt.date(2026, 4, 1), dt.date(2026, 5, 1)


def d(month: int, day: int) -> dt.date:
    return dt.date(2026, month, day)


def us(i: int) -> str:
    return f"+1202555{i:04d}"


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = db.connect(tmp_path / "state.duckdb")
    yield c
    c.close()


def tenure(
    con: duckdb.DuckDBPyConnection,
    msisdn: str,
    end: dt.date | None,
    reason: str | None,
    start: dt.date = d(1, 1),
    region: str = "NY",
) -> None:
    tid = f"T{msisdn}{start}"
    con.execute(
        "INSERT INTO tenures VALUES (?, ?, ?, ?, ?, 'S1', ?, NULL, NULL, 'en', 'snapshot', ?)",
        [tid, msisdn, start, end, reason, region, start],
    )


def processed_through(con: duckdb.DuckDBPyConnection, night: dt.date) -> None:
    con.execute(
        "INSERT INTO files VALUES (?, 'lifecycle', ?, ?, 'ingested', 0, 0, 0, 'utf-8', ',', NULL)",
        [f"lifecycle_{night}.csv", SHA, night],
    )


def march_history(con: duckdb.DuckDBPyConnection) -> None:
    tenure(con, us(101), d(3, 3), "cancel")
    tenure(con, us(102), d(3, 15), "suspend")  # a 双停 suspension that became final
    tenure(con, us(103), d(3, 5), "cancel", start=d(1, 1))  # disconnected twice in March:
    tenure(con, us(103), d(3, 20), "cancel", start=d(3, 6))  # one row, the most recent date
    tenure(con, us(104), d(3, 10), "port_out")  # a port is not a disconnection
    tenure(con, us(105), d(4, 2), "cancel")  # April's
    tenure(con, us(106), None, None)  # active
    tenure(con, us(107), d(3, 25), "reissue")  # closed by a reissue: it did change hands
    tenure(con, us(108), d(2, 27), "cancel")  # before the first report: the backlog goes in it
    tenure(con, "+8613800000001", d(3, 4), "cancel", region="GD")  # not NANP: skipped, counted
    tenure(con, "+14165550199", d(3, 4), "cancel")  # Canada is NANP too: +1 and 10 digits
    processed_through(con, d(4, 5))


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_month_helpers() -> None:
    assert parse_month("2026-02") == dt.date(2026, 2, 1)
    assert month_bounds(dt.date(2028, 2, 10)) == (dt.date(2028, 2, 1), dt.date(2028, 2, 29))
    assert month_bounds(dt.date(2026, 12, 31)) == (dt.date(2026, 12, 1), dt.date(2026, 12, 31))
    with pytest.raises(TerminalError):
        parse_month("2026-13")


def test_fcc_report_rows_batches_and_manifest(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    march_history(con)
    out = tmp_path / "rnd"
    result = export_fcc_disconnects(con, MARCH, out, "ACME01", max_rows=2)
    assert (result.numbers, result.disconnections, result.skipped_non_nanp, result.cutoff) == (
        6,
        7,
        1,
        d(3, 31),
    )
    names = [f.name for f in result.files]
    assert names == [
        "rnd-disconnects_ACME01_202603_202603-001.csv",
        "rnd-disconnects_ACME01_202603_202603-002.csv",
        "rnd-disconnects_ACME01_202603_202603-003.csv",
    ]
    assert read(out / names[0]) == (
        "company_id,batch_id,telephone_number,disconnect_date\n"
        "ACME01,202603-001,2025550101,2026-03-03\n"
        "ACME01,202603-001,2025550102,2026-03-15\n"
    )
    assert read(out / names[1]) == (
        "company_id,batch_id,telephone_number,disconnect_date\n"
        "ACME01,202603-002,2025550103,2026-03-20\n"
        "ACME01,202603-002,2025550107,2026-03-25\n"
    )
    assert read(out / names[2]) == (
        "company_id,batch_id,telephone_number,disconnect_date\n"
        "ACME01,202603-003,2025550108,2026-02-27\n"
        "ACME01,202603-003,4165550199,2026-03-04\n"
    )
    manifest = json.loads(read(result.manifest))
    assert result.manifest.name == "rnd-disconnects_ACME01_202603.manifest.json"
    assert manifest["numbers"] == 6 and manifest["skipped_non_nanp"] == 1
    assert manifest["no_disconnects"] is False and manifest["max_rows_per_file"] == 2
    for f in manifest["files"]:
        data = (out / f["name"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
        assert f["rows"] == data.count(b"\n") - 1
    assert [f["batch_id"] for f in manifest["files"]] == ["202603-001", "202603-002", "202603-003"]


def test_fcc_is_incremental_and_a_month_rewrites_the_same_bytes(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    march_history(con)
    first = export_fcc_disconnects(con, MARCH, tmp_path / "a", "ACME01")
    assert first.new and len(first.files) == 1 and first.files[0].rows == 6
    # Learnt after March was reported: a 双停 suspension from March 28 became final in May.
    tenure(con, us(109), d(3, 28), "suspend")
    processed_through(con, d(5, 3))
    april = export_fcc_disconnects(con, APRIL, tmp_path / "b", "ACME01")
    assert (april.numbers, april.cutoff) == (2, d(4, 30))
    assert read(tmp_path / "b" / april.files[0].name).splitlines()[1:] == [
        "ACME01,202604-001,2025550105,2026-04-02",
        "ACME01,202604-001,2025550109,2026-03-28",
    ]
    again = export_fcc_disconnects(con, MARCH, tmp_path / "c", "ACME01")
    assert not again.new and again.files == first.files  # same names, rows and SHA-256
    assert (tmp_path / "c" / again.manifest.name).read_bytes() == first.manifest.read_bytes()
    # May: nothing new yet, and the state has processed May up to the 3rd (the cutoff).
    may = export_fcc_disconnects(con, MAY, tmp_path / "d", "ACME01")
    assert may.no_disconnects and may.cutoff == d(5, 3)
    assert [f.name for f in may.files] == ["rnd-disconnects_ACME01_202605_no-disconnects.csv"]
    assert read(tmp_path / "d" / may.files[0].name) == (
        "company_id,report_month,cutoff,confirmation\n"
        "ACME01,2026-05,2026-05-03,no permanently disconnected numbers to report\n"
    )
    assert json.loads(read(may.manifest))["no_disconnects"] is True
    assert con.execute("SELECT count(*), count(DISTINCT tenure_id) FROM fcc_reported").fetchall() == [
        (10, 10)
    ]  # every disconnection taken once (the non-NANP one as skipped)


def test_fcc_refusals(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    march_history(con)
    with pytest.raises(TerminalError, match="3-10 letters or digits"):
        export_fcc_disconnects(con, MARCH, tmp_path, "AB")
    with pytest.raises(TerminalError, match="processed nights only up to 2026-04-05"):
        export_fcc_disconnects(con, dt.date(2026, 6, 1), tmp_path, "ACME01")
    export_fcc_disconnects(con, APRIL, tmp_path, "ACME01")
    with pytest.raises(TerminalError, match="incremental"):
        export_fcc_disconnects(con, MARCH, tmp_path, "ACME01")
    with pytest.raises(TerminalError, match="company id ACME01"):
        export_fcc_disconnects(con, APRIL, tmp_path, "OTHER1")
    with pytest.raises(TerminalError, match="split at"):
        export_fcc_disconnects(con, APRIL, tmp_path, "ACME01", max_rows=5)


def cn_history(con: duckdb.DuckDBPyConnection) -> None:
    def release(m: str, region: str, disc: dt.date, rel: dt.date, eff: int, exc: bool) -> None:
        con.execute(
            "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [m, f"T{m}", disc, rel, eff, exc, rel, region],
        )

    def reissue(m: str, on: dt.date, violation: bool, line: int) -> None:
        con.execute(
            "INSERT INTO reissues VALUES (?, ?, ?, ?, NULL, NULL, ?, ?, 'GD', ?, ?)",
            [m, f"T{m}", f"N{m}{line}", on, violation, on, SHA, line],
        )

    a, b, c, e, f, g = (f"+86139000000{i:02d}" for i in range(1, 7))
    release(a, "GD", d(2, 20), d(3, 4), 2, False)
    reissue(a, d(3, 6), False, 1)
    reissue(a, d(3, 20), False, 2)  # a later sale: the first one after the release counts
    release(b, "BJ", d(2, 19), d(3, 8), 1, True)
    release(c, "SH", d(3, 1), d(3, 31), 3, False)
    reissue(c, d(4, 2), False, 3)  # after the month, but known when exported
    release(e, "GD", d(2, 1), d(2, 28), 2, False)  # February
    release(f, "GD", d(3, 22), d(4, 1), 2, False)  # April
    release(g, "GD", d(2, 25), d(3, 10), 2, False)
    reissue(g, d(3, 9), True, 4)  # a violation before the release is not "reissued after it"


def test_cn_renewal_rows_and_manifest(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    cn_history(con)
    processed_through(con, d(3, 20))
    result = export_cn_renewal(con, MARCH, tmp_path)
    assert read(tmp_path / "cn-renewal_2026-03.csv") == (
        "msisdn,region,disconnected_on,released_on,effective_reminders,exception,reissued_on\n"
        "+8613900000001,GD,2026-02-20,2026-03-04,2,false,2026-03-06\n"
        "+8613900000002,BJ,2026-02-19,2026-03-08,1,true,\n"
        "+8613900000006,GD,2026-02-25,2026-03-10,2,false,\n"
        "+8613900000003,SH,2026-03-01,2026-03-31,3,false,2026-04-02\n"
    )
    assert (result.rows, result.with_exception, result.reissued, result.complete) == (4, 1, 2, False)
    manifest = json.loads(read(result.manifest))
    assert manifest["complete"] is False and manifest["state_through"] == "2026-03-20"
    assert (
        manifest["files"][0]["sha256"]
        == hashlib.sha256((tmp_path / "cn-renewal_2026-03.csv").read_bytes()).hexdigest()
    )
    processed_through(con, d(4, 1))
    assert export_cn_renewal(con, MARCH, tmp_path / "later").complete


def test_cn_renewal_empty_month(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    result = export_cn_renewal(con, MAY, tmp_path)
    assert result.rows == 0 and result.state_through is None
    assert read(tmp_path / "cn-renewal_2026-05.csv") == (
        "msisdn,region,disconnected_on,released_on,effective_reminders,exception,reissued_on\n"
    )


def test_cli_exports(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    march_history(con)
    con.close()
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "state.duckdb").rename(data / "state.duckdb")
    runner = CliRunner()
    fcc = runner.invoke(
        app,
        [
            "export-fcc",
            "--month",
            "2026-03",
            "--company-id",
            "ACME01",
            "--out",
            str(tmp_path / "rnd"),
            "--max-rows",
            "4",
            "--data",
            str(data),
        ],
    )
    assert fcc.exit_code == 0, fcc.output
    assert "6 numbers in 2 file(s); 1 non-US" in fcc.output
    cn = runner.invoke(
        app, ["export-cn", "--month", "2026-03", "--out", str(tmp_path / "cn"), "--data", str(data)]
    )
    assert cn.exit_code == 0, cn.output
    assert (tmp_path / "cn" / "cn-renewal_2026-03.csv").exists()
