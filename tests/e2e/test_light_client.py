"""The light client alone: ``pip install clients/python`` into a fresh venv (its dependencies
from the package index, nothing of the carrier's), ``nrc --help``, then a pull and a check
against a real server on loopback (the fixtures of ``test_client_pull``), with no DuckDB,
pyarrow or Airflow importable in that venv."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from .test_client_pull import Setup, at, setup, template  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("lc") / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    got = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(REPO / "clients" / "python")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert got.returncode == 0, got.stdout + got.stderr
    return env_dir


def _run(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"NRC_TOKEN": os.environ.get("_T", "")}
    return subprocess.run(args, capture_output=True, text=True, check=False, env=env, cwd=env_dir)


@pytest.mark.slow
def test_the_light_client_installs_alone_pulls_and_checks(light_venv: Path, setup: Setup) -> None:  # noqa: F811
    py, nrc = str(light_venv / "bin" / "python"), str(light_venv / "bin" / "nrc")
    for heavy in ("duckdb", "pyarrow", "airflow", "pipelines", "numpy"):
        assert _run(light_venv, py, "-c", f"import {heavy}").returncode != 0, f"{heavy} is importable"
    helped = _run(light_venv, nrc, "--help")
    assert helped.returncode == 0 and "pull" in helped.stdout and "subscriptions" in helped.stdout

    # The pull with the test's clock (the fixture's feed days are not today's); the CLI's own
    # pull is the same call with the real clock.
    now = at(4)().isoformat()
    code = (
        "import datetime as dt, sys; from pathlib import Path; from number_recycling_client import pull; "
        f"r = pull({setup.url!r}, {setup.token!r}, Path({str(setup.state)!r}), Path({str(setup.pinned)!r}), "
        f"clock=lambda: dt.datetime.fromisoformat({now!r})); print(r.to_seq, r.rows)"
    )
    setup.carrier.publish(3, 4)
    pulled = _run(light_venv, py, "-c", code)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.split() == ["4", "9"]

    yes = _run(
        light_venv,
        nrc,
        "check",
        "+8613800000101",
        "--since",
        "2026-07-01",
        "--state",
        str(setup.state),
        "--json",
    )
    assert yes.returncode == 0, yes.stderr
    answer = json.loads(yes.stdout)
    assert answer["recycled"] and answer["row"]["event"] == "released" and "msisdn" not in answer["row"]
    no = _run(
        light_venv, nrc, "check", "+8613999999999", "--since", "2026-01-01", "--state", str(setup.state)
    )
    assert (no.returncode, no.stdout.strip()) == (0, "no")

    # an error is one line naming the next command, never a traceback, never the number in full
    empty = _run(
        light_venv,
        nrc,
        "check",
        "+8613800000101",
        "--since",
        "2026-07-01",
        "--state",
        str(light_venv / "none"),
    )
    assert empty.returncode == 2 and "nrc pull" in empty.stderr and "Traceback" not in empty.stderr
    assert "13800000101" not in empty.stderr
