"""`make ui` on a demo-like Airflow home: two nights run as the demo runs them (``dag.test()``),
then ``infra/airflow-ui.sh`` (what `make ui` calls) on loopback; the REST API lists the DAG
unpaused, exactly the demo's runs (no night of its own) and a task's log; everything stops."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START = dt.date(2026, 9, 1)
NIGHTS = 2
DAG_ID = "number_recycling_nightly"
DEMO_NIGHTS = f"""\
import datetime as dt, sys
from pathlib import Path
from pipelines.dev import demo
from pipelines.dev.synth import generate
data = Path(sys.argv[1])
demo._fresh_data_dir(data)
start = dt.date.fromisoformat(sys.argv[2])
generate(data, start, {NIGHTS}, 30, 7, 0.02, freeze_days=10, suspend_days=5)
sys.exit(demo._run_nights(data, start, {NIGHTS}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """This session's Airflow settings (conftest) must not leak into the demo's or the UI's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECYCLE_"))}


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("ui") / "demo"
    done = subprocess.run(
        [sys.executable, "-c", DEMO_NIGHTS, str(data), START.isoformat()],
        cwd=REPO,
        env={**_clean_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return data


@pytest.fixture(scope="module")
def ui(demo_home: Path) -> Iterator[dict[str, Any]]:
    port = _free_port()
    out = demo_home / "ui.out"
    env = {
        **_clean_env(),
        "VENV_BIN": str(Path(sys.executable).parent),
        "UI_PORT": str(port),
        "UI_LOG_PORT": str(_free_port()),
    }
    with open(out, "wb") as fh:
        # its own session: the whole process group (script, components, workers) is stopped below
        proc = subprocess.Popen(
            ["bash", str(REPO / "infra" / "airflow-ui.sh"), str(demo_home)],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_api(url, proc, out)
        yield {"url": url, "out": out, "proc": proc}
    finally:
        _stop_group(proc)


def _wait_for_api(url: str, proc: subprocess.Popen[bytes], out: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the UI script exited: {out.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/api/v2/version", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"the API did not answer within 240s: {out.read_text()[-3000:]}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group we started, bounded waits, SIGKILL for what is left; none survives."""
    pgid = proc.pid
    with_signal = signal.SIGTERM
    for wait_s in (60, 10):
        try:
            os.killpg(pgid, with_signal)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)
        with_signal = signal.SIGKILL
    pytest.fail("processes of the UI were still running after SIGKILL")


def _headers(ui: dict[str, Any]) -> dict[str, str]:
    shown = re.search(r"user admin\s+password (\S+)", ui["out"].read_text())
    assert shown, "the admin password is printed"
    answer = httpx.post(
        f"{ui['url']}/auth/token", json={"username": "admin", "password": shown.group(1)}, timeout=30
    )
    assert answer.status_code in (200, 201), answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_the_api_lists_the_demo_dag_unpaused(ui: dict[str, Any]) -> None:
    dags = httpx.get(f"{ui['url']}/api/v2/dags", headers=_headers(ui), timeout=30).json()["dags"]
    ours = [d for d in dags if d["dag_id"] == DAG_ID]
    assert len(ours) == 1 and ours[0]["is_paused"] is False


def test_the_api_lists_the_demo_nights_and_no_night_of_its_own(ui: dict[str, Any]) -> None:
    time.sleep(10)  # a few scheduler loops after unpausing: it must create no run
    runs = httpx.get(f"{ui['url']}/api/v2/dags/{DAG_ID}/dagRuns", headers=_headers(ui), timeout=30).json()[
        "dag_runs"
    ]
    days = sorted(r["logical_date"][:10] for r in runs)
    assert days == [(START + dt.timedelta(days=i)).isoformat() for i in range(NIGHTS)]
    assert {r["state"] for r in runs} == {"success"}


def test_a_demo_task_log_is_served(ui: dict[str, Any]) -> None:
    headers = _headers(ui)
    runs = httpx.get(f"{ui['url']}/api/v2/dags/{DAG_ID}/dagRuns", headers=headers, timeout=30).json()
    run = next(r for r in runs["dag_runs"] if r["logical_date"].startswith(START.isoformat()))
    run_id = urllib.parse.quote(run["dag_run_id"], safe="")
    log = httpx.get(
        f"{ui['url']}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/ingest/logs/1",
        headers=headers,
        timeout=30,
    )
    assert log.status_code == 200, log.text
    events = [str(e.get("event", "")) for e in log.json()["content"]]
    # the pipeline's own line for the night's lifecycle file, not "not found on worker"
    assert any(e.startswith(f"ingest {START} lifecycle_") for e in events), events[:20]
