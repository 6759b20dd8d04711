"""SQL building blocks of the lifecycle steps: tenure ids, per-province policy as SQL, the ``nr_*``
macros (:func:`expand_sql`), working copies fetched by rowid and written back, small counters.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import duckdb
import phonenumbers

from pipelines.config import Settings
from pipelines.db import Con, sql_str

STATES = ("active", "suspended", "frozen", "held", "available", "ported_out")
# States in which the prior owner is still being reminded (the tenure's disconnection is live).
REMINDING_STATES = ("suspended", "frozen", "held")

# One name and kind per drop file, by content: the same bytes dropped under two names are one
# file to the steps (``files`` is keyed by name and hash); ``min`` makes the choice stable.
FILE_NAMES = "SELECT sha256, min(file_name) AS file_name, min(kind) AS kind FROM files GROUP BY sha256"


# --------------------------------------------------------------------------- SQL helpers


def tenure_id(msisdn: str, tenure_start: dt.date) -> str:
    """Deterministic id of the tenure (msisdn, tenure_start); equals the SQL ``nr_tenure_id`` (see :func:`expand_sql`)."""
    digest = hashlib.sha256(f"{msisdn}|{tenure_start.isoformat()}".encode()).hexdigest()
    return "T" + digest[:20]


def _sql_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(int(v)) for v in value) + "]::INTEGER[]"
    return str(int(value))


def policy_sql(settings: Settings, attr: str, region_col: str) -> str:
    """SQL for ``settings.policy(<region_col>).<attr>``: a CASE over the configured regions."""
    default = getattr(settings.policies["default"], attr)
    whens = [
        f"WHEN {sql_str(code)} THEN {_sql_value(getattr(p, attr))}"
        for code, p in sorted(settings.policies.items())
        if code != "default" and getattr(p, attr) != default
    ]
    if not whens:
        return f"({_sql_value(default)})"
    return f"(CASE {region_col} {' '.join(whens)} ELSE {_sql_value(default)} END)"


def _country_code_lists() -> tuple[str, str]:
    by_len: dict[int, list[str]] = {1: [], 2: [], 3: []}
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        by_len.setdefault(len(str(code)), []).append(sql_str(str(code)))
    return ", ".join(sorted(by_len[1])), ", ".join(sorted(by_len[2]))


_CC1, _CC2 = _country_code_lists()


def _mask_expr(m: str) -> str:
    # pipelines.numbers.mask in SQL: country codes are prefix-free, and phonenumbers' national
    # number is an integer (hence the ltrim of leading zeros).
    cc = (
        f"(CASE WHEN substr({m}, 2, 1) IN ({_CC1}) THEN 1 "
        f"WHEN substr({m}, 2, 2) IN ({_CC2}) THEN 2 ELSE 3 END)"
    )
    n = (
        f"(CASE WHEN starts_with({m}, '+') THEN ltrim(substr({m}, 2 + {cc}), '0') "
        f"ELSE regexp_replace({m}, '[^0-9]', '', 'g') END)"
    )
    return (
        f"(CASE WHEN length({n}) >= 9 THEN left({n}, 3) || '****' || right({n}, 4) "
        f"ELSE repeat('*', greatest(length({n}) - 2, 0)) || right({n}, 2) END)"
    )


_MACROS: dict[str, Any] = {
    "nr_mask": _mask_expr,
    "nr_cc_len": lambda m: (
        f"(CASE WHEN substr({m}, 2, 1) IN ({_CC1}) THEN 1 "
        f"WHEN substr({m}, 2, 2) IN ({_CC2}) THEN 2 ELSE 3 END)"
    ),
    "nr_tenure_id": lambda m, s: f"('T' || substr(sha256({m} || '|' || strftime({s}, '%Y-%m-%d')), 1, 20))",
    "nr_reminder_id": lambda t, d, slot, ch: (
        f"('R' || substr(sha256({t} || '|' || strftime({d}, '%Y-%m-%d') || '|' || {slot} "
        f"|| '|' || {ch}), 1, 20))"
    ),
}
_MACRO_CALL = re.compile(r"\b(nr_mask|nr_cc_len|nr_tenure_id|nr_reminder_id)\(([^()]*)\)")


@functools.lru_cache(maxsize=512)
def expand_sql(sql: str) -> str:
    """Expand our SQL helpers (``nr_mask(m)``, ``nr_cc_len(m)``, ``nr_tenure_id(m, start)``,
    ``nr_reminder_id(tenure, disconnected_on, slot, channel)``; arguments without parentheses)
    into plain SQL. Inline expressions, not DuckDB macros: a macro created inside a step's
    transaction would vanish with a rollback of that step."""
    return _MACRO_CALL.sub(
        lambda m: str(_MACROS[m.group(1)](*(a.strip() for a in m.group(2).split(",")))), sql
    )


def run_sql(con: Con, sql: str, params: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """``con.execute`` after :func:`expand_sql`."""
    return con.execute(expand_sql(sql), params or {})


def working_copy(con: Con, name: str, table: str, key: str, keys_sql: str, columns: str = "*") -> None:
    """``CREATE TEMP TABLE name``: the rows of ``table`` whose ``key`` is in ``keys_sql`` (a
    one-column SELECT), ``columns`` of them plus their rowid as ``_rid``.

    Two passes: the key column alone finds the rowids, then the rows are fetched by rowid.
    A join on the key decodes every column of every row of a ten-million-row table; a rowid
    filter lets the scan skip what it does not need (about half the cost).
    """
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE {name}_rowids AS
        SELECT t.rowid AS rid FROM {table} t WHERE t.{key} IN ({keys_sql})
        """,
    )
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        SELECT {columns}, t.rowid AS _rid FROM {table} t WHERE t.rowid IN (SELECT rid FROM {name}_rowids)
        """,
    )
    run_sql(con, f"DROP TABLE {name}_rowids")


def count_rows(con: Con, table: str, where: str = "true", params: dict[str, Any] | None = None) -> int:
    row = run_sql(con, f"SELECT count(*) FROM {table} WHERE {where}", params or {}).fetchone()
    return int(row[0]) if row else 0


def scalar(con: Con, sql: str, params: dict[str, Any] | None = None) -> Any:
    row = run_sql(con, sql, params or {}).fetchone()
    return row[0] if row else None


def count_of(con: Con, sql: str) -> int:
    """The integer a ``SELECT count(*) ...`` returns (0 when it returns no row)."""
    return int(scalar(con, sql) or 0)


def drop_tables(con: Con, names: Iterable[str]) -> None:
    for name in names:
        run_sql(con, f"DROP TABLE IF EXISTS {name}")


def write_back(con: Con, table: str, work: str) -> None:
    """Replace the changed rows of ``table`` by those of the working copy ``work``.

    DELETE + INSERT rather than UPDATE: on a ten-million-row table it is about three times
    faster for a million changed rows (DuckDB rewrites updated string columns row by row), and
    the rows read are deleted by rowid, without a join over ten million keys.
    """
    run_sql(
        con, f"DELETE FROM {table} WHERE rowid IN (SELECT _rid FROM {work} WHERE dirty AND _rid IS NOT NULL)"
    )
    run_sql(con, f"INSERT INTO {table} SELECT * EXCLUDE (dirty, _rid) FROM {work} WHERE dirty")
