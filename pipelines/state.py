"""The nightly run's DuckDB state: connection and table definitions.

Every module that owns tables declares its DDL here-by-registration (``register_ddl``) so
``open_state`` creates them all idempotently. Only the nightly run's writing tasks open this
file (DuckDB allows one writer process); the server reads published snapshots instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines.errors import ConfigError

_DDL: list[str] = []


def register_ddl(*statements: str) -> None:
    """Add ``CREATE ... IF NOT EXISTS`` statements run by :func:`open_state` (module import time)."""
    for stmt in statements:
        if stmt not in _DDL:
            _DDL.append(stmt)


# Ingest-owned tables. `logical_date` is the day whose inbox carried the row; `line_no` is the
# 1-based physical line in the file (header = line 1) or the 1-based Parquet row number.
# The row tables have no PRIMARY KEY on (file_sha256, line_no) although it is unique: the file
# registry admits a file once, and a key would cost an index insert per row plus an index,
# held in memory, that grows with every night's million rows. The ingest tests check it.
# Columns of (nearly) unique strings are zstd-compressed: DuckDB's default analyses every
# method and picks FSST, which takes twice the time to write a night's rows and thrice the
# space; zstd reads as fast (benchmarks/bench_ingest.py, docs/architecture.md).
register_ddl(
    """
    CREATE TABLE IF NOT EXISTS files (
        file_name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        sha256 VARCHAR NOT NULL,
        logical_date DATE NOT NULL,
        status VARCHAR NOT NULL,          -- ingested | failed
        rows_in BIGINT NOT NULL,
        accepted BIGINT NOT NULL,
        quarantined BIGINT NOT NULL,
        encoding VARCHAR,
        delimiter VARCHAR,
        error VARCHAR,
        PRIMARY KEY (file_name, sha256)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS lifecycle_events (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        msisdn VARCHAR USING COMPRESSION zstd NOT NULL,          -- E.164
        event VARCHAR NOT NULL,           -- cancel | suspend | restore | port_out | port_in
        effective_date DATE NOT NULL,
        region VARCHAR NOT NULL,          -- province code, e.g. GD
        subscriber_ref VARCHAR USING COMPRESSION zstd NOT NULL,
        tenure_start DATE,
        contact_email VARCHAR USING COMPRESSION zstd,
        contact_phone VARCHAR USING COMPRESSION zstd,            -- E.164, another number of the same owner
        language VARCHAR NOT NULL        -- zh-CN | en
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reissue_events (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        msisdn VARCHAR USING COMPRESSION zstd NOT NULL,
        reissue_date DATE NOT NULL,
        region VARCHAR NOT NULL,
        subscriber_ref VARCHAR USING COMPRESSION zstd NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS subscriber_rows (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        msisdn VARCHAR USING COMPRESSION zstd NOT NULL,
        tenure_start DATE NOT NULL,
        region VARCHAR NOT NULL,
        subscriber_ref VARCHAR USING COMPRESSION zstd NOT NULL,
        contact_email VARCHAR USING COMPRESSION zstd,
        contact_phone VARCHAR USING COMPRESSION zstd,
        language VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS receipt_rows (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        reminder_id VARCHAR USING COMPRESSION zstd NOT NULL,
        channel VARCHAR NOT NULL,         -- email | sms | letter
        status VARCHAR NOT NULL,          -- delivered | failed | expired | acknowledged
        "at" TIMESTAMP NOT NULL,          -- UTC; quoted: AT is a keyword in DuckDB 2
        provider_ref VARCHAR USING COMPRESSION zstd
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS quarantine (
        file_name VARCHAR NOT NULL,
        file_sha256 VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        logical_date DATE NOT NULL,
        line_no BIGINT NOT NULL,
        stage VARCHAR NOT NULL,           -- ingest | lifecycle | receipts
        reason VARCHAR NOT NULL,          -- a reason code, see pipelines.reasons
        detail VARCHAR,
        original_line VARCHAR,
        PRIMARY KEY (file_sha256, line_no, stage)
    )
    """,
)


ENV_MEMORY_LIMIT = "RECYCLE_DUCKDB_MEMORY_LIMIT"
# A province's night (10M tenures, 1M lifecycle rows) runs in it with a peak RSS under 4 GiB;
# what does not fit spills to the temp directory instead of failing.
DEFAULT_MEMORY_LIMIT = "3GB"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # CPUs this process may run on (cgroups, taskset)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def connect(
    path: Path,
    *,
    read_only: bool = False,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the state file (creating tables when writable) with the nightly run's settings.

    ``memory_limit`` (DuckDB syntax, e.g. ``"3GB"``) defaults to ``$RECYCLE_DUCKDB_MEMORY_LIMIT``,
    else 3GB; ``threads`` to the CPUs this process may use. DuckDB spills what exceeds the limit
    to ``<state file>.tmp`` beside the state file, on the data volume.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = memory_limit or os.environ.get(ENV_MEMORY_LIMIT) or DEFAULT_MEMORY_LIMIT
    n_threads = threads or _usable_cpus()
    con = duckdb.connect(str(path), read_only=read_only)
    # SET, not connect(config=...): a second connection to the same file in this process (a
    # plain duckdb.connect, say) would otherwise be refused for a different configuration.
    try:
        con.execute(f"SET memory_limit = '{limit.replace(chr(39), '')}'")
        con.execute(f"SET threads = {int(n_threads)}")
    except (duckdb.Error, ValueError) as exc:
        con.close()
        raise ConfigError(
            f"DuckDB memory limit {limit!r} or threads {n_threads!r} rejected ({exc}); set "
            f"{ENV_MEMORY_LIMIT} to a size such as 3GB or 1500MB"
        ) from exc
    temp_dir = str(path.with_name(path.name + ".tmp"))
    if con.execute("SELECT current_setting('temp_directory')").fetchone() != (temp_dir,):
        con.execute(f"SET temp_directory = '{temp_dir.replace(chr(39), chr(39) * 2)}'")
    if not read_only:
        for stmt in _DDL:
            con.execute(stmt)
    return con


@contextmanager
def open_state(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only)
    try:
        yield con
    finally:
        con.close()
