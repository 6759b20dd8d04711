"""Test-wide setup. Airflow reads AIRFLOW_HOME when first imported, so it is set here, first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="recycle-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parent.parent / "dags")
# Tests must not pick up an operator's configuration (RECYCLE_MOTO_SERVER is the tests' own:
# where the S3 test server's binary is, tests/storage_testkit.py).
for _name in [n for n in os.environ if n.startswith("RECYCLE_") and n != "RECYCLE_MOTO_SERVER"]:
    del os.environ[_name]


import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite Airflow metadata database (once per test session), as `make demo` uses."""
    airflow = Path(sys.executable).with_name("airflow")
    log = _AIRFLOW_HOME / "migrate.log"
    with open(log, "wb") as fh:
        subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=fh, stderr=fh)
    return _AIRFLOW_HOME
