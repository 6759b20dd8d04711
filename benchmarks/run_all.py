"""`make bench`: every benchmark at full scale, one after another, each in its own process.

Each prints its own figures (wall time, rows/s, peak RSS, ratio to a raw DuckDB scan of the
same input where that applies). Run on an otherwise idle machine: the figures are CPU-bound.
Pass ``--quick`` for scaled-down runs that finish in a few minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL: dict[str, list[str]] = {
    "bench_ingest.py": [],
    "bench_lifecycle.py": [],
    "bench_ledger.py": [],
    "bench_server.py": [],
    "bench_night.py": [],
    "bench_events.py": [],
    "bench_openings_age.py": [],
}
QUICK: dict[str, list[str]] = {
    "bench_ingest.py": ["--rows", "200000"],
    "bench_lifecycle.py": ["--tenures", "1000000", "--events", "100000"],
    "bench_ledger.py": ["--entries", "200000", "--batch", "20000", "--api-entries", "20000"],
    "bench_server.py": ["--tenures", "1000000", "--requests", "2000", "--bulk", "50000"],
    "bench_night.py": ["--tenures", "1000000", "--rows", "100000"],
    "bench_events.py": ["--events", "500", "--deliver", "1000"],
    "bench_openings_age.py": ["--stored", "200000", "2000000", "--chunk", "20000"],
}


def main() -> int:
    plan = QUICK if "--quick" in sys.argv[1:] else FULL
    failed = []
    for script, args in plan.items():
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / script), *args], check=False).returncode
        if rc:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
