"""Nightly number-recycling run: a sensor for the night's drops, its preflight, then one Airflow
task per pipeline step, nothing else.

The business logic lives in ``pipelines``; each task passes the logical date and reads the
settings from the environment (``RECYCLE_CONFIG`` / ``RECYCLE_DATA_DIR``). Steps that write
the DuckDB state share the pool ``recycle_state`` (size 1): DuckDB allows one writer.
``drops`` waits (reschedule mode: no worker slot held) for the night's carrier day to end and
its lifecycle/reissue drops (``pipelines.nightly.preflight``); ``preflight`` checks the night
again and records its grounds; a refused night writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from pipelines.config import load_settings
from pipelines.nightly.steps import STEPS, Step

STATE_POOL = "recycle_state"
# Read when the DAG is parsed: a sensor's timing is fixed then (drops_wait_minutes in the config).
_SETTINGS = load_settings()


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
    return _SETTINGS.night_of(logical)


def _run(step_name: str, province: str | None = None, **context: Any) -> dict[str, Any]:
    from pipelines.errors import TerminalError
    from pipelines.nightly.steps import RunContext, run_step

    day = _logical_day(context)
    ctx = RunContext(
        simulate_gateways=bool(context["params"].get("simulate_gateways")),
        alerts_mode=context["params"].get("alerts_mode") or "raise",
    )
    try:
        run_step(load_settings(), day, step_name, ctx, province)
    except TerminalError as exc:
        # Retrying cannot fix bad data, a bad signature or a compliance stop: fail now.
        raise AirflowFailException(exc.diagnostics()) from exc
    return {"date": day.isoformat(), "step": step_name, "province": province}


@task.sensor(
    task_id="drops",
    poke_interval=_SETTINGS.drops_poke_seconds,
    timeout=_SETTINGS.drops_wait_minutes * 60,
    mode="reschedule",
    retries=0,
)
def _wait_for_drops(**context: Any) -> bool:
    """True once the night may run; a refusal waiting cannot fix fails at once."""
    import logging

    from pipelines.errors import NightRefusedError
    from pipelines.nightly.preflight import waiting_for

    day = _logical_day(context)
    try:
        reason = waiting_for(
            load_settings(),
            day,
            now=dt.datetime.now(dt.UTC),
            empty_night=bool(context["params"]["empty_night"]),
        )
    except NightRefusedError as exc:
        raise AirflowFailException(exc.diagnostics()) from exc
    if reason:
        logging.getLogger(__name__).warning("waiting: %s", reason)
    return reason is None


@task(task_id="preflight", retries=0)
def _preflight(**context: Any) -> dict[str, Any]:
    """Check the night again (time passed since the sensor) and record its grounds."""
    from pipelines.errors import NightRefusedError
    from pipelines.nightly import preflight

    settings, day = load_settings(), _logical_day(context)
    try:
        check = preflight.check_night(
            settings, day, now=dt.datetime.now(dt.UTC), empty_night=bool(context["params"]["empty_night"])
        )
    except NightRefusedError as exc:
        raise AirflowFailException(exc.diagnostics()) from exc
    preflight.record_check(settings, check)
    return {"date": day.isoformat(), "replay": check.replay, "waived_drops": list(check.waived_drops)}


@dag(
    dag_id="number_recycling_nightly",
    # Logical date D = the start of the interval [D, D+1) of the carrier's day (its time zone,
    # Settings.timezone); the run starts when that day ends. With Airflow 3's default cron
    # timetable the run for D would start at D 00:00, before D's drops exist.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=_SETTINGS.timezone),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    params={
        "simulate_gateways": Param(False, type="boolean"),
        "date": Param(None, type=["null", "string"], format="date"),
        # "record": log compliance alerts instead of failing the night (backfills, demos)
        "alerts_mode": Param("raise", enum=["raise", "record"]),
        # true: run without a lifecycle/reissue drop, on purpose (recorded in runs/<D>/preflight.json)
        "empty_night": Param(False, type="boolean"),
    },
    tags=["number-recycling"],
    doc_md=__doc__,
)
def number_recycling_nightly() -> None:
    previous: Any = _wait_for_drops() >> _preflight()
    for steps in _runs_of_scope(STEPS):
        if _SETTINGS.provinces and steps[0].scope == "province":
            # One mapped group per run of province steps: province i's next step waits for its
            # own previous one only, so provinces move through the night independently.
            current = _province_group(steps).expand(province=sorted(_SETTINGS.provinces))
            previous >> current
            previous = current
            continue
        for step in steps:
            current = task(
                task_id=step.name,
                pool=STATE_POOL if step.writes_state else "default_pool",
                doc_md=step.doc,
            )(_run)(step.name)
            previous >> current
            previous = current


def _runs_of_scope(steps: Sequence[Step]) -> list[list[Step]]:
    """STEPS cut where the scope changes: [ingest..send], [ledger..push], [contacts, alerts]."""
    runs: list[list[Step]] = []
    for step in steps:
        if runs and runs[-1][-1].scope == step.scope:
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def _province_group(steps: list[Step]) -> Any:
    """A task group of ``steps`` for one province, to be expanded over the provinces. Each
    province has its own state file, so the group's tasks need no shared pool: provinces run
    at once, on as many workers as there are."""
    group_id = "provinces_" + steps[0].name

    @task_group(group_id=group_id)
    def province_steps(province: str) -> None:
        previous = None
        for step in steps:
            current = task(task_id=step.name, doc_md=step.doc)(_run)(step.name, province)
            if previous is not None:
                previous >> current
            previous = current

    return province_steps


nightly_dag = number_recycling_nightly()
