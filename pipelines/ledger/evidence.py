"""Per-number evidence and erasure: the bridge from a phone number to its ledger entries.

The public log holds commitments only; which entries belong to a number is known from the
state file's ``ledger_events`` queue (idempotency keys) and the openings store. Operators run
these; an auditor needs only the bundle and the carrier's verifier key (``recycle verify``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from pipelines.ledger import Ledger
from pipelines.numbers import mask


def ledger_indices(con: duckdb.DuckDBPyConnection, ledger: Ledger, msisdn: str) -> list[int]:
    """Log indices of every appended entry about ``msisdn`` (E.164), in log order."""
    keys = con.execute(
        "SELECT idempotency_key FROM ledger_events WHERE msisdn = ? AND appended ORDER BY seq",
        [msisdn],
    ).fetchall()
    indices = [ledger.index_of(k) for (k,) in keys]
    return sorted(i for i in indices if i is not None)


def write_number_evidence(
    con: duckdb.DuckDBPyConnection, ledger: Ledger, msisdn: str, out_dir: Path
) -> tuple[Path, int]:
    """Write the evidence bundle of ``msisdn``: one ``tlog-proof`` per entry, ``index.json``,
    and the ledger's verifier key (``vkey``) so the bundle verifies offline.

    Returns (index.json path, number of entries). Raises ``LookupError`` when the ledger holds
    nothing about the number.
    """
    indices = ledger_indices(con, ledger, msisdn)
    if not indices:
        raise LookupError(
            f"the ledger holds no entry for {mask(msisdn)}: it was never disconnected, or the "
            "nightly ledger step has not run since"
        )
    index_path = ledger.write_evidence(indices, out_dir)
    shutil.copyfile(ledger.dir / "vkey", out_dir / "vkey")
    return index_path, len(indices)


def erase_number(con: duckdb.DuckDBPyConnection, ledger: Ledger, msisdn: str) -> int:
    """Crypto-shred every opening about ``msisdn``: the log stays intact and verifiable, but
    no entry about the number can be opened any more. Returns how many entries were erased."""
    indices = ledger_indices(con, ledger, msisdn)
    for index in indices:
        ledger.erase(index)
    return len(indices)
