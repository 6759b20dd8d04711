"""What one chunk of the nightly ledger step costs in the openings store as the ledger ages.

    .venv/bin/python benchmarks/bench_openings_age.py                        # 2.5M and 25M stored entries
    .venv/bin/python benchmarks/bench_openings_age.py --stored 1000000 --chunk 20000

The ledger step appends a night's entries 100,000 at a time (``LEDGER_CHUNK``). Per chunk the
store answers ``lookup_tags`` (which keys, and which tenures' closures, are already in the log:
rerun safety across nights, and the tenure ref of an older closure) and ``put`` checks that no
stored row has a new row's index or key tag before it inserts. Both are joins against the whole
``openings`` table: random key tags defeat zone maps, so each chunk scans every stored tag, and
a night's cost grows with the log's age, not with the night.

For each ``--stored`` size the store is filled in SQL with rows shaped like the real ones
(32-byte tags, 16-byte tenure refs, ~130-byte sealed blobs, a data key each), then timed through
the real API: ``lookup_tags`` of a chunk (half of its tags stored, half new, as a night's tenure
keys are; the best of three) and ``put`` of a chunk of new rows (sealing included; the second
of two). Printed: seconds per chunk, the cost of a 25-chunk night (the 2.5M-entry night of
``bench_night.py``, whose ledger step takes ~110 s), the slope per million stored entries, and
DuckDB's own scan of the stored tags (``max(key_tag)``) beside the lookup that cannot beat it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from number_recycling_client.ledger.entries import EntryType

from pipelines.ledger.openings import NewOpening, OpeningsStore

NIGHT_CHUNKS = 25  # 2.5M entries a night at 100,000 a chunk (bench_night.py's full size)


def fill(store: OpeningsStore, rows: int) -> float:
    """``rows`` stored entries (index 0..rows-1, tag sha256 of the index), as a night leaves them."""
    t0 = time.perf_counter()
    con = store._con  # the benchmark's own shortcut: 25M real appends would take ~20 minutes
    con.execute(
        f"""
        INSERT INTO openings
        SELECT range, unhex(sha256(range::VARCHAR)), 3, unhex(md5(range::VARCHAR)),
               unhex(sha256('a' || range) || sha256('b' || range) || sha256('c' || range) || sha256('d' || range)),
               false
        FROM range({rows})
        """
    )
    con.execute(
        f"INSERT INTO dk.data_keys SELECT range, unhex(sha256('k' || range) || '0000000000000000') FROM range({rows})"
    )
    con.execute("CHECKPOINT")
    return time.perf_counter() - t0


def tag(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def measure(store: OpeningsStore, stored: int, chunk: int) -> dict[str, float]:
    """The best of three lookups of a chunk's tags, and the second of two puts (the first warms
    the store's caches, as the night's first chunk does)."""
    half = chunk // 2
    wanted = [tag(i) for i in range(stored - half, stored + half)]  # half stored, half new
    lookups = []
    for _ in range(3):
        t0 = time.perf_counter()
        found = store.lookup_tags(wanted)
        lookups.append(time.perf_counter() - t0)
        assert len(found) == half, len(found)
    put = 0.0
    for first in (stored, stored + chunk):
        rows = [
            NewOpening(
                first + i,
                tag(first + chunk + i),
                EntryType.REMINDER_SENT,
                bytes(16),
                os.urandom(32),
                bytes(100),
            )
            for i in range(chunk)
        ]
        t0 = time.perf_counter()
        store.put(rows)
        put = time.perf_counter() - t0
    t0 = time.perf_counter()  # DuckDB's own scan of every stored tag: what a lookup cannot beat
    store._con.execute("SELECT max(key_tag) FROM openings").fetchall()
    return {"lookup_s": min(lookups), "put_s": put, "scan_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stored", type=int, nargs="+", default=[2_500_000, 25_000_000])
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--memory-limit", default="953MiB", help="the ledger step's share (a third of 3 GB)")
    args = ap.parse_args()
    results = []
    for stored in args.stored:
        tmp = Path(tempfile.mkdtemp(prefix="bench-openings-"))
        try:
            with OpeningsStore.open(
                tmp / "private" / "openings", tmp / "keys", memory_limit=args.memory_limit
            ) as store:
                built = fill(store, stored)
                m = measure(store, stored, args.chunk)
            per_chunk = m["lookup_s"] + m["put_s"]
            results.append((stored, per_chunk))
            print(
                f"{stored:>12,} stored (filled in {built:.0f} s): lookup_tags {m['lookup_s']:.2f} s + put "
                f"{m['put_s']:.2f} s = {per_chunk:.2f} s a chunk of {args.chunk:,}; "
                f"{per_chunk * NIGHT_CHUNKS:.0f} s a {NIGHT_CHUNKS}-chunk night; DuckDB's own scan of the "
                f"stored tags {m['scan_s']:.2f} s (lookup = {m['lookup_s'] / max(m['scan_s'], 1e-6):.1f}x that)",
                flush=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if len(results) >= 2:
        (a, ta), (b, tb) = results[0], results[-1]
        slope = (tb - ta) / ((b - a) / 1e6)
        print(f"slope: {slope:.3f} s a chunk per million stored entries; a year of 2.5M-entry nights "
              f"(~912M stored) adds ~{slope * 912 * NIGHT_CHUNKS / 60:.0f} min to a night")  # fmt: skip


if __name__ == "__main__":
    main()
