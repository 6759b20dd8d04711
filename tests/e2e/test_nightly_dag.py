"""One real Airflow run per night (``dag.test()``, SQLite metadata) over generated drops with
defects: every row accepted or quarantined as the generator's ground truth says, and a
rerun of a night changes nothing in the state, the ledger or the feeds."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.dev.demo import DEMO_POLICY
from pipelines.dev.synth import generate
from pipelines.layout import Layout

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "number_recycling_nightly.py"
START = dt.date(2026, 9, 1)
DAYS = 5
CONFIG = 'data_dir = "{data}"\n' + DEMO_POLICY


def _load_dag() -> Any:
    spec = importlib.util.spec_from_file_location("number_recycling_nightly_e2e", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.nightly_dag


def _run(dag: Any, day: dt.date) -> str:
    run = dag.test(
        logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC),
        run_conf={"simulate_gateways": True, "alerts_mode": "record"},
    )
    return str(run.state)


def _state_digest(db: Path) -> dict[str, tuple[int, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            rows = con.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall()
            out[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
        return out
    finally:
        con.close()


def _files_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for sub in ("ledger", "feeds", "snapshot")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("nightly")
    generate(data, START, DAYS, 60, seed=11, defect_rate=0.08, freeze_days=10, suspend_days=5)
    config = data / "recycle.toml"
    config.write_text(CONFIG.format(data=data))
    mp = pytest.MonkeyPatch()
    mp.setenv("RECYCLE_CONFIG", str(config))
    dag = _load_dag()
    states = [_run(dag, START + dt.timedelta(days=i)) for i in range(DAYS)]
    yield {"data": data, "dag": dag, "states": states}
    mp.undo()


def test_every_night_succeeds(nightly: dict[str, Any]) -> None:
    assert nightly["states"] == ["success"] * DAYS


def test_rows_are_conserved_and_quarantined_as_the_truth_says(nightly: dict[str, Any]) -> None:
    data: Path = nightly["data"]
    con = duckdb.connect(str(Layout(data).state_db), read_only=True)
    try:
        for i in range(DAYS):
            day = START + dt.timedelta(days=i)
            truth = json.loads((data / "truth" / f"{day}.json").read_text())["files"]
            files = {
                r[0]: r[1:]
                for r in con.execute(
                    "SELECT file_name, status, rows_in, accepted, quarantined FROM files "
                    "WHERE logical_date = ?",
                    [day],
                ).fetchall()
            }
            for name, expected in truth.items():
                if name not in files:
                    # a header-only file is byte-identical to an earlier day's: skipped by hash
                    assert expected["rows"] == 0, f"{day}: {name} was not ingested"
                    continue
                status, rows_in, accepted, quarantined = files[name]
                assert status == "ingested"
                assert rows_in == accepted + quarantined == expected["rows"], name
                assert (accepted, quarantined) == (expected["accepted"], expected["quarantined"]), name
                lines = con.execute(
                    "SELECT q.line_no, q.reason FROM quarantine q JOIN files f "
                    "ON f.sha256 = q.file_sha256 WHERE f.file_name = ? AND q.stage = 'ingest' "
                    "ORDER BY 1",
                    [name],
                ).fetchall()
                assert [list(x) for x in lines] == [list(x) for x in expected["quarantine_lines"]], name
    finally:
        con.close()


def test_rerunning_a_night_changes_nothing(nightly: dict[str, Any]) -> None:
    data: Path = nightly["data"]
    before = (_state_digest(Layout(data).state_db), _files_digest(data))
    assert _run(nightly["dag"], START + dt.timedelta(days=DAYS - 1)) == "success"
    after = (_state_digest(Layout(data).state_db), _files_digest(data))
    assert after == before


def test_lifecycle_moved_and_the_ledger_grew(nightly: dict[str, Any]) -> None:
    data: Path = nightly["data"]
    con = duckdb.connect(str(Layout(data).state_db), read_only=True)
    try:
        states = dict(con.execute("SELECT state, count(*) FROM number_state GROUP BY 1").fetchall())
        sent = con.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()
        pending = con.execute("SELECT count(*) FROM ledger_events WHERE NOT appended").fetchone()
    finally:
        con.close()
    assert states.get("active", 0) > 0 and states.get("frozen", 0) > 0
    assert sent is not None and sent[0] > 0
    assert pending == (0,)
    checkpoint = (data / "ledger" / "checkpoint").read_text().splitlines()
    assert int(checkpoint[1]) > 0
    assert (data / "feeds" / "timestamp.json").exists()


WAITING_CONFIG = "drops_wait_minutes = 0.05\ndrops_poke_seconds = 1\n" + CONFIG  # keys before [policy]


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(root)): (
            p.lstat().st_mode,
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.slow  # about a minute: dag.test() reschedules the sensor until its 3 s timeout
def test_a_night_without_drops_waits_then_fails_and_writes_nothing(
    tmp_path: Path, airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``drops`` sensor pokes until its timeout (3 s here, drops_wait_minutes = 0.05), then
    the run fails before ``preflight`` and every step: the data directory is byte-identical."""
    data = tmp_path / "no-drops"
    (data / "inbox" / str(START)).mkdir(parents=True)
    (data / "inbox" / str(START) / "receipts_late.csv").write_text(
        "reminder_id,channel,status,at,provider_ref\n"
    )
    config = tmp_path / "recycle.toml"
    config.write_text(WAITING_CONFIG.format(data=data))
    monkeypatch.setenv("RECYCLE_CONFIG", str(config))
    dag = _load_dag()  # parsed under this config: the sensor's timeout is read at parse time
    assert dag.get_task("drops").timeout == 3
    before = _tree(data)
    started = time.monotonic()
    run = dag.test(logical_date=dt.datetime(START.year, START.month, START.day, tzinfo=dt.UTC))
    waited = time.monotonic() - started
    assert str(run.state) == "failed"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["drops"] == "failed"
    assert {states["preflight"], states["ingest"], states["alerts"]} == {"upstream_failed"}
    assert waited >= 3
    assert _tree(data) == before
