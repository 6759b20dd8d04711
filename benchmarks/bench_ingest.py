"""Ingest benchmark: one big lifecycle drop through ``ingest_day`` vs DuckDB's raw CSV scan.

Target (issue 2): a 1,000,000-row lifecycle CSV ingested in <= 10x the wall time of
``SELECT count(*) FROM read_csv(file)``, with peak RSS <= 3 GiB, on 2 cores. The scan is run
with ``ignore_errors = true``: without it DuckDB's sniffer refuses a file with defects.

    .venv/bin/python benchmarks/bench_ingest.py [--rows 1000000] [--defect-rate 0.01] [--repeat 3] [--dir DIR]

The file is generated once; each ingest runs in a fresh process on a fresh data directory
(the file hard-linked into its inbox, the phone-number class cache that a nightly data
directory keeps from its first night copied in; deciding the classes is timed apart); peak
RSS is that process's ``ru_maxrss``. Import time
(Great Expectations alone takes seconds) is reported apart from the ingest itself. The
machine is shared: the best and the median of ``--repeat`` runs are printed, with the load
average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DAY = dt.date(2026, 1, 5)
ROOT = Path(__file__).resolve().parent.parent


def _generate(path: Path, rows: int, defect_rate: float) -> dict[str, object]:
    try:
        from pipelines.dev.synth import generate_lifecycle_day
    except ImportError:  # synth not there yet: a plain generator, no defects
        return _plain_generate(path, rows)
    truth = generate_lifecycle_day(path, DAY, rows, seed=1, defect_rate=defect_rate)
    return {
        "generator": "pipelines.dev.synth",
        "rows": truth.rows,
        "accepted": truth.accepted,
        "quarantined": truth.quarantined,
    }


def _plain_generate(path: Path, rows: int) -> dict[str, object]:
    rng = random.Random(1)
    prefixes = ["134", "135", "138", "139", "150", "158", "186", "188", "199"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(
            "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n"
        )
        for i in range(rows):
            fh.write(f"{rng.choice(prefixes)}{i:08d},cancel,{DAY},GD,S{i:010d},2020-01-01,,,zh-CN\n")
    return {"generator": "plain", "rows": rows, "accepted": rows, "quarantined": 0}


def _child_ingest(data_dir: Path) -> None:
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  (import cost reported apart)

    from pipelines.config import load_settings
    from pipelines.ingest.drops import ingest_day

    imported = time.perf_counter() - t0
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("pipelines.ingest.drops").setLevel(logging.DEBUG)  # per-step wall times
    settings = load_settings(env={}, data_dir=data_dir)
    t1 = time.perf_counter()
    report = ingest_day(settings, DAY)
    wall = time.perf_counter() - t1
    f = report.files[0]
    print(
        json.dumps(
            {
                "import_s": imported,
                "ingest_s": wall,
                "cpu_s": time.process_time(),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "status": f.status,
                "rows_in": f.rows_in,
                "accepted": f.accepted,
                "quarantined": f.quarantined,
                "reasons": dict(f.quarantined_by_reason),
                "gx_rows": f.gx_rows,
                "gx_success": f.gx_success,
            }
        )
    )


def _child_classes(data_dir: Path) -> None:
    from pipelines.ingest.phone_classes import class_table
    from pipelines.layout import Layout

    t0 = time.perf_counter()
    class_table("CN", Layout(data_dir).cache_dir)
    print(json.dumps({"classes_s": time.perf_counter() - t0}))


def _child_scan(csv_path: Path) -> None:
    import duckdb

    con = duckdb.connect()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        # ignore_errors: DuckDB's dialect sniffer gives up on a file with malformed lines otherwise
        con.execute("SELECT count(*) FROM read_csv(?, ignore_errors = true)", [str(csv_path)]).fetchall()
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "scan_s": min(times),
                "scan_all_s": times,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def _child_load(csv_path: Path) -> None:
    """For context: DuckDB's own load of the file into a table of a DuckDB file, no checks."""
    import duckdb

    times = []
    for i in range(2):
        db = csv_path.parent / f"load-{i}.duckdb"
        db.unlink(missing_ok=True)
        con = duckdb.connect(str(db))
        t0 = time.perf_counter()
        con.execute("CREATE TABLE t AS SELECT * FROM read_csv(?, ignore_errors = true)", [str(csv_path)])
        con.close()
        times.append(time.perf_counter() - t0)
        db.unlink(missing_ok=True)
    print(json.dumps({"load_s": min(times)}))


