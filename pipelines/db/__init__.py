"""The one DuckDB seam: connections with the nightly settings, transactions, option toggles,
literal quoting, the explicit list of tables (:mod:`pipelines.db.schema`), and who may open
the state file when (:mod:`pipelines.db.locks`: one writer or many readers, one night at a time)."""

from pipelines.db.client import (
    ENV_MEMORY_LIMIT,
    Con,
    connect,
    current_options,
    duckdb_options,
    in_transaction,
    memory_share,
    nightly_step,
    open_state,
    open_union,
    set_options,
    sql_str,
    transaction,
)
from pipelines.db.locks import night_lock, state_lock, writing_for

__all__ = [
    "ENV_MEMORY_LIMIT",
    "Con",
    "connect",
    "current_options",
    "duckdb_options",
    "in_transaction",
    "memory_share",
    "night_lock",
    "nightly_step",
    "open_state",
    "open_union",
    "set_options",
    "sql_str",
    "state_lock",
    "transaction",
    "writing_for",
]
