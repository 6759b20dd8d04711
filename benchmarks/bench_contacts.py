"""Contacts sealed at rest (pipelines.contacts): the cost of sealing at go-live and opening a night's sends.

Go-live seals an e-mail and a phone per tenure into a DuckDB table through the SQL function
``contact_seal``; a night opens the addresses of its sends through ``contact_open``. Both are
set against DuckDB's own load of the same values unsealed, measured in the same run.

    PYTHONPATH=$PWD python benchmarks/bench_contacts.py --tenures 10000000 --sends 200000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from pipelines.db import connect

_VALUES = (
    "SELECT 'user' || i || '@example.cn' AS email, '+86139' || lpad(i::VARCHAR, 8, '0') AS phone "
    "FROM range({n}) r(i)"
)


def _timed(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    start = time.perf_counter()
    con.execute(sql)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenures", type=int, default=1_000_000)
    parser.add_argument("--sends", type=int, default=100_000)
    args = parser.parse_args()
    n = args.tenures
    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp) / "state.duckdb")
        values = _VALUES.format(n=n)
        plain = _timed(con, f"CREATE TABLE plain AS {values}")
        sealed = _timed(
            con, f"CREATE TABLE sealed AS SELECT contact_seal(email) e, contact_seal(phone) p FROM ({values})"
        )
        plain_read = _timed(con, f"CREATE TEMP TABLE o1 AS SELECT email FROM plain LIMIT {args.sends}")
        opened = _timed(con, f"CREATE TEMP TABLE o2 AS SELECT contact_open(e) FROM sealed LIMIT {args.sends}")
        con.close()
    print(
        f"go-live: seal {n:,} tenures x 2 contacts: {sealed:.1f} s ({sealed / n * 1e6:.2f} us/tenure); "
        f"DuckDB's own load of the same values: {plain:.1f} s; ratio {sealed / plain:.1f}x"
    )
    print(
        f"night: open {args.sends:,} addresses: {opened:.2f} s; DuckDB unsealed: {plain_read:.3f} s; "
        f"ratio {opened / max(plain_read, 1e-6):.0f}x"
    )


if __name__ == "__main__":
    main()
