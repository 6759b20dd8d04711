"""Airflow as a carrier runs it, on one machine: scheduler, dag-processor, api-server and two
Celery workers as separate processes, PostgreSQL metadata, a Redis broker.

:func:`cluster_env` is the one place that names the configuration every process gets; the
deployment files (``infra/compose.yaml``, ``infra/helm/values.yaml``) carry the same keys
(``test_deployment_files`` checks them), except the few :data:`CI_ONLY` ones.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import worker_name
from .services import LOOPBACK, Postgres, S3Server, ServiceError, stop_group, tail

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "number_recycling_nightly"
STATE_POOL = "recycle_state"  # dags/number_recycling_nightly.py: DuckDB allows one writer
WORKERS = ("worker-1", "worker-2")
WORKER_CONCURRENCY = 2  # two cores here; the state pool lets one writer run at a time anyway
# Bounded waits. Measured on this 2-core machine: `airflow db migrate` on an empty PostgreSQL
# database ~25 s, api-server answering ~15 s after start, the DAG parsed ~10 s later.
MIGRATE_TIMEOUT_S = 300.0
START_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 300.0

# Keys the CI cluster sets that a deployment must not copy, each with why.
CI_ONLY: Mapping[str, str] = {
    # The CI triggers each night itself; a scheduled run of "yesterday" would wait for drops
    # that never come and, with max_active_runs=1, block the triggered ones.
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    # Loopback only, no login: the test talks to the REST API without a password.
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    # Two cores: one api-server worker and one parsing process (the defaults fork 4 and 2).
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    # Not on EC2: the S3 SDK must not wait for the instance-metadata service to time out.
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class Endpoints:
    """Where the cluster's services listen and its files are (all on this machine)."""

    metadata: Postgres
    broker_url: str
    api_port: int
    config: Path  # the recycle.toml every task reads (RECYCLE_CONFIG)
    data_dir: Path  # shared by all workers: the DuckDB state files, runs, keys (RECYCLE_DATA_DIR)
    s3: S3Server  # the object store: drops in, ledger/feeds/snapshots out
    storage: str  # s3://bucket/prefix (RECYCLE_STORAGE)
    provinces: tuple[str, ...] = ()  # empty: one state for all (RECYCLE_PROVINCES)


@dataclass(frozen=True)
class ClusterSecrets:
    """Shared by every component: the scheduler signs task tokens the api-server checks."""

    fernet_key: str = field(default_factory=lambda: _fernet_key())
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


# Keys whose values are secrets: the deployment files refer to them (a variable, a Kubernetes
# Secret), never spell them out.
SECRET_KEYS = frozenset(
    {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
)


def cluster_env(ep: Endpoints, keys: ClusterSecrets) -> dict[str, str]:
    """Every configuration key the cluster's processes get (AIRFLOW__*, RECYCLE_*, AWS_*)."""
    api = f"http://{LOOPBACK}:{ep.api_port}"
    deployment = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": ep.metadata.url("postgresql+psycopg2"),
        "AIRFLOW__CELERY__BROKER_URL": ep.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": ep.metadata.url("db+postgresql+psycopg2"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "AIRFLOW__CORE__FERNET_KEY": keys.fernet_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": keys.jwt_secret,
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "RECYCLE_CONFIG": str(ep.config),
        "RECYCLE_DATA_DIR": str(ep.data_dir),
        "RECYCLE_PROVINCES": ",".join(ep.provinces),  # the DAG maps the province steps over them
        "RECYCLE_STORAGE": ep.storage,
        "RECYCLE_S3_ENDPOINT_URL": ep.s3.endpoint,
        "RECYCLE_S3_REGION": ep.s3.region,
        "RECYCLE_S3_ALLOW_HTTP": "true",  # a loopback server; a deployment says false or omits it
        "AWS_ACCESS_KEY_ID": ep.s3.key_id,
        "AWS_SECRET_ACCESS_KEY": ep.s3.secret,
    }
    return deployment | dict(CI_ONLY)


