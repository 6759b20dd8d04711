"""The nightly DAG split by province (issue 17): the per-province steps are mapped task groups
over the configured provinces, the sequencer's steps run once between them, and real Airflow
runs (``dag.test()``, SQLite metadata) of generated nights give the embedded outcome."""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import load_settings
from pipelines.dev.compare import compare_outcomes
from pipelines.dev.demo import DEMO_POLICY
from pipelines.dev.synth import generate
from pipelines.layout import Layout
from pipelines.nightly.steps import STEPS, RunContext, run_day
from pipelines.provinces.split import split_drops

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "number_recycling_nightly.py"
START = dt.date(2026, 9, 1)
NIGHTS = 4
PROVINCES = ("BJ", "GD")
CONFIG = 'data_dir = "{data}"\nprovinces = {provinces}\n' + DEMO_POLICY


def _load_dag(config: Path, mp: pytest.MonkeyPatch) -> Any:
    mp.setenv("RECYCLE_CONFIG", str(config))
    spec = importlib.util.spec_from_file_location("number_recycling_nightly_provinces", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.nightly_dag


def _config(root: Path, data: Path, provinces: tuple[str, ...]) -> Path:
    path = root / f"{data.name}.toml"
    path.write_text(CONFIG.format(data=data, provinces=list(provinces)).replace("'", '"'))
    return path


def test_province_steps_are_mapped_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _load_dag(_config(tmp_path, tmp_path / "data", PROVINCES), monkeypatch)
    province = [s.name for s in STEPS if s.scope == "province"]
    national = [s.name for s in STEPS if s.scope == "national"]
    before, after = province[: province.index("send") + 1], province[province.index("send") + 1 :]
    ids = [
        "drops",
        "preflight",
        *(f"provinces_ingest.{n}" for n in before),
        *national,
        *(f"provinces_contacts.{n}" for n in after),
    ]
    assert set(dag.task_ids) == set(ids)
    for first, then in itertools.pairwise(ids):
        assert then in dag.get_task(first).downstream_task_ids, (first, then)
    assert type(dag.task_group_dict["provinces_ingest"]).__name__ == "MappedTaskGroup"
    for name in national:
        assert dag.get_task(name).pool == ("recycle_state" if name != "push" else "default_pool")
    assert dag.get_task("provinces_ingest.send").pool == "default_pool"  # provinces run at once


@pytest.mark.slow
def test_split_nights_through_airflow_equal_the_embedded_run(
    tmp_path: Path, airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen, split, embedded = tmp_path / "generated", tmp_path / "split", tmp_path / "embedded"
    generate(gen, START, NIGHTS, 40, 5, 0.02, regions=PROVINCES, freeze_days=10, suspend_days=5)
    dag = _load_dag(_config(tmp_path, split, PROVINCES), monkeypatch)
    one = load_settings(_config(tmp_path, embedded, ()), env={})
    many = load_settings(_config(tmp_path, split, PROVINCES), env={})
    for n in range(NIGHTS):
        day = START + dt.timedelta(days=n)
        split_drops(many, day, source=Layout(gen).inbox(day))
        run = dag.test(
            logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC),
            run_conf={"simulate_gateways": True, "alerts_mode": "record"},
        )
        assert str(run.state) == "success", day
        shutil.copytree(Layout(gen).inbox(day), Layout(embedded).inbox(day), dirs_exist_ok=True)
        run_day(one, day, RunContext(simulate_gateways=True, alerts_mode="record"))
    assert compare_outcomes(embedded, split) == []
    for code in PROVINCES:  # every province ran every province step of every night
        runs = Layout(split / "provinces" / code).root / "runs"
        assert len(list(runs.glob("*/steps/send.json"))) == NIGHTS
