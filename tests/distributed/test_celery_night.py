"""A few generated nights through Airflow's Celery cluster (``cluster``: scheduler, dag-processor,
api-server, two workers as separate processes; PostgreSQL metadata, Redis broker, all on
loopback), then the same nights embedded (``run_day`` in this process) into another data
directory: every task succeeds, both workers ran tasks, and the outcomes are the same.

Needs PostgreSQL and Redis (``.ci/run`` installs Debian's packages): without them the test is
skipped, except under CI (``CI`` set), where a missing service is a failure."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.config import load_settings
from pipelines.dev.synth import generate
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, run_day
from tests.distributed import services
from tests.distributed.cluster import (
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
# The demo's compressed policy, so three nights already move numbers through their lives.
CONFIG = """\
[policy.default]
freeze_days = 10
suspend_days = 5
reminder_offsets = [0, 4, -3]
min_effective_reminders = 2
max_hold_days = 4
"""
# What `make demo` passes: loopback gateways take the reminders; early reissues in the
# synthetic drops are recorded as alerts instead of failing the night.
RUN_CONF: dict[str, Any] = {"simulate_gateways": True, "alerts_mode": "record"}


@dataclass
class Outcome:
    data: Path
    states: dict[str, str]  # run id -> final state
    tasks: dict[str, list[dict[str, Any]]]  # run id -> its task instances (REST)
    reports: dict[str, str]  # run id -> run_report, for the failure messages
    timings: dict[str, float]


def _require_services() -> None:
    missing = services.missing_binaries()
    if not missing:
        return
    what = f"{' and '.join(missing)} not installed (apt-get install postgresql redis-server; .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(f"under CI the distributed run must run: {what}")
    pytest.skip(what)


def _write_nights(data: Path, config: Path) -> None:
    """The generated nights' drops (same seed: the same bytes in every data directory)."""
    data.mkdir(parents=True)
    generate(data, START, NIGHTS, 40, 11, 0.05, freeze_days=10, suspend_days=5)
    config.write_text(CONFIG)


@pytest.fixture(scope="module")
def on_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    _require_services()
    root = tmp_path_factory.mktemp("celery")
    data, config = root / "data", root / "recycle.toml"
    _write_nights(data, config)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with (
        services.postgres() as metadata,
        services.redis(root) as broker,
        airflow_cluster(
            Endpoints(metadata, broker, services.free_port(), config, data), root / "airflow"
        ) as c,
    ):
        timings["start"] = time.monotonic() - t0
        outcome = Outcome(data, {}, {}, {}, timings)
        for i in range(NIGHTS):  # one after another: each night builds on the last
            t = time.monotonic()
            run_id = trigger_night(c, START + dt.timedelta(days=i), RUN_CONF)
            outcome.states[run_id] = wait_for_run(c, run_id)
            outcome.tasks[run_id] = task_instances(c, run_id)
            outcome.reports[run_id] = run_report(c, run_id)
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


def test_the_outcome_equals_the_embedded_run(on_cluster: Outcome, tmp_path: Path) -> None:
    data = run_embedded(tmp_path, keys_from=on_cluster.data)
    assert outcome_differences(on_cluster.data, data) == []


def run_embedded(root: Path, keys_from: Path) -> Path:
    """The same nights in this process (``run_day``, what `recycle run` does) into ``root/data``,
    with the keys of the data directory ``keys_from``."""
    data, config = root / "data", root / "recycle.toml"
    _write_nights(data, config)
    _share_keys(keys_from, data)
    settings = load_settings(config, env={"RECYCLE_DATA_DIR": str(data)})
    for i in range(NIGHTS):
        run_day(settings, START + dt.timedelta(days=i), RunContext(**RUN_CONF))
    return data


def _share_keys(source: Path, target: Path) -> None:
    """The development keys the cluster generated at first use, for the embedded run too: the
    state's contact columns are sealed with the vault's keys, the feed root is signed. Not the
    signer's record of what it signed (``*.checkpoints.json``): that belongs to one ledger."""
    shutil.copytree(
        Layout(source).keys_dir, Layout(target).keys_dir, ignore=shutil.ignore_patterns("*.checkpoints.json*")
    )


def outcome_differences(a: Path, b: Path) -> list[str]:
    """What differs between two data directories' outcomes; empty: equivalent.

    The feeds' data files byte for byte, the ledger's size and the state's tables. Not the
    ledger's bytes: every entry is a hiding commitment with fresh randomness (``Ledger.append``),
    so two runs of the same nights sign different trees, and the feed manifests and the
    timestamp carry that tree's checkpoint."""
    found = [f"feeds/{name}" for name in _diff(_feed_data(a), _feed_data(b))]
    sizes = [_ledger_size(a), _ledger_size(b)]
    if sizes[0] != sizes[1]:
        found.append(f"ledger size {sizes[0]} != {sizes[1]}")
    return found + [f"state table {t}" for t in _diff(_state_digest(a), _state_digest(b))]


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _feed_data(data: Path) -> dict[str, str]:
    """The feeds' data files (rows for platforms: csv and parquet), by content."""
    feeds = data / "feeds"
    return {
        str(p.relative_to(feeds)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(feeds.rglob("*"))
        if p.suffix in (".csv", ".parquet")
    }


def _ledger_size(data: Path) -> int:
    """The tree size the ledger's checkpoint signs (C2SP tlog-checkpoint: origin, size, root)."""
    return int((data / "ledger" / "checkpoint").read_text().splitlines()[1])


def _state_digest(data: Path) -> dict[str, tuple[int, str]]:
    """Every table of the state file, by content (the file's own bytes differ run to run)."""
    con = duckdb.connect(str(Layout(data).state_db), read_only=True)
    try:
        out = {}
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            rows = con.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall()
            out[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
        return out
    finally:
        con.close()
