"""The one DuckDB seam: connections with the nightly settings, transactions, option toggles,
literal quoting, and the explicit list of tables (:mod:`pipelines.db.schema`)."""

from pipelines.db.client import (
    ENV_MEMORY_LIMIT,
    Con,
    connect,
    current_options,
    duckdb_options,
    in_transaction,
    nightly_step,
    open_state,
    set_options,
    sql_str,
    transaction,
)

__all__ = [
    "ENV_MEMORY_LIMIT",
    "Con",
    "connect",
    "current_options",
    "duckdb_options",
    "in_transaction",
    "nightly_step",
    "open_state",
    "set_options",
    "sql_str",
    "transaction",
]
