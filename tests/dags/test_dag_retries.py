"""Terminal errors fail a task at once (AirflowFailException: no retry); transient ones retry."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

import pipelines.nightly.steps as steps
from pipelines import errors

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "number_recycling_nightly.py"
DAY = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def dag_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("number_recycling_nightly_retries", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_subclasses(cls: type[Exception]) -> list[type[Exception]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def _failing_step(exc: Exception) -> Any:
    def run_step(*_args: Any, **_kwargs: Any) -> Any:
        raise exc

    return run_step


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECYCLE_DATA_DIR", str(tmp_path))


@pytest.mark.parametrize("kind", [errors.TerminalError, *_all_subclasses(errors.TerminalError)])
def test_every_terminal_error_fails_the_task_without_retry(
    kind: type[Exception], dag_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(steps, "run_step", _failing_step(kind("night 2026-09-01: a person has to act")))
    with pytest.raises(AirflowFailException, match="a person has to act"):
        dag_module._run("alerts", params={}, logical_date=DAY)


def test_a_compliance_violation_is_terminal() -> None:
    assert issubclass(errors.ComplianceViolationError, errors.TerminalError)


@pytest.mark.parametrize("kind", [errors.TransientError, errors.GatewayError, OSError])
def test_a_transient_error_is_left_to_airflow_retries(
    kind: type[Exception], dag_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(steps, "run_step", _failing_step(kind("gateway down")))
    with pytest.raises(kind) as raised:
        dag_module._run("send", params={}, logical_date=DAY)
    assert not isinstance(raised.value, AirflowFailException)
    assert dag_module.nightly_dag.get_task("send").retries == 2


def test_a_malformed_date_param_fails_without_retry(dag_module: ModuleType) -> None:
    with pytest.raises(AirflowFailException, match=r"params\.date"):
        dag_module._run("ingest", params={"date": "2026-13-45"}, logical_date=DAY)


def test_airflow_runs_a_compliance_stop_once(
    dag_module: ModuleType, monkeypatch: pytest.MonkeyPatch, airflow_db: Path
) -> None:
    """A real run (``dag.test()``): the first task fails on its first try and nothing retries."""
    violation = errors.ComplianceViolationError("night 2026-09-01: 1 reissue broke the release gate")
    monkeypatch.setattr(steps, "run_step", _failing_step(violation))
    for task in dag_module.nightly_dag.tasks:  # were it retried, retry now rather than in 5 minutes
        monkeypatch.setattr(task, "retry_delay", dt.timedelta(0))
    # An empty data directory: the night runs empty on purpose, so the drops sensor lets it start.
    run = dag_module.nightly_dag.test(
        logical_date=DAY, run_conf={"simulate_gateways": True, "empty_night": True}
    )
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert (str(tis["drops"].state), str(tis["preflight"].state)) == ("success", "success")
    first = tis[steps.STEPS[0].name]
    assert (str(first.state), first.try_number) == ("failed", 1)
    assert {str(tis[s.name].state) for s in steps.STEPS[1:]} == {"upstream_failed"}
