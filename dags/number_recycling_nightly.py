"""Nightly number-recycling run: one Airflow task per pipeline step, nothing else.

The business logic lives in ``pipelines``; each task passes the logical date and reads the
settings from the environment (``RECYCLE_CONFIG`` / ``RECYCLE_DATA_DIR``). Steps that write
the DuckDB state share the pool ``recycle_state`` (size 1): DuckDB allows one writer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.nightly.steps import STEPS

STATE_POOL = "recycle_state"


def _logical_day(context: dict[str, Any]) -> dt.date:
    forced = context["params"].get("date")
    if forced:
        try:
            return dt.date.fromisoformat(forced)
        except ValueError:
            raise AirflowFailException(
                f"params.date {forced!r} is not a date: trigger again with params.date=YYYY-MM-DD"
            ) from None
    logical = context.get("logical_date")
    if logical is None:
        raise AirflowFailException("no logical date: trigger with one, or with params.date=YYYY-MM-DD")
    return logical.date()


def _run(step_name: str, **context: Any) -> dict[str, Any]:
    from pipelines.config import load_settings
    from pipelines.errors import TerminalError
    from pipelines.nightly.steps import RunContext, run_step

    day = _logical_day(context)
    ctx = RunContext(
        simulate_gateways=bool(context["params"].get("simulate_gateways")),
        alerts_mode=context["params"].get("alerts_mode") or "raise",
    )
    try:
        run_step(load_settings(), day, step_name, ctx)
    except TerminalError as exc:
        # Retrying cannot fix bad data, a bad signature or a compliance stop: fail now.
        raise AirflowFailException(exc.diagnostics()) from exc
    return {"date": day.isoformat(), "step": step_name}


@dag(
    dag_id="number_recycling_nightly",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    params={
        "simulate_gateways": Param(False, type="boolean"),
        "date": Param(None, type=["null", "string"], format="date"),
        # "record": log compliance alerts instead of failing the night (backfills, demos)
        "alerts_mode": Param("raise", enum=["raise", "record"]),
    },
    tags=["number-recycling"],
    doc_md=__doc__,
)
def number_recycling_nightly() -> None:
    previous = None
    for step in STEPS:
        current = task(
            task_id=step.name,
            pool=STATE_POOL if step.writes_state else "default_pool",
            doc_md=step.doc,
        )(_run)(step.name)
        if previous is not None:
            previous >> current
        previous = current


nightly_dag = number_recycling_nightly()
