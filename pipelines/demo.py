"""`make demo`: a few weeks of synthetic drops, run night by night through the Airflow DAG.

Time is compressed (a 10-day freeze instead of 90) so whole lives — cancel, reminders,
release, reissue — fit into a few minutes. Everything runs on the embedded default:
DuckDB state, files under the data directory, Airflow with SQLite metadata.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()

DEMO_CONFIG = """\
# Demo policy: time compressed ~9x so a few weeks show whole lives. Production uses 60-90 days.
data_dir = "{data_dir}"
default_region = "CN"

[policy.default]
freeze_days = 10
suspend_days = 5
reminder_offsets = [0, 4, -3]
min_effective_reminders = 2
max_hold_days = 4
"""


@contextlib.contextmanager
def _quiet(log_path: Path) -> Iterator[None]:
    """Send Airflow's own chatter (it writes to fds 1 and 2) to a log file while a run executes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def prepare_airflow(airflow_home: Path, dags_folder: Path) -> dict[str, str]:
    """Environment for an embedded Airflow (SQLite metadata) and its migrated database."""
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    os.environ.update(env)
    airflow = Path(sys.executable).with_name("airflow")
    log = airflow_home / "setup.log"
    airflow_home.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=fh, stderr=fh, env=os.environ)
        subprocess.run(
            [str(airflow), "pools", "set", "recycle_state", "1", "DuckDB state: one writer"],
            check=True, stdout=fh, stderr=fh, env=os.environ,
        )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("var/demo"))
    parser.add_argument("--start", default="2026-09-01")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=120)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    data: Path = args.data.resolve()
    start = dt.date.fromisoformat(args.start)
    if data.exists():
        shutil.rmtree(data)  # the demo always starts from an empty embedded default
    data.mkdir(parents=True)
    config = data / "recycle.toml"
    config.write_text(DEMO_CONFIG.format(data_dir=data), encoding="utf-8")
    os.environ["RECYCLE_CONFIG"] = str(config)
    os.environ.pop("RECYCLE_DATA_DIR", None)

    t0 = time.monotonic()
    from pipelines.synth import generate

    console.rule("[bold]1. synthetic drops")
    summary = generate(
        data, start, args.days, args.rows_per_day, args.seed, 0.02, freeze_days=10, suspend_days=5
    )
    console.print(f"{summary}")

    console.rule("[bold]2. Airflow (SQLite metadata) and the nightly DAG")
    repo = Path(__file__).resolve().parent.parent
    prepare_airflow(data / "airflow", repo / "dags")
    sys.path.insert(0, str(repo / "dags"))
    with _quiet(data / "airflow" / "dag-test.log"):
        from number_recycling_nightly import nightly_dag  # type: ignore[import-not-found]

        dag = nightly_dag
    failures = 0
    for i in range(args.days):
        day = start + dt.timedelta(days=i)
        t = time.monotonic()
        with _quiet(data / "airflow" / "dag-test.log"):
            run = dag.test(
                logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC),
                run_conf={"simulate_gateways": True},
            )
        state = str(getattr(run, "state", "?"))
        failures += state != "success"
        console.print(f"  {day}  dag run {state:8}  {time.monotonic() - t:5.1f}s")

    console.rule("[bold]3. summary")
    from pipelines.config import load_settings

    settings = load_settings(config)
    print_summary(settings, start, args.days)
    console.print(f"\ndemo finished in {time.monotonic() - t0:.0f}s; data in {data}")
    console.print(f"Airflow logs: {data / 'airflow' / 'dag-test.log'}")
    return 1 if failures else 0


def print_summary(settings: object, start: dt.date, days: int) -> None:
    from pipelines.config import Settings
    from pipelines.status import day_status

    assert isinstance(settings, Settings)
    table = Table(title="ingest per night")
    for col in ("date", "outcome", "files", "rows in", "accepted", "quarantined"):
        table.add_column(col, justify="right")
    last: dict[str, object] = {}
    for i in range(days):
        day = start + dt.timedelta(days=i)
        st = day_status(settings, day)
        last = st
        files = st["files"]
        table.add_row(
            day.isoformat(), st["outcome"], str(len(files)),
            str(sum(f["rows_in"] for f in files)), str(sum(f["accepted"] for f in files)),
            str(sum(f["quarantined"] for f in files)),
        )
    console.print(table)
    if "lifecycle" in last:
        console.print(last["lifecycle"])


if __name__ == "__main__":
    raise SystemExit(main())
