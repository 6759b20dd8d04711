"""The CLI tests' data: two real nights of synthetic drops (the nightly steps in-process,
loopback gateways), the second with one failed file. ``conftest.py`` builds it once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pipelines.config import Settings
from pipelines.dev.synth import generate
from pipelines.nightly.steps import RunContext, run_day

FIRST = dt.date(2026, 9, 1)
NIGHTS = (FIRST, FIRST + dt.timedelta(days=1))
# A name already ingested on the first night, sent again with other bytes: that file fails.
REUSED_NAME = f"lifecycle_{FIRST}.csv"


def build_two_nights(data: Path, *, failed_file: bool) -> Path:
    """Two clean nights in ``data`` (no early reissue: the synthetic freeze is 1 day); with
    ``failed_file`` the second night has one failed file."""
    generate(data, FIRST, len(NIGHTS), 20, 1, 0.0, freeze_days=1, suspend_days=2)
    if failed_file:
        first_file = data / "inbox" / str(FIRST) / REUSED_NAME
        (data / "inbox" / str(NIGHTS[1]) / REUSED_NAME).write_bytes(first_file.read_bytes() + b"\n")
    settings = Settings(data_dir=data)
    for night in NIGHTS:
        run_day(settings, night, RunContext(simulate_gateways=True))
    return data
