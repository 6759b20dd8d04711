"""CSV cells no spreadsheet runs: the one rule (OWASP "CSV Injection") for every CSV we write for people.

A spreadsheet opening a CSV runs a cell that starts with ``=``, ``+``, ``-``, ``@``, TAB or CR as
a formula (``=cmd|' /C calc'!A0``, ``=HYPERLINK(...)``). OWASP's rule: prefix such a cell with a
single quote (shown, never run) and quote the cell. Files written for people apply it to every
text cell: the print house's letters (:mod:`pipelines.reminders.channels`) and the compliance
report's CSVs (:mod:`pipelines.compliance.report`). Files written for machines do not: a
regulator's or a platform's parser would read the ``'`` as part of the value (the FCC RND and
CN renewal exports, the daily feed); their columns are typed and validated values (digits,
dates, codes), never free text, and their writers say so where they write.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# A cell starting with one of these is a formula to a spreadsheet.
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_START = "^[=+\\-@\t\r]"


def csv_safe_cell(value: str) -> str:
    """``value`` as a CSV cell no spreadsheet runs: a leading formula character gets a ``'``.

    Idempotent: a neutralised cell starts with ``'``, so a file rewritten keeps its bytes."""
    return "'" + value if value.startswith(CSV_FORMULA_PREFIXES) else value


def csv_safe_table(table: pa.Table) -> pa.Table:
    """``table`` with :func:`csv_safe_cell` applied to every text column (vectorised; other
    types are written by pyarrow as numbers, dates and booleans, which no spreadsheet runs)."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            hostile = pc.match_substring_regex(column, _FORMULA_START)
            column = pc.if_else(hostile, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)
