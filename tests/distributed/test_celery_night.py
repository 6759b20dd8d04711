"""A few generated nights through Airflow's Celery cluster (``cluster``: scheduler, dag-processor,
api-server, two workers as separate processes; PostgreSQL metadata, a Redis broker and S3
storage, all on loopback), then the same nights embedded (``run_day`` in this process, one
state, local storage) into another data directory: every task succeeds, both workers ran
tasks, and the outcomes are the same (``pipelines.dev.compare.compare_outcomes``).

Needs PostgreSQL and Redis (``.ci/run`` installs Debian's packages) and moto's S3 server
(``make install``): without them the test is skipped, except under CI (``CI`` set), where a
missing service is a failure."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import S3StorageSettings, Settings, load_settings
from pipelines.dev.compare import compare_outcomes
from pipelines.dev.demo import DEMO_POLICY
from pipelines.dev.synth import generate
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, run_day
from pipelines.provinces.split import split_drops
from pipelines.storage import Storage

from . import services
from .cluster import (
    WORKERS,
    Endpoints,
    airflow_cluster,
    run_report,
    task_instances,
    trigger_night,
    wait_for_run,
)

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

START = dt.date(2026, 9, 1)
NIGHTS = 3
# Each province its own state and mapped tasks, the sequencer one ledger batch and one feed;
# () runs the DAG's steps once each on one state.
PROVINCES = ("BJ", "GD", "SH")
BUCKET, STORAGE = "recycle", "s3://recycle/cn"
# The demo's compressed policy, so three nights already move numbers through their lives.
POLICY = DEMO_POLICY
# What `make demo` passes: loopback gateways take the reminders; early reissues in the
# synthetic drops are recorded as alerts instead of failing the night.
RUN_CONF: dict[str, Any] = {"simulate_gateways": True, "alerts_mode": "record"}


@dataclass
class Outcome:
    data: Path  # the cluster's data directory
    bss: Path  # the generated nights as the BSS exports them (national files)
    storage: Storage  # the cluster's bucket
    states: dict[str, str]  # run id -> final state
    tasks: dict[str, list[dict[str, Any]]]  # run id -> its task instances (REST)
    reports: dict[str, str]  # run id -> run_report, for the failure messages
    timings: dict[str, float]


def _require_services() -> None:
    missing = services.missing_binaries()
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"under CI the distributed run must run; missing: {'; '.join(missing)}")
    pytest.skip(f"missing: {'; '.join(missing)}")


def _config(path: Path) -> Path:
    """The pipeline's config file; provinces, storage and endpoints come from the environment."""
    path.write_text(POLICY)
    return path


def _cluster_settings(ep: Endpoints) -> Settings:
    """What the cluster's tasks read, for this process (it uploads the drops)."""
    s3 = S3StorageSettings(ep.s3.endpoint, ep.s3.region, allow_http=True)
    return load_settings(
        ep.config,
        env={},
        data_dir=ep.data_dir,
        storage=ep.storage,
        storage_s3=s3,
        provinces=list(ep.provinces),
    )


def _upload_drops(bss: Path, settings: Settings, stage: Path) -> None:
    """The BSS's upload: every night's drops into the bucket only (the data directory has no
    inbox), split into the provinces' inboxes first when the work is split."""
    source = bss
    if settings.provinces:
        staged = load_settings(env={}, data_dir=stage, provinces=list(settings.provinces))
        for i in range(NIGHTS):
            day = START + dt.timedelta(days=i)
            split_drops(staged, day, source=Layout(bss).inbox(day))
        source = stage
    storage = Storage.from_settings(settings)
    for path in sorted(source.rglob("*")):
        if path.is_file() and "inbox" in path.relative_to(source).parts:
            storage.write_bytes(path.relative_to(source).as_posix(), path.read_bytes())


