"""The night split by province (issue 17): per-worker figures, the speed-up of provinces at once
over one at a time on this machine, and the sequencer's ceiling.

    .venv/bin/python benchmarks/bench_provinces.py                         # 4 x 250,000 tenures, 25,000 rows
    .venv/bin/python benchmarks/bench_provinces.py --provinces 8 --tenures 8000000 --rows 800000

Each province's data directory is built as ``bench_night.py`` builds one (bench_lifecycle's
state, the day D still in drop files), with numbers of its own. The province steps (ingest,
receipts, advance, events, schedule, and send through channels that accept at once: the
gateway round trip is bench_night's subject) run in a fresh process per province, as a Celery
worker runs a mapped task: (a) one province at a time, (b) ``--workers`` at once from a queue,
on copies of the same built state. Then the sequencer (ledger, feeds, snapshot: one process)
on (b)'s provinces: entries appended per second is its ceiling. Printed: wall and CPU per
province, both totals and their ratio, the sequencer's steps, peak RSS, and the ratio to
DuckDB's own load of all the provinces' drop files measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_night as bn  # noqa: E402  (a sibling script, not a package)

D = bn.D
CODES = ("AH", "BJ", "CQ", "FJ", "GD", "GS", "GX", "GZ", "HA", "HB", "HE", "HI", "HL", "HN", "JL", "JS")
PROVINCE_STEPS = ("ingest", "receipts", "advance", "events", "schedule")


def _settings(data: Path, codes: list[str]) -> Any:
    from pipelines.config import Settings

    return Settings(data_dir=data, provinces=tuple(codes))


def province_night(data: Path, codes: list[str], code: str) -> dict[str, Any]:
    """Child process: one province's steps, send with null channels; figures as JSON."""
    from pipelines import db
    from pipelines.layout import Layout
    from pipelines.nightly.steps import RunContext, run_step
    from pipelines.reminders import send_reminders

    settings = _settings(data, codes)
    t0, c0 = time.perf_counter(), bn.cpu_s()
    for name in PROVINCE_STEPS:
        run_step(settings, D, name, RunContext(), code)
    layout = Layout(settings.for_province(code).data_dir)
    with db.open_state(layout.state_db) as con:
        channels = {n: bn.NullChannel(n) for n in ("email", "sms", "letter")}
        sent = send_reminders(con, settings, D, channels, journal_dir=layout.outbox_dir / "journal").sent
    return {"province": code, "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(bn.cpu_s() - c0, 2), "rss_mib": bn.rss_mib(), "sent": sent}  # fmt: skip


def sequencer(data: Path, codes: list[str]) -> dict[str, Any]:
    """Child process: the national steps over every province; figures as JSON."""
    from pipelines.nightly.steps import RunContext, run_step

    settings = _settings(data, codes)
    out: dict[str, Any] = {}
    for name in ("ledger", "feeds", "snapshot"):
        t0, c0 = time.perf_counter(), bn.cpu_s()
        report = run_step(settings, D, name, RunContext())
        out[name] = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(bn.cpu_s() - c0, 2),
                     "rss_mib": bn.rss_mib()}  # fmt: skip
        if name == "ledger":
            out[name]["appended"] = report["ledger"]["appended"]
    out["entries_per_s"] = round(out["ledger"]["appended"] / max(out["ledger"]["wall_s"], 1e-9))
    return out


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], check=False, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        proc.check_returncode()
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_provinces(data: Path, codes: list[str], workers: int) -> dict[str, Any]:
    """Every province's night, ``workers`` processes at a time (1: one province at a time)."""
    names = ",".join(codes)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        per = list(pool.map(lambda c: _child("--child", "province", "--data", str(data), "--codes", names,
                                             "--code", c), codes))  # fmt: skip
    return {"workers": workers, "wall_s": round(time.perf_counter() - t0, 2), "provinces": per}


def build_all(root: Path, codes: list[str], tenures: int, rows: int) -> dict[str, Any]:
    from pipelines.config import province_dir

    t0 = time.perf_counter()
    each_t, each_r = tenures // len(codes), rows // len(codes)
    for k, code in enumerate(codes):
        bn.build(province_dir(root, code), each_t, each_r, first=k * each_t)
    return {
        "tenures_per_province": each_t,
        "rows_per_province": each_r,
        "build_s": round(time.perf_counter() - t0, 1),
    }


def duckdb_load_all(root: Path, codes: list[str]) -> float:
    from pipelines.config import province_dir

    return round(sum(bn.duckdb_load(province_dir(root, c) / "inbox" / str(D)) for c in codes), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--provinces", type=int, default=4, choices=range(1, len(CODES) + 1), metavar="N")
    ap.add_argument("--tenures", type=int, default=1_000_000, help="all provinces together")
    ap.add_argument("--rows", type=int, default=100_000, help="the day's lifecycle rows, all provinces")
    ap.add_argument("--workers", type=int, default=2, help="provinces at once in (b)")
    ap.add_argument("--child", choices=["province", "sequencer"], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--codes", help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        codes = args.codes.split(",")
        result = (
            province_night(args.data, codes, args.code)
            if args.child == "province"
            else sequencer(args.data, codes)
        )
        print(json.dumps(result))
        return
    codes = sorted(CODES[: args.provinces])
    work = Path(tempfile.mkdtemp(prefix="bench-provinces-"))
    try:
        built = work / "built"
        figures: dict[str, Any] = {"provinces": len(codes), "tenures": args.tenures, "rows": args.rows,
                                   **build_all(built, codes, args.tenures, args.rows)}  # fmt: skip
        print(f"built: {figures}", flush=True)
        figures["duckdb_load_s"] = duckdb_load_all(built, codes)
        one, many = work / "one", work / "many"
        shutil.copytree(built, one)
        shutil.copytree(built, many)
        figures["one_at_a_time"] = run_provinces(one, codes, 1)
        figures["at_once"] = run_provinces(many, codes, args.workers)
        figures["sequencer"] = _child("--child", "sequencer", "--data", str(many), "--codes", ",".join(codes))
        figures["children_peak_rss_mib"] = round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        )
        print(json.dumps(figures, indent=1))
        print(summary(figures), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summary(f: dict[str, Any]) -> str:
    one, many, seq = f["one_at_a_time"], f["at_once"], f["sequencer"]
    per = one["provinces"]
    mean_wall = sum(p["wall_s"] for p in per) / len(per)
    night = many["wall_s"] + sum(seq[s]["wall_s"] for s in ("ledger", "feeds", "snapshot"))
    return "\n".join([
        f"{f['provinces']} provinces x {f['tenures_per_province']:,} tenures, {f['rows_per_province']:,} rows each",
        f"  one province, one worker: {mean_wall:.1f} s wall (mean), "
        f"{sum(p['cpu_s'] for p in per) / len(per):.1f} s CPU, {max(p['rss_mib'] for p in per)} MiB peak",
        f"  provinces one at a time: {one['wall_s']:.1f} s; {many['workers']} at once: {many['wall_s']:.1f} s "
        f"(speed-up {one['wall_s'] / many['wall_s']:.2f}x)",
        f"  sequencer: ledger {seq['ledger']['wall_s']:.1f} s ({seq['ledger']['appended']:,} entries, "
        f"{seq['entries_per_s']:,}/s), feeds {seq['feeds']['wall_s']:.1f} s, snapshot {seq['snapshot']['wall_s']:.1f} s",
        f"  the split night: {night:.1f} s = {night / f['duckdb_load_s']:.1f}x DuckDB's own load of the drops "
        f"({f['duckdb_load_s']:.2f} s); children's peak RSS {f['children_peak_rss_mib']} MiB",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
