"""Great Expectations gate on a file's accepted rows: a second, independent judge of the SQL rules.

The suites live in ``schemas/gx/<kind>.json`` (GX's own serialisation). A row that a
column-level expectation rejects goes to quarantine as ``gx_failed``; an expectation about
the table as a whole (columns) cannot name rows, so its failure fails the file. GX runs on an
ephemeral context: nothing is written outside the run folder. :func:`run_gate` touches no
DuckDB connection (it is safe to run off the main thread).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.errors import DataContractError
from pipelines.ingest.spec import schema_file
from pipelines.layout import write_private

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GxOutcome:
    success: bool
    failed_rows: Mapping[int, str]  # line_no -> which expectation refused it
    validated_rows: int


@functools.cache
def suite_doc(kind: str) -> Mapping[str, Any]:
    doc: dict[str, Any] = json.loads(schema_file("gx", f"{kind}.json").read_text(encoding="utf-8"))
    return doc


def _quiet_gx_logs() -> None:
    """Keep Great Expectations to warnings and errors in our logs.

    GX sets some of its module loggers to INFO itself (``data_context.types.base`` announces a
    temporary docs folder for every ephemeral context), which would print through any handler
    the operator configured; its modules load lazily, so this runs around every validation.
    """
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (
            name.startswith("great_expectations.")
            and isinstance(logger, logging.Logger)
            and logging.NOTSET < logger.level < logging.WARNING
        ):
            logger.setLevel(logging.WARNING)


def _describe(config: Any) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k in {"column", "column_A", "column_B"}}
    where = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return f"GX {config.type}({where})"


def run_gate(
    kind: str,
    frame: pd.DataFrame,
    parameters: Mapping[str, Sequence[str]],
    result_path: Path,
    file_name: str,
    note: Mapping[str, object],
) -> GxOutcome:
    """Validate ``frame`` (index = line_no) against the kind's suite; save the result JSON.

    ``note`` (what was validated: rows, sampling) is saved with GX's own result.

    Raises DataContractError when a table-level expectation fails or one cannot run.
    """
    result = _validate(kind, frame, parameters)
    # COMPLETE results list the unexpected values (numbers, e-mails): 0600 in runs/<day>/gx/ 0700.
    write_private(
        result_path,
        json.dumps(
            {**note, "validation_result": result.to_json_dict()},  # type: ignore[no-untyped-call]  # GX leaves it unannotated
            indent=1,
            sort_keys=True,
            default=str,
        ).encode("utf-8")
        + b"\n",
    )
    failed = _failed_rows(result, kind, file_name, result_path)
    if failed:
        log.warning(
            "%s: GX refused %d row(s) the SQL rules accepted; see %s", file_name, len(failed), result_path
        )
    return GxOutcome(success=bool(result.success), failed_rows=failed, validated_rows=len(frame))


def _validate(
    kind: str, frame: pd.DataFrame, parameters: Mapping[str, Sequence[str]]
) -> ExpectationSuiteValidationResult:
    """GX's validation result of ``frame`` against the kind's suite, on an ephemeral context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx_logs()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas("ingest")
        .add_dataframe_asset(kind)
        .add_batch_definition_whole_dataframe("accepted_rows")
    )
    doc = suite_doc(kind)
    suite = context.suites.add(
        gx.ExpectationSuite(name=doc["name"], expectations=doc["expectations"], meta=doc.get("meta"))
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"ingest-{kind}", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters={k: list(v) for k, v in parameters.items()},
        result_format="COMPLETE",
    )
    _quiet_gx_logs()
    return result


def _failed_rows(
    result: ExpectationSuiteValidationResult, kind: str, file_name: str, result_path: Path
) -> dict[int, str]:
    """line_no -> the first expectation that refused it; DataContractError for a table-level failure."""
    failed: dict[int, str] = {}
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        info = item.exception_info or {}
        if info.get("raised_exception"):
            raise DataContractError(
                f"{file_name}: {_describe(config)} could not run ({info.get('exception_message')}); "
                f"check schemas/gx/{kind}.json against schemas/drops/{kind}.json"
            )
        rows = (item.result or {}).get("unexpected_index_list")
        if rows is None:
            raise DataContractError(
                f"{file_name}: {_describe(config)} failed for the file as a whole; see {result_path}"
            )
        for line_no in rows:
            failed.setdefault(int(line_no), _describe(config))
    return failed