@pytest.fixture(scope="module")
def on_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    _require_services()
    root = tmp_path_factory.mktemp("celery")
    bss, config = root / "bss", _config(root / "recycle.toml")
    generate(bss, START, NIGHTS, 40, 11, 0.05, regions=PROVINCES or None, freeze_days=10, suspend_days=5)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with (
        pytest.MonkeyPatch.context() as mp,
        services.postgres() as metadata,
        services.redis(root) as broker,
        services.s3(root, BUCKET) as s3,
    ):
        ep = Endpoints(metadata, broker, services.free_port(), config, root / "data", s3, STORAGE, PROVINCES)
        for name, value in (("AWS_ACCESS_KEY_ID", s3.key_id), ("AWS_SECRET_ACCESS_KEY", s3.secret)):
            mp.setenv(name, value)  # this process uploads the drops and reads the bucket
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        settings = _cluster_settings(ep)
        _upload_drops(bss, settings, root / "split")
        with airflow_cluster(ep, root / "airflow") as cluster:
            timings["start"] = time.monotonic() - t0
            outcome = Outcome(ep.data_dir, bss, Storage.from_settings(settings), {}, {}, {}, timings)
            for i in range(NIGHTS):  # one after another: each night builds on the last
                t = time.monotonic()
                run_id = trigger_night(cluster, START + dt.timedelta(days=i), RUN_CONF)
                outcome.states[run_id] = wait_for_run(cluster, run_id)
                outcome.tasks[run_id] = task_instances(cluster, run_id)
                outcome.reports[run_id] = run_report(cluster, run_id)
                timings[run_id] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0
        print(f"distributed run timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
        yield outcome


def test_every_night_and_task_succeeds(on_cluster: Outcome) -> None:
    for run_id, state in on_cluster.states.items():
        assert state == "success", f"{run_id} {state}:\n{on_cluster.reports[run_id]}"
        bad = [ti["task_id"] for ti in on_cluster.tasks[run_id] if ti["state"] != "success"]
        assert not bad, f"{run_id}: {bad} did not succeed:\n{on_cluster.reports[run_id]}"


def test_both_workers_ran_tasks(on_cluster: Outcome) -> None:
    hosts = {ti["hostname"] for tis in on_cluster.tasks.values() for ti in tis}
    assert hosts == set(WORKERS), f"task hosts {sorted(map(str, hosts))}, expected both of {WORKERS}"


def test_the_province_steps_ran_once_per_province(on_cluster: Outcome) -> None:
    for run_id, tis in on_cluster.tasks.items():
        mapped = {(ti["task_id"], ti["map_index"]) for ti in tis if ti["map_index"] >= 0}
        ingest = sorted(i for task_id, i in mapped if task_id.endswith(".ingest"))
        assert ingest == list(range(len(PROVINCES))), f"{run_id}: ingest ran for map indexes {ingest}"


def test_the_bucket_holds_what_was_published(on_cluster: Outcome) -> None:
    last = START + dt.timedelta(days=NIGHTS - 1)
    for rel in ("feeds/timestamp.json", f"feeds/daily/{last}/manifest.json", "ledger/checkpoint"):
        local = on_cluster.data / rel
        assert on_cluster.storage.read_bytes(rel) == local.read_bytes(), rel
    if PROVINCES:
        for code in PROVINCES:
            assert Layout(on_cluster.data / "provinces" / code).state_db.exists(), code
        assert not Layout(on_cluster.data).state_db.exists()


def test_the_outcome_equals_the_embedded_run(on_cluster: Outcome, tmp_path: Path) -> None:
    """The same nights in this process, one state for all, local storage: `recycle run`."""
    data = tmp_path / "data"
    settings = load_settings(_config(tmp_path / "recycle.toml"), env={}, data_dir=data)
    for i in range(NIGHTS):
        day = START + dt.timedelta(days=i)
        # dirs_exist_ok: the night before wrote this night's simulated receipts there
        shutil.copytree(Layout(on_cluster.bss).inbox(day), Layout(data).inbox(day), dirs_exist_ok=True)
        run_day(settings, day, RunContext(**RUN_CONF))
    assert compare_outcomes(data, on_cluster.data) == []
