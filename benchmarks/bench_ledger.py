"""Ledger throughput on this machine: appends with tile writes, full verification, proofs.

    .venv/bin/python benchmarks/bench_ledger.py                 # 2,000,000 entries, 10 batches
    .venv/bin/python benchmarks/bench_ledger.py --entries 200000 --batch 20000 --api-entries 50000

Figures printed:
- log append: raw 50-byte entries through ``TiledLog.append`` (leaf and tile hashing, every
  tile, partial tile and entry bundle written with temp file + fsync + rename), plus signing
  and writing a checkpoint after every batch, with the signer's consistency-proof check;
- verify_log and audit_log over the whole log (recompute every tile and the root);
- inclusion proofs computed from the tiles on disk;
- Ledger.append: the integrator's path (commitments, per-entry encrypted openings in DuckDB,
  the idempotency lookup, then the log append).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from number_recycling_client.ledger.merkle import EMPTY_ROOT
from number_recycling_client.ledger.note import Checkpoint, open_checkpoint
from number_recycling_client.ledger.proof import TileReader, consistency_proof, inclusion_proof

from pipelines.ledger import (
    CanonicalValue,
    EntryType,
    Ledger,
    OpeningsStore,
    PreparedEntry,
    audit_log,
    load_or_create_signer,
    verify_log,
)
from pipelines.ledger.log import TiledLog, WriterLock

ORIGIN = "bench.example/ledger"
KEY = "bench.example/ledger-key"


def bench_log(root: Path, total: int, batch: int) -> None:
    signer = load_or_create_signer(root / "keys", KEY)
    ledger_dir = root / "ledger"
    blob = os.urandom(48 * total)
    entries = [b"\x01\x03" + blob[48 * i : 48 * i + 48] for i in range(total)]
    log = TiledLog.load(ledger_dir, WriterLock(ledger_dir), 0, EMPTY_ROOT)
    append_s = sign_s = 0.0
    previous = 0
    cpu0 = time.process_time()
    for start in range(0, total, batch):
        t0 = time.perf_counter()
        log.append(entries[start : start + batch])
        t1 = time.perf_counter()
        size = log.size
        proof = consistency_proof(TileReader(ledger_dir, size), previous, size) if previous else []
        note = signer.sign_checkpoint(Checkpoint(ORIGIN, size, log.root()), proof)
        log.write_checkpoint(note, size)
        t2 = time.perf_counter()
        append_s += t1 - t0
        sign_s += t2 - t1
        previous = size
        print(f"  batch ending at {size:>9,}: append {t1 - t0:6.2f} s, checkpoint {1000 * (t2 - t1):5.1f} ms")
    cpu = time.process_time() - cpu0
    log.close()
    files = sum(len(f) for _, _, f in os.walk(ledger_dir / "tile"))
    print(
        f"log append: {total:,} entries in {append_s + sign_s:.2f} s = "
        f"{total / (append_s + sign_s):,.0f} entries/s incl. tile writes and checkpoints "
        f"({total / append_s:,.0f}/s appends alone; {files:,} tile files); "
        f"CPU {cpu:.2f} s = {total / cpu:,.0f} entries per CPU-second"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    report = verify_log(ledger_dir, signer.vkey, ORIGIN)
    t1, c1 = time.perf_counter(), time.process_time()
    print(
        f"verify_log: {report.entries:,} entries, {report.tiles_checked:,} tiles in {t1 - t0:.2f} s"
        f" (CPU {c1 - c0:.2f} s)"
    )
    t0 = time.perf_counter()
    audit = audit_log(ledger_dir, signer.vkey, 2, ORIGIN)
    t1 = time.perf_counter()
    print(f"audit_log: {sum(audit.counts.values()):,} entries in {t1 - t0:.2f} s")

    cp = open_checkpoint((ledger_dir / "checkpoint").read_bytes(), signer.vkey)
    reader = TileReader(ledger_dir, cp.size)
    rng = random.Random(1)
    t0 = time.perf_counter()
    for _ in range(1000):
        inclusion_proof(reader, rng.randrange(cp.size), cp.size)
    t1 = time.perf_counter()
    print(f"inclusion proofs from disk: {1000 * (t1 - t0) / 1000:.2f} ms each (1000 random, cached reader)")


def bench_api(root: Path, total: int, batch: int) -> None:
    keys = root / "api-keys"
    signer = load_or_create_signer(keys, KEY)
    store = OpeningsStore.open(root / "private" / "openings", keys)
    prepared: list[PreparedEntry] = []
    for i in range(total // 4):
        base = {
            "msisdn": f"+86138{i:08d}",
            "tenure_start": dt.date(2020, 1, 1),
            "tenure_end": dt.date(2025, 1, 2),
        }
        prepared.append(
            PreparedEntry(f"{i}:closed", EntryType.TENURE_CLOSED, CanonicalValue.build(base, region="GD"))
        )
        for r in range(2):
            v = CanonicalValue.build(
                base,
                reminder_id=f"{i}-{r}",
                channel="sms",
                delivered_at=dt.datetime(2025, 1, 2 + r, tzinfo=dt.UTC),
            )
            prepared.append(
                PreparedEntry(f"{i}:eff{r}", EntryType.REMINDER_EFFECTIVE, v, tenure_key=f"{i}:closed")
            )
        v = CanonicalValue.build(base, released_on=dt.date(2025, 4, 2), effective_reminders=2)
        prepared.append(PreparedEntry(f"{i}:released", EntryType.RELEASED, v, tenure_key=f"{i}:closed"))
    with Ledger.open(root / "api-ledger", signer, ORIGIN, store) as ledger:
        t0 = time.perf_counter()
        for start in range(0, len(prepared), batch):
            ledger.append(prepared[start : start + batch])
            ledger.publish_checkpoint()
        t1 = time.perf_counter()
        ledger.append(prepared[:batch])  # a rerun: everything is skipped
        t2 = time.perf_counter()
        evidence = ledger.write_evidence(range(0, 400, 4), root / "evidence")
        t3 = time.perf_counter()
    store.close()
    n = len(prepared)
    print(
        f"Ledger.append: {n:,} entries in {t1 - t0:.2f} s = {n / (t1 - t0):,.0f} entries/s "
        f"(commitments + encrypted openings + tiles + checkpoints); rerun of {batch:,} skipped in "
        f"{t2 - t1:.2f} s; evidence for 100 entries in {t3 - t2:.2f} s ({evidence.parent.name})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=200_000)
    parser.add_argument("--api-entries", type=int, default=200_000)
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temp dir, removed)"
    )
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    try:
        bench_log(root, args.entries, args.batch)
        if args.api_entries:
            bench_api(root, args.api_entries, min(args.batch, args.api_entries))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