def process_env(config: Mapping[str, str], airflow_home: Path, worker: str | None = None) -> dict[str, str]:
    """A component's whole environment: this machine's basics, none of the test session's
    Airflow or RECYCLE_ settings, then ``config``. Not configuration: where things are here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECYCLE_", "AWS_"))}
    env |= {
        "AIRFLOW_HOME": str(airflow_home),
        # Airflow starts its children by name: the venv's bin first on PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        # The checkout under test, also when the venv's editable install points elsewhere.
        "PYTHONPATH": os.pathsep.join(
            [str(REPO), str(REPO / "clients" / "python" / "src"), *filter(None, [env.get("PYTHONPATH")])]
        ),
        **config,
    }
    if worker:
        env[worker_name.ENV] = worker
        # By its path from the repository (on the processes' PYTHONPATH), not this module's
        # __name__: pytest imports tests/distributed as the package `distributed`.
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "tests.distributed.worker_name.from_env"
    return env


@dataclass
class Cluster:
    home: Path
    api: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def component_log(self, name: str) -> Path:
        return self.home / "components" / f"{name}.log"

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ServiceError(
                    f"airflow {name} exited ({proc.returncode}):\n{tail(self.component_log(name))}"
                )


def _commands(api_port: int) -> dict[str, list[str]]:
    worker = ["airflow", "celery", "worker", "--concurrency", str(WORKER_CONCURRENCY)]
    return {
        "api-server": ["airflow", "api-server", "--host", LOOPBACK, "--port", str(api_port)],
        "scheduler": ["airflow", "scheduler"],
        "dag-processor": ["airflow", "dag-processor"],
        # --skip-serve-logs: both workers share this machine's AIRFLOW_HOME/logs, which the
        # api-server reads directly; two log servers would also fight over port 8793.
        **{name: [*worker, "--celery-hostname", f"{name}@%h", "--skip-serve-logs"] for name in WORKERS},
    }


@contextlib.contextmanager
def airflow_cluster(ep: Endpoints, home: Path) -> Iterator[Cluster]:
    """Migrate the metadata database, start every component, wait until the DAG is parsed and
    unpaused and both workers are ready; stop them all (process groups) when done."""
    config = cluster_env(ep, ClusterSecrets())
    cluster = Cluster(home, f"http://{LOOPBACK}:{ep.api_port}", process_env(config, home))
    (home / "components").mkdir(parents=True, exist_ok=True)
    _airflow(cluster, "db", "migrate", timeout_s=MIGRATE_TIMEOUT_S)
    try:
        for name, argv in _commands(ep.api_port).items():
            env = process_env(config, home, worker=name if name in WORKERS else None)
            with open(cluster.component_log(name), "wb") as out:
                cluster.procs[name] = subprocess.Popen(
                    argv, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        _wait_ready(cluster)
        yield cluster
    finally:
        stuck = [stop_group(p, f"airflow {n}", grace_s=30) for n, p in cluster.procs.items()]
        if any(stuck):
            raise ServiceError("; ".join(s for s in stuck if s))


def _airflow(cluster: Cluster, *args: str, timeout_s: float) -> None:
    log = cluster.component_log(args[0])
    with open(log, "ab") as out:
        done = subprocess.run(
            ["airflow", *args], env=cluster.env, cwd=cluster.home, stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout_s, check=False,
        )  # fmt: skip
    if done.returncode:
        raise ServiceError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{tail(log)}")


def _wait_ready(cluster: Cluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S

    def until(what: str, ready: Any) -> None:
        while not ready():
            cluster.check_alive()
            if time.monotonic() > deadline:
                raise ServiceError(f"{what} not within {START_TIMEOUT_S:.0f}s of the start")
            time.sleep(0.5)

    until("the api-server answering", lambda: _get(cluster, "/api/v2/version") is not None)
    until(f"the DAG {DAG_ID} parsed", lambda: _get(cluster, f"/api/v2/dags/{DAG_ID}") is not None)
    api(
        cluster,
        "POST",
        "/api/v2/pools",
        {"name": STATE_POOL, "slots": 1, "description": "DuckDB: one writer"},
    )
    api(cluster, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    for name in WORKERS:  # Celery prints "celery@<hostname> ready." once it consumes the queue
        until(f"Celery {name} ready", lambda n=name: " ready." in tail(cluster.component_log(n), 100_000))


def _get(cluster: Cluster, path: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(cluster.api + path, timeout=5)
    except httpx.TransportError:
        return None
    return answer.json() if answer.status_code == 200 else None


def api(cluster: Cluster, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A REST call that must succeed (loopback, all admins: no token)."""
    answer = httpx.request(method, cluster.api + path, json=body, timeout=30)
    if answer.status_code not in (200, 201):
        raise ServiceError(f"{method} {path} -> {answer.status_code}: {answer.text[:2000]}")
    result: dict[str, Any] = answer.json()
    return result


def trigger_night(cluster: Cluster, day: dt.date, conf: Mapping[str, Any]) -> str:
    """Trigger the nightly DAG for ``day`` (logical date = its midnight, UTC); the run's id."""
    run_id = f"night-{day.isoformat()}"
    logical = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).isoformat()
    body = {"dag_run_id": run_id, "logical_date": logical, "conf": dict(conf)}
    api(cluster, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", body)
    return run_id


def wait_for_run(cluster: Cluster, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """The run's final state (success or failed), or ServiceError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = str(api(cluster, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"])
        if state in ("success", "failed"):
            return state
        cluster.check_alive()
        time.sleep(1)
    raise ServiceError(f"run {run_id} did not finish within {timeout_s:.0f}s:\n{run_report(cluster, run_id)}")


def task_instances(cluster: Cluster, run_id: str) -> list[dict[str, Any]]:
    answer = api(cluster, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")
    return list(answer["task_instances"])


def run_report(cluster: Cluster, run_id: str) -> str:
    """What CI prints when a run went wrong: every task's state and host, the log of each task
    that did not succeed (from AIRFLOW_HOME/logs), and the scheduler's last lines."""
    lines, failing = [], []
    for ti in task_instances(cluster, run_id):
        name = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
        lines.append(f"  {name:<32} {ti['state']!s:<16} try {ti['try_number']} on {ti['hostname']}")
        if ti["state"] != "success":
            failing.append((ti["task_id"], ti["map_index"]))
    for task_id, map_index in failing:
        task_logs = cluster.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            task_logs /= f"map_index={map_index}"
        for log in sorted(task_logs.glob("attempt=*.log")):
            lines.append(f"--- {log.relative_to(cluster.home)}\n{tail(log, 6000)}")
    lines.append(f"--- scheduler (last lines)\n{tail(cluster.component_log('scheduler'), 3000)}")
    return "\n".join(lines)
