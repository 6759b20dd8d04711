"""Peak memory of ingesting a drop with one huge line (issue 12: a 200 MB line took 4.5 GB).

    .venv/bin/python benchmarks/bench_long_line.py [--mib 200] [--dir DIR]

Writes a lifecycle CSV whose second line is ``--mib`` MiB of one field, between two good
lines, and ingests it in a child process on a fresh data directory; prints the child's
peak RSS (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``), its wall time and what
became of the file. A baseline child that only imports the package is measured the same
way, so the figure the line costs is the difference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAY = dt.date(2026, 1, 5)
ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    b"msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n"
)
GOOD = b"13812345678,cancel,2026-01-05,GD,S1,2019-03-01,,,zh-CN\n"


def _write(path: Path, mib: int) -> None:
    with open(path, "wb") as fh:
        fh.write(HEADER + GOOD + b"13812345679,cancel,2026-01-05,GD,")
        block = b"x" * (1 << 20)
        for _ in range(mib):
            fh.write(block)
        fh.write(b",,,,zh-CN\n" + GOOD.replace(b"S1", b"S3").replace(b"678", b"680"))


def _child(data_dir: Path) -> None:
    from pipelines.config import load_settings
    from pipelines.ingest.drops import ingest_day

    if data_dir.name == "imports-only":
        print(json.dumps({}))
        return
    t0 = time.perf_counter()
    report = ingest_day(load_settings(env={}, data_dir=data_dir), DAY)
    f = report.files[0]
    print(
        json.dumps(
            {
                "wall_s": round(time.perf_counter() - t0, 2),
                "status": f.status,
                "rows_in": f.rows_in,
                "accepted": f.accepted,
                "quarantined": dict(f.quarantined_by_reason),
                "error": f.error,
            }
        )
    )


def _run_child(data_dir: Path) -> tuple[dict[str, object], float]:
    """The child's report and its peak RSS in MiB (a fresh process: RUSAGE_CHILDREN is its own)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"rc": out.returncode, "stderr": out.stderr[-2000:]}
    return result, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-long-line-"))
    try:
        # RUSAGE_CHILDREN's ru_maxrss is the largest of all waited-for children: the baseline
        # (imports only) runs first, so the second figure is the ingest's own peak.
        _, base = _run_child(work / "imports-only")
        inbox = work / "var" / "inbox" / DAY.isoformat()
        inbox.mkdir(parents=True)
        _write(inbox / f"lifecycle_{DAY}.csv", args.mib)
        result, peak = _run_child(work / "var")
        print(f"imports only: peak RSS {base:,.0f} MiB")
        print(f"ingest of a {args.mib} MiB line: peak RSS {peak:,.0f} MiB; {json.dumps(result)}")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
