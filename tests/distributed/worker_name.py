"""``[core] hostname_callable`` for the CI cluster's Celery workers.

Both workers run on one machine, so Airflow's default (the machine's FQDN) would record the same
hostname on every task instance and the test could not tell that both workers ran tasks. In a
deployment each worker is its own container or pod with its own hostname: nothing to set there.
"""

from __future__ import annotations

import os

ENV = "RECYCLE_CI_WORKER_NAME"


def from_env() -> str:
    return os.environ[ENV]
