"""Regulator exports against hand-built histories: the FCC RND monthly disconnect report
(incremental, split into batches, a confirmation for an empty month) and the China
二次号码焕新 list of numbers released in a month.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from lifecycle_testkit import World, day
from typer.testing import CliRunner

from pipelines import db
from pipelines.cli import app
from pipelines.compliance.exports import (
    FccExport,
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
    permanent: dt.date | None = None,
) -> None:
    """A hand-built tenure; ``permanent``: the day its disconnection became permanent (the
    release gate took it out of its freeze, or, for one closed by a reissue, the reissue)."""
    tid = f"T{msisdn}{start}"
    con.execute(
        "INSERT INTO tenures VALUES (?, ?, ?, ?, ?, 'S1', ?, NULL, NULL, 'en', 'snapshot', ?)",
        [tid, msisdn, start, end, reason, region, start],
    )
    if permanent is not None and reason == "reissue":
        con.execute(
            "INSERT INTO reissues VALUES (?, ?, ?, ?, ?, NULL, true, ?, ?, ?, 1)",
            [msisdn, tid, f"N{tid}", permanent, end, permanent, region, SHA],
        )
    elif permanent is not None:
        con.execute(
            "INSERT INTO state_history VALUES (?, ?, 'frozen', 'available', ?, ?, 'released', NULL, NULL)",
            [msisdn, tid, permanent, permanent],
        )


def processed_through(con: duckdb.DuckDBPyConnection, night: dt.date) -> None:
    con.execute(
        "INSERT INTO files VALUES (?, 'lifecycle', ?, ?, 'ingested', 0, 0, 0, 'utf-8', ',', NULL)",
        [f"lifecycle_{night}.csv", SHA, night],
    )


def march_history(con: duckdb.DuckDBPyConnection) -> None:
    # Short freezes, so that most of these became permanent in March.
    tenure(con, us(101), d(3, 3), "cancel", permanent=d(3, 8))
    tenure(con, us(102), d(3, 15), "suspend", permanent=d(3, 28))  # a 双停 that became final
    tenure(con, us(103), d(3, 5), "cancel", start=d(1, 1), permanent=d(3, 6))  # disconnected
    tenure(con, us(103), d(3, 20), "cancel", start=d(3, 6), permanent=d(3, 30))  # twice: one row
    tenure(con, us(104), d(3, 10), "port_out")  # a port is not a disconnection
    tenure(con, us(105), d(3, 12), "cancel", permanent=d(4, 2))  # April's: its freeze ended then
    tenure(con, us(106), None, None)  # active
    tenure(con, us(107), d(3, 25), "reissue", permanent=d(3, 25))  # closed by a reissue
    tenure(con, us(108), d(2, 27), "cancel", permanent=d(2, 28))  # before the first report: backlog
    tenure(con, us(110), d(3, 29), "cancel")  # still in its freeze: a restore may undo it
    tenure(con, "+8613800000001", d(3, 4), "cancel", region="GD", permanent=d(3, 9))  # not NANP
    tenure(con, "+14165550199", d(3, 4), "cancel", permanent=d(3, 9))  # Canada is NANP too
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
    # Learnt after March was reported: a 双停 suspension from March 28 became final in April.
    tenure(con, us(109), d(3, 28), "suspend", permanent=d(4, 20))
    processed_through(con, d(5, 3))
    april = export_fcc_disconnects(con, APRIL, tmp_path / "b", "ACME01")
    assert (april.numbers, april.cutoff) == (2, d(4, 30))
    assert read(tmp_path / "b" / april.files[0].name).splitlines()[1:] == [
        "ACME01,202604-001,2025550105,2026-03-12",
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


# --------------------------------------------------------------------------- FCC: when permanent
# Histories built by the nightly steps themselves (lifecycle_testkit.World: 10-day freeze,
# 5-day 双停 suspension, max 3 days held; day(n) is March 1 + n), processed through April 5.
CANCEL_SOLD = us(201)  # cancel Mar 3, freeze over Mar 13 (held), released Mar 16, sold Mar 20
CANCEL_RESTORED = us(202)  # cancel Mar 5, restored Mar 10
CANCEL_LATE_MARCH = us(203)  # cancel Mar 26, freeze over Apr 5
SUSPENSION_FINAL = us(204)  # 双停 Mar 20, frozen Mar 25, freeze over Apr 4
SUSPENSION_RESTORED = us(205)  # 双停 Mar 2, frozen Mar 7 (tenure ended Mar 2), restored Mar 10
CANCEL_RESTORED_IN_APRIL = us(206)  # cancel Mar 28, restored Apr 3 (freeze until Apr 7)


@pytest.fixture(scope="module")
def lived_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lived") / "state.duckdb"
    con = db.connect(path)
    world = World(con)
    for n in (201, 202, 203, 204, 205, 206):
        world.subscriber(day(0), us(n), region="NY")
    events = {
        2: [(CANCEL_SOLD, "cancel")],
        4: [(CANCEL_RESTORED, "cancel")],
        1: [(SUSPENSION_RESTORED, "suspend")],
        9: [(CANCEL_RESTORED, "restore"), (SUSPENSION_RESTORED, "restore")],
        19: [(SUSPENSION_FINAL, "suspend")],
        25: [(CANCEL_LATE_MARCH, "cancel")],
        27: [(CANCEL_RESTORED_IN_APRIL, "cancel")],
        33: [(CANCEL_RESTORED_IN_APRIL, "restore")],
    }
    for n in range(0, 36):
        for msisdn, event in events.get(n, []):
            world.event(day(n), msisdn, event, region="NY")
        if n == 19:
            world.reissue(day(n), CANCEL_SOLD, region="NY")
        world.run(day(n))
    # What the old rule (the tenure's end alone) got wrong: the restored 双停 had ended in March.
    assert world.state(SUSPENSION_RESTORED)["state"] == "active"
    assert world.state(CANCEL_SOLD)["state"] == "active"  # sold again: a new tenure
    con.close()
    return path


@pytest.fixture
def lived(lived_state: Path, tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    copy = tmp_path / "state.duckdb"
    shutil.copyfile(lived_state, copy)
    shutil.copytree(lived_state.parent / "keys", tmp_path / "keys")  # its contacts' keys go with it
    copy.chmod(0o600)  # a state file holds personal data: db.connect refuses a readable one
    c = db.connect(copy)
    yield c
    c.close()


def rows_of(out: Path, result: FccExport) -> list[str]:
    return [line for f in result.files for line in read(out / f.name).splitlines()[1:]]


def test_fcc_a_cancel_restored_within_its_freeze_is_never_reported(
    lived: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    march = export_fcc_disconnects(lived, MARCH, tmp_path / "m", "ACME01")
    april = export_fcc_disconnects(lived, APRIL, tmp_path / "a", "ACME01")
    reported = rows_of(tmp_path / "m", march) + rows_of(tmp_path / "a", april)
    for restored in (CANCEL_RESTORED, SUSPENSION_RESTORED, CANCEL_RESTORED_IN_APRIL):
        assert not [r for r in reported if restored[2:] in r]
    assert lived.execute("SELECT count(*) FROM fcc_reported").fetchone() == (3,)


def test_fcc_a_cancel_is_reported_in_the_month_its_freeze_ended(
    lived: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    march = export_fcc_disconnects(lived, MARCH, tmp_path / "m", "ACME01")
    # Only the cancel whose freeze ended in March (the number has been sold since); the one of
    # March 26 was still undoable on March 31.
    assert rows_of(tmp_path / "m", march) == ["ACME01,202603-001,2025550201,2026-03-03"]
    april = export_fcc_disconnects(lived, APRIL, tmp_path / "a", "ACME01")
    assert april.cutoff == d(4, 5)  # the last night processed: the day its freeze ended
    assert "ACME01,202604-001,2025550203,2026-03-26" in rows_of(tmp_path / "a", april)
    got = lived.execute(
        "SELECT msisdn, disconnected_on, permanent_on, report_month FROM fcc_reported ORDER BY msisdn"
    ).fetchall()
    assert got[0] == (CANCEL_SOLD, d(3, 3), d(3, 13), MARCH)
    assert got[1] == (CANCEL_LATE_MARCH, d(3, 26), d(4, 5), APRIL)


def test_fcc_a_suspension_is_reported_once_it_became_permanent(
    lived: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    march = export_fcc_disconnects(lived, MARCH, tmp_path / "m", "ACME01")
    assert SUSPENSION_FINAL[2:] not in "".join(rows_of(tmp_path / "m", march))  # frozen Mar 25
    april = export_fcc_disconnects(lived, APRIL, tmp_path / "a", "ACME01")
    assert rows_of(tmp_path / "a", april) == [
        "ACME01,202604-001,2025550203,2026-03-26",
        "ACME01,202604-001,2025550204,2026-03-20",  # the suspension's first day
    ]
    assert lived.execute(
        "SELECT disconnected_on, permanent_on FROM fcc_reported WHERE msisdn = ?", [SUSPENSION_FINAL]
    ).fetchall() == [(d(3, 20), d(4, 4))]


def test_fcc_a_month_rerun_is_idempotent(lived: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    march = export_fcc_disconnects(lived, MARCH, tmp_path / "m", "ACME01")
    april = export_fcc_disconnects(lived, APRIL, tmp_path / "a", "ACME01")
    taken = lived.execute("SELECT * FROM fcc_reported ORDER BY ALL").fetchall()
    # More nights pass (the April numbers are released at the gate) before the reruns.
    world = World(lived)
    for n in range(36, 41):
        world.run(day(n))
    again_april = export_fcc_disconnects(lived, APRIL, tmp_path / "a2", "ACME01")
    again_march = export_fcc_disconnects(lived, MARCH, tmp_path / "m2", "ACME01")
    assert not again_april.new and not again_march.new
    for first, again, old, new in ((march, again_march, "m", "m2"), (april, again_april, "a", "a2")):
        assert again.files == first.files
        for f in first.files:
            assert (tmp_path / new / f.name).read_bytes() == (tmp_path / old / f.name).read_bytes()
        assert (tmp_path / new / again.manifest.name).read_bytes() == first.manifest.read_bytes()
    assert lived.execute("SELECT * FROM fcc_reported ORDER BY ALL").fetchall() == taken


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


def test_a_state_file_from_before_permanent_on_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute(
        "CREATE TABLE fcc_reported (tenure_id VARCHAR NOT NULL, msisdn VARCHAR NOT NULL, "
        "disconnected_on DATE NOT NULL, report_month DATE NOT NULL, nanp BOOLEAN NOT NULL)"
    )
    old.execute("INSERT INTO fcc_reported VALUES ('T1', ?, ?, ?, true)", [us(1), d(2, 1), MARCH])
    old.close()
    path.chmod(0o600)  # a state file holds personal data: db.connect refuses a readable one
    with db.open_state(path) as con:
        assert con.execute("SELECT permanent_on FROM fcc_reported").fetchall() == [(None,)]
