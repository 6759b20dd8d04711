"""Ingest benchmark: one big lifecycle drop through ``ingest_day`` vs DuckDB's raw CSV scan.

Target (issue): a 1,000,000-row lifecycle CSV ingested in <= 10x the wall time of
``SELECT count(*) FROM read_csv(file)``, with peak RSS <= 3 GiB, on 2 cores. The scan is run
with ``ignore_errors = true``: without it DuckDB's sniffer refuses a file with defects.

    .venv/bin/python benchmarks/bench_ingest.py [--rows 1000000] [--defect-rate 0.01] [--dir DIR]

Each measurement runs in a fresh process; peak RSS is that process's ``ru_maxrss``. Import
time (Great Expectations alone takes seconds) is reported apart from the ingest itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAY = dt.date(2026, 1, 5)
ROOT = Path(__file__).resolve().parent.parent


def _generate(path: Path, rows: int, defect_rate: float) -> dict[str, object]:
    try:
        from pipelines.synth import generate_lifecycle_day
    except ImportError:  # synth not there yet: a plain generator, no defects
        return _plain_generate(path, rows)
    truth = generate_lifecycle_day(path, DAY, rows, seed=1, defect_rate=defect_rate)
    return {"generator": "pipelines.synth", "rows": truth.rows, "accepted": truth.accepted,
            "quarantined": truth.quarantined}


def _plain_generate(path: Path, rows: int) -> dict[str, object]:
    rng = random.Random(1)
    prefixes = ["134", "135", "138", "139", "150", "158", "186", "188", "199"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n")
        for i in range(rows):
            fh.write(f"{rng.choice(prefixes)}{i:08d},cancel,{DAY},GD,S{i:010d},2020-01-01,,,zh-CN\n")
    return {"generator": "plain", "rows": rows, "accepted": rows, "quarantined": 0}


def _child_ingest(data_dir: Path) -> None:
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  (import cost reported apart)

    from pipelines.config import load_settings
    from pipelines.ingest import ingest_day

    imported = time.perf_counter() - t0
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("pipelines.ingest").setLevel(logging.DEBUG)  # per-step wall times
    settings = load_settings(env={}, data_dir=data_dir)
    t1 = time.perf_counter()
    report = ingest_day(settings, DAY)
    wall = time.perf_counter() - t1
    f = report.files[0]
    print(json.dumps({
        "import_s": imported, "ingest_s": wall, "cpu_s": time.process_time(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "status": f.status, "rows_in": f.rows_in, "accepted": f.accepted, "quarantined": f.quarantined,
        "reasons": dict(f.quarantined_by_reason), "gx_rows": f.gx_rows, "gx_success": f.gx_success,
    }))


def _child_scan(csv_path: Path) -> None:
    import duckdb

    con = duckdb.connect()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        # ignore_errors: DuckDB's dialect sniffer gives up on a file with malformed lines otherwise
        con.execute("SELECT count(*) FROM read_csv(?, ignore_errors = true)", [str(csv_path)]).fetchall()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"scan_s": min(times), "scan_all_s": times,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _run_child(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    result["log"] = [line for line in out.stderr.splitlines() if line.startswith("DEBUG:pipelines.ingest")]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--defect-rate", type=float, default=0.01)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    parser.add_argument("--child", choices=["ingest", "scan"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "ingest":
        _child_ingest(args.path)
        return
    if args.child == "scan":
        _child_scan(args.path)
        return

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        data_dir = work / "var"
        shutil.rmtree(data_dir, ignore_errors=True)
        csv_path = data_dir / "inbox" / DAY.isoformat() / f"lifecycle_{DAY.isoformat()}.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        truth = _generate(csv_path, args.rows, args.defect_rate)
        print(f"generated {csv_path.stat().st_size / 2**20:.0f} MiB, {truth} in {time.perf_counter() - t0:.1f} s")

        scan = _run_child("--child", "scan", "--path", str(csv_path))
        ingest = _run_child("--child", "ingest", "--path", str(data_dir))
        scan_after = _run_child("--child", "scan", "--path", str(csv_path))
        raw = min(float(scan["scan_s"]), float(scan_after["scan_s"]))  # type: ignore[arg-type]
        wall = float(ingest["ingest_s"])  # type: ignore[arg-type]
        rows_in = int(ingest["rows_in"])  # type: ignore[call-overload]
        print(f"raw scan (DuckDB count(*) read_csv ignore_errors, best of 6): {raw:.3f} s")
        print(f"ingest_day: {wall:.2f} s wall, {float(ingest['cpu_s']):.1f} s CPU incl. imports "  # type: ignore[arg-type]
              f"(+{float(ingest['import_s']):.1f} s imports), "  # type: ignore[arg-type]
              f"{rows_in / wall:,.0f} rows/s, peak RSS {float(ingest['peak_rss_mib']):,.0f} MiB")  # type: ignore[arg-type]
        print(f"ratio ingest / raw scan: {wall / raw:.1f}x (target <= 10x); "
              f"with imports {(wall + float(ingest['import_s'])) / raw:.1f}x")  # type: ignore[arg-type]
        print(f"result: {json.dumps({k: ingest[k] for k in ('status', 'rows_in', 'accepted', 'quarantined', 'gx_rows', 'gx_success', 'reasons')})}")
        if truth.get("accepted") is not None and truth["accepted"] != ingest["accepted"]:
            print(f"MISMATCH: generator says {truth['accepted']} accepted, ingest {ingest['accepted']}")
        for line in ingest["log"]:  # type: ignore[attr-defined]
            print("  steps:", line.split(": ", 2)[-1])
        print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
