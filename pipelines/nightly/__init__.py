"""The night for one logical date: ``STEPS``, the ordered list of named steps that the CLI,
the Airflow DAG and the DAG test all run, the typed ``RunContext`` and the per-date status
for operators.
"""

from pipelines.nightly.steps import STEPS, RunContext, Step, run_day, run_step

__all__ = [
    "STEPS",
    "RunContext",
    "Step",
    "run_day",
    "run_step",
]
