"""The DAG folder imports cleanly and wires exactly the pipeline's steps, in order."""

from __future__ import annotations

import itertools
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

from pipelines.nightly.steps import STEPS

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dagbag_has_no_import_errors() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "number_recycling_nightly" in bag.dag_ids


def test_tasks_are_the_pipeline_steps_in_order() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    dag = bag.dags.get("number_recycling_nightly")
    assert dag is not None
    # The drops sensor and the night's preflight come before the first step.
    names = ["drops", "preflight", *(s.name for s in STEPS)]
    assert set(dag.task_ids) == set(names)
    assert dag.get_task("drops").mode == "reschedule"
    assert "empty_night" in dag.params
    for before, after in itertools.pairwise(names):
        assert after in dag.get_task(before).downstream_task_ids
    assert dag.get_task("drops").retries == dag.get_task("preflight").retries == 0  # refusals do not retry
    for step in STEPS:
        t = dag.get_task(step.name)
        assert t.pool == ("recycle_state" if step.writes_state else "default_pool")
        assert t.retries == 2
    assert dag.max_active_runs == 1
    assert dag.catchup is False