def _run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["log"] = [
        line for line in out.stderr.splitlines() if line.startswith("DEBUG:pipelines.ingest.drops")
    ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--defect-rate", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3, help="ingest runs (fresh process and data dir each)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="work folder (default: a temp folder, removed)"
    )
    parser.add_argument("--child", choices=["ingest", "scan", "classes", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        children = {
            "ingest": _child_ingest,
            "scan": _child_scan,
            "classes": _child_classes,
            "load": _child_load,
        }
        children[args.child](args.path)
        return

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        source = work / "source" / f"lifecycle_{DAY.isoformat()}.csv"
        shutil.rmtree(source.parent, ignore_errors=True)
        source.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        truth = _generate(source, args.rows, args.defect_rate)
        print(
            f"generated {source.stat().st_size / 2**20:.0f} MiB, {truth} in {time.perf_counter() - t0:.1f} s"
        )
        load_before = os.getloadavg()

        # A nightly data directory keeps the decided phone-number classes (pipelines/
        # ingest_numbers.class_table) from its first night on; each run starts with a copy.
        warm = work / "warm"
        shutil.rmtree(warm, ignore_errors=True)
        classes = _run_child("--child", "classes", "--path", str(warm))
        print(
            f"phone-number classes decided once per data directory and phonenumbers version: "
            f"{float(classes['classes_s']):.1f} s (not in the figures below)"
        )
        scans = [_run_child("--child", "scan", "--path", str(source))]
        runs: list[dict[str, Any]] = []
        for i in range(args.repeat):
            data_dir = work / f"var-{i}"
            shutil.rmtree(data_dir, ignore_errors=True)
            inbox = data_dir / "inbox" / DAY.isoformat()
            inbox.mkdir(parents=True)
            os.link(source, inbox / source.name)
            shutil.copytree(warm / "cache", data_dir / "cache")
            runs.append(_run_child("--child", "ingest", "--path", str(data_dir)))
            shutil.rmtree(data_dir, ignore_errors=True)
        scans.append(_run_child("--child", "scan", "--path", str(source)))
        raw = min(float(s["scan_s"]) for s in scans)
        load = float(_run_child("--child", "load", "--path", str(source))["load_s"])
        print(f"raw scan (DuckDB count(*) read_csv ignore_errors, best of {3 * len(scans)}): {raw:.3f} s")
        print(
            f"for context, DuckDB's own load of the file into a table (CREATE TABLE AS read_csv, no checks): {load:.3f} s"
        )
        for i, run in enumerate(runs):
            wall = float(run["ingest_s"])
            print(
                f"run {i + 1}: ingest_day {wall:.2f} s wall, {float(run['cpu_s']):.1f} s CPU incl. imports "
                f"(+{float(run['import_s']):.1f} s imports), {int(run['rows_in']) / wall:,.0f} rows/s, "
                f"peak RSS {float(run['peak_rss_mib']):,.0f} MiB, ratio {wall / raw:.1f}x"
            )
            for line in run["log"]:
                print("  steps:", line.split(": ", 2)[-1])
        walls = sorted(float(r["ingest_s"]) for r in runs)
        best, median = walls[0], statistics.median(walls)
        rows_in = int(runs[0]["rows_in"])
        peak = max(float(r["peak_rss_mib"]) for r in runs)
        print(
            f"ingest_day best {best:.2f} s ({rows_in / best:,.0f} rows/s), median {median:.2f} s "
            f"({rows_in / median:,.0f} rows/s); peak RSS {peak:,.0f} MiB (target <= 3072)"
        )
        print(f"ratio ingest / raw scan: best {best / raw:.1f}x, median {median / raw:.1f}x (target <= 10x)")
        print(f"ratio ingest / DuckDB's own load: best {best / load:.1f}x, median {median / load:.1f}x")
        first = runs[0]
        print(
            f"result: {json.dumps({k: first[k] for k in ('status', 'rows_in', 'accepted', 'quarantined', 'gx_rows', 'gx_success', 'reasons')})}"
        )
        if any(r["accepted"] != first["accepted"] or r["reasons"] != first["reasons"] for r in runs):
            print("MISMATCH: the runs disagree")
        if truth.get("accepted") is not None and truth["accepted"] != first["accepted"]:
            print(f"MISMATCH: generator says {truth['accepted']} accepted, ingest {first['accepted']}")
        load_after = os.getloadavg()
        print(
            f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, "
            f"after {'/'.join(f'{x:.1f}' for x in load_after)}, on {os.cpu_count()} cores"
        )
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
