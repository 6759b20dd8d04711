"""The nightly run for one logical date: an ordered list of named steps.

Each step is a plain function ``(settings, day, context) -> report`` that opens what it needs
and is idempotent for its day, so ``recycle run`` (in-process) and the Airflow DAG (one task
per step) run exactly the same code. The report of every step is written to
``<data>/runs/<D>/steps/<step>.json``; the state file never holds wall-clock times, so a
rerun of a day leaves the state byte-identical.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pipelines.config import Settings
from pipelines.layout import Layout, atomic_write_bytes
from pipelines.state import open_state

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Per-run options that are not configuration (they differ between a demo and production)."""

    simulate_gateways: bool = False
    gateway_seed: int = 7
    extras: dict[str, Any] = field(default_factory=dict)


StepFn = Callable[[Settings, dt.date, RunContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Step:
    name: str
    fn: StepFn
    writes_state: bool = True  # steps that write the DuckDB file share an Airflow pool of size 1
    doc: str = ""


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dt.date | Path):
        return str(obj)
    return obj


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB transaction: everything a step writes lands together or not at all."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


# --------------------------------------------------------------------------- steps


def step_ingest(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    from pipelines.ingest import ingest_day

    with open_state(Layout(settings.data_dir).state_db) as con:
        report = ingest_day(settings, day, con)
    return {"ingest": _jsonable(report)}


STEPS: tuple[Step, ...] = (
    Step("ingest", step_ingest, doc="drop files -> accepted rows and quarantine"),
)


def step_names() -> tuple[str, ...]:
    return tuple(s.name for s in STEPS)


def get_step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(f"unknown step {name!r}; steps are {', '.join(step_names())}")


def run_step(
    settings: Settings, day: dt.date, name: str, ctx: RunContext | None = None
) -> Mapping[str, Any]:
    """Run one named step for ``day`` and record its report under the run's folder."""
    step = get_step(name)
    report = step.fn(settings, day, ctx or RunContext())
    out = Layout(settings.data_dir).run_dir(day) / "steps" / f"{name}.json"
    atomic_write_bytes(out, json.dumps(_jsonable(report), indent=2, sort_keys=True).encode() + b"\n")
    log.info("step %s for %s done", name, day)
    return report


def run_day(
    settings: Settings,
    day: dt.date,
    ctx: RunContext | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Mapping[str, Any]]:
    """Run every step for ``day`` in order, in this process."""
    ctx = ctx or RunContext()
    reports: dict[str, Mapping[str, Any]] = {}
    for step in STEPS:
        if on_step:
            on_step(step.name)
        reports[step.name] = run_step(settings, day, step.name, ctx)
    return reports
