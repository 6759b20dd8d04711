"""A province's night for the lifecycle steps: 1,000,000 lifecycle rows against 10,000,000 tenures.

    .venv/bin/python benchmarks/bench_lifecycle.py                          # 10M tenures, 1M rows
    .venv/bin/python benchmarks/bench_lifecycle.py --tenures 1000000 --events 100000   # scaled

The state (tenures, number state, history, reminders of the numbers in their freeze) is built
directly in DuckDB, set-based. Day D then carries ``--events`` lifecycle rows (cancel 60%,
suspend 15%, restore 10%, port_out 5%, port_in 3%, illegal ones 4%, a second event of an
already-cancelled number 2%, unknown numbers 1%), ``--events / 50`` reissues and
``--events / 5`` receipts. A fresh subprocess opens the file with ``pipelines.db.client.connect``
(the nightly run's DuckDB settings: memory_limit, threads, temp_directory; the benchmark sets
none of its own) and runs the night's state steps, each in its own transaction, in the
integrator's order: apply_receipts, advance_time, apply_events, schedule_reminders (renders
every reminder due today into the outbox), then a CHECKPOINT (what the commits left to write);
then apply_events once more (the idempotent rerun). It reports wall and CPU time per step, the
night's total, peak RSS (getrusage of that subprocess), the load average around the run (the
machine may be shared: CPU time is the steadier figure) and the ratio to a raw DuckDB scan of
the same input (count(*), and a hash over every column). ``--repeat N`` measures N times,
each on a fresh copy of the built state.
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

D = dt.date(2026, 9, 1)
REGIONS = [
    "BJ",
    "TJ",
    "HE",
    "SX",
    "NM",
    "LN",
    "JL",
    "HL",
    "SH",
    "JS",
    "ZJ",
    "AH",
    "FJ",
    "JX",
    "SD",
    "HA",
    "HB",
    "HN",
    "GD",
    "GX",
    "HI",
    "CQ",
    "SC",
    "GZ",
    "YN",
    "XZ",
    "SN",
    "GS",
    "QH",
    "NX",
    "XJ",
]
SHA = "b" * 64  # the day's lifecycle file
RSHA = "c" * 64  # reissues
CSHA = "d" * 64  # receipts


def _msisdn(i: str) -> str:
    return f"('+861' || lpad(CAST({i} AS VARCHAR), 10, '0'))"


def build(path: Path, tenures: int, events: int) -> dict[str, float]:
    from pipelines import db

    t0 = time.perf_counter()
    con = db.connect(path)
    regions = "[" + ", ".join(f"'{r}'" for r in REGIONS) + "]"
    p = {"d": D}
    # i % 100: 0-84 active, 85-89 frozen, 90-91 suspended, 92 held, 93-97 available, 98-99 ported_out
    con.execute(
        f"""
        CREATE TEMP TABLE base AS
        SELECT i, {_msisdn("i")} AS msisdn, DATE '2010-01-01' + CAST(i % 4000 AS INTEGER) AS tenure_start,
               {regions}[1 + CAST(i % 31 AS INTEGER)] AS region,
               CASE WHEN i % 100 < 85 THEN 'active' WHEN i % 100 < 90 THEN 'frozen'
                    WHEN i % 100 < 92 THEN 'suspended' WHEN i % 100 < 93 THEN 'held'
                    WHEN i % 100 < 98 THEN 'available' ELSE 'ported_out' END AS state,
               $d - CAST(1 + i % 97 AS INTEGER) AS disc
        FROM range({tenures}) t(i)
        """,
        p,
    )
    con.execute(
        """
        INSERT INTO tenures
        SELECT nr_tid, msisdn, tenure_start,
               CASE WHEN state IN ('active', 'suspended') THEN NULL ELSE disc END,
               CASE WHEN state IN ('active', 'suspended') THEN NULL
                    WHEN state = 'ported_out' THEN 'port_out' ELSE 'cancel' END,
               'S' || i, region,
               CASE WHEN i % 2 = 0 THEN 'u' || i || '@example.cn' END,
               CASE WHEN i % 10 < 7 THEN '+8619' || lpad(CAST(i % 1000000000 AS VARCHAR), 9, '0') END,
               CASE WHEN i % 20 = 0 THEN 'en' ELSE 'zh-CN' END, 'snapshot', DATE '2026-01-01'
        FROM (SELECT *, 'T' || substr(sha256(msisdn || '|' || strftime(tenure_start, '%Y-%m-%d')), 1, 20) AS nr_tid
              FROM base)
        ORDER BY i
        """
    )
    con.execute(
        """
        INSERT INTO number_state
        SELECT b.msisdn, b.state, t.tenure_id,
               CASE b.state WHEN 'active' THEN b.tenure_start WHEN 'held' THEN $d - CAST(1 + b.i % 40 AS INTEGER)
                            ELSE b.disc END,
               CASE WHEN b.state IN ('frozen', 'suspended', 'held') THEN b.disc END,
               CASE WHEN b.state IN ('frozen', 'held') THEN 'cancel' WHEN b.state = 'suspended' THEN 'suspend' END,
               CASE WHEN b.state = 'suspended' THEN b.disc END,
               CASE WHEN b.state IN ('frozen', 'held') THEN b.disc END,
               CASE WHEN b.state IN ('frozen', 'held') THEN b.disc + 90
                    WHEN b.state = 'suspended' THEN b.disc + 150 END,
               CASE WHEN b.state = 'held' THEN $d - CAST(1 + b.i % 40 AS INTEGER) END,
               CASE WHEN b.state = 'available' THEN b.disc + 90 END,
               b.region, DATE '2026-08-01'
        FROM base b JOIN tenures t ON t.msisdn = b.msisdn
        ORDER BY b.i
        """,
        p,
    )
    con.execute(
        """
        INSERT INTO state_history
        SELECT msisdn, tenure_id, NULL, state, since, DATE '2026-08-01', 'snapshot', NULL, NULL
        FROM number_state
        """
    )
    # Three reminders per number in its freeze: the past ones sent, most of those delivered.
    con.execute(
        """
        INSERT INTO reminders
        WITH r AS (
            SELECT s.msisdn, s.tenure_id, s.disconnected_on, s.freeze_ends, o.off, o.no,
                   CASE WHEN o.off >= 0 THEN s.disconnected_on + o.off ELSE s.freeze_ends + o.off END AS due
            FROM number_state s, (VALUES (0, 1), (30, 2), (-14, 3)) o(off, no)
            WHERE s.state IN ('frozen', 'suspended', 'held')
        )
        SELECT 'R' || substr(sha256(tenure_id || '|' || strftime(disconnected_on, '%Y-%m-%d') || '|offset:' || off || '|sms'), 1, 20),
               tenure_id, msisdn, disconnected_on, 'offset:' || off, no, no = 3, 'sms', '+8619000000000',
               'zh-CN', due,
               CASE WHEN due >= $d THEN 'scheduled' WHEN hash(msisdn, off) % 3 = 0 THEN 'sent' ELSE 'delivered' END,
               CASE WHEN due >= $d THEN 0 ELSE 1 END, NULL,
               CASE WHEN due < $d THEN due END,
               CASE WHEN due < $d AND hash(msisdn, off) % 3 <> 0 THEN due + 1 END,
               disconnected_on, NULL, false, NULL, freeze_ends, 'cancel'
        FROM r ORDER BY msisdn, no
        """,
        p,
    )
    n_rem = con.execute("SELECT count(*) FROM reminders").fetchone()
    t_state = time.perf_counter() - t0

    t1 = time.perf_counter()
    block = max(tenures // 100, 1)
    con.execute(
        "INSERT INTO files VALUES ('lifecycle_2026-09-01.csv', 'lifecycle', ?, ?, 'ingested', ?, ?, 0, 'utf-8', ',', NULL)",
        [SHA, D, events, events],
    )
    con.execute(
        f"""
        INSERT INTO lifecycle_events
        WITH k AS (SELECT k, k % 100 AS m FROM range({events}) t(k)),
        pick AS (
            SELECT k, m,
                -- (k * prime) % block is a permutation: one event per number and kind, mostly.
                CASE WHEN m < 60 OR (m >= 85 AND m < 90) THEN (k * 7919 % {block}) * 100 + (k // {block}) % 85
                     WHEN m < 75 THEN (k * 7907 % {block}) * 100 + (k // {block} + 40) % 85
                     WHEN m < 85 THEN (k * 7901 % {block}) * 100 + 85 + (k // {block}) % 5
                     WHEN m < 93 THEN {tenures} + k
                     WHEN m < 95 THEN (k * 7883 % {block}) * 100 + 85 + (k // {block}) % 5
                     WHEN m < 97 THEN (k * 7879 % {block}) * 100 + (k // {block} + 20) % 85
                     WHEN m < 99 THEN ((k - 40) * 7919 % {block}) * 100 + ((k - 40) // {block}) % 85
                     ELSE {tenures} + {events} + k END AS i,
                CASE WHEN m < 60 THEN 'cancel' WHEN m < 75 THEN 'suspend' WHEN m < 85 THEN 'restore'
                     WHEN m < 90 THEN 'port_out' WHEN m < 93 THEN 'port_in' WHEN m < 95 THEN 'cancel'
                     WHEN m < 97 THEN 'restore' WHEN m < 99 THEN 'restore' ELSE 'cancel' END AS event
            FROM k
        )
        SELECT '{SHA}', k + 2, $d, {_msisdn("pick.i")}, event, $d,
               {regions}[1 + CAST(pick.i % 31 AS INTEGER)], 'S' || pick.i,
               CASE WHEN m >= 90 AND m < 93 THEN NULL WHEN m = 99 THEN NULL
                    ELSE DATE '2010-01-01' + CAST(pick.i % 4000 AS INTEGER) END,
               CASE WHEN k % 2 = 0 THEN 'u' || pick.i || '@example.cn' END,
               CASE WHEN k % 10 < 7 THEN '+8619' || lpad(CAST(pick.i % 1000000000 AS VARCHAR), 9, '0') END,
               CASE WHEN k % 20 = 0 THEN 'en' ELSE 'zh-CN' END
        FROM pick ORDER BY k
        """,
        p,
    )
    reissues = max(events // 50, 1)
    con.execute(
        "INSERT INTO files VALUES ('reissue_2026-09-01.csv', 'reissue', ?, ?, 'ingested', ?, ?, 0, 'utf-8', ',', NULL)",
        [RSHA, D, reissues, reissues],
    )
    con.execute(
        f"""
        INSERT INTO reissue_events
        SELECT '{RSHA}', k + 2, $d, {_msisdn(f"((k * 7873 % {block}) * 100 + 93 + (k // {block}) % 5)")}, $d,
               'GD', 'N' || k
        FROM range({reissues}) t(k)
        """,
        p,
    )
    receipts = max(events // 5, 1)
    con.execute(
        "INSERT INTO files VALUES ('receipts_2026-09-01.csv', 'receipts', ?, ?, 'ingested', ?, ?, 0, 'utf-8', ',', NULL)",
        [CSHA, D, receipts, receipts],
    )
    con.execute(
        f"""
        INSERT INTO receipt_rows
        SELECT '{CSHA}', row_number() OVER (ORDER BY reminder_id) + 1, $d, reminder_id, channel,
               CASE WHEN hash(reminder_id) % 10 = 0 THEN 'failed' ELSE 'delivered' END,
               CAST($d - 1 AS TIMESTAMP) + INTERVAL 10 HOUR, 'gw'
        FROM reminders WHERE status = 'sent' ORDER BY reminder_id LIMIT {receipts}
        """,
        p,
    )
    con.execute("CHECKPOINT")
    con.close()
    return {
        "build_state_s": round(t_state, 1),
        "build_day_s": round(time.perf_counter() - t1, 1),
        "reminders_on_record": int(n_rem[0]) if n_rem else 0,
    }


class _NullChannel:
    """Accepts everything at once: measures the send step's own cost, not a gateway's."""

    def __init__(self, name: str) -> None:
        self.name = name

    def send_batch(self, reminders: object) -> object:
        from pipelines.reminders.channels import BatchOutcome, SendResult

        at = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
        return BatchOutcome(tuple(SendResult(r.reminder_id, r.channel, "x", at) for r in reminders), ())  # type: ignore[attr-defined]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(path: Path, send: bool = False) -> dict[str, object]:
    import duckdb

    import pipelines.lifecycle as lc
    import pipelines.reminders as rm
    from pipelines import db
    from pipelines.config import Settings

    settings = Settings()  # CN defaults: 90-day freeze, 60-day 双停, reminders 0/30/-14
    if os.environ.get("BENCH_PROFILE"):
        slow: list[tuple[float, str]] = []
        from pipelines.lifecycle import advance, events, queue
        from pipelines.lifecycle import sql as lc_sql

        inner = lc_sql.run_sql

        def timed(
            con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None
        ) -> duckdb.DuckDBPyConnection:
            t0 = time.perf_counter()
            res = inner(con, sql, params)
            slow.append((time.perf_counter() - t0, " ".join(sql.split())[:110]))
            return res

        from pipelines.reminders import receipts, render, schedule, send

        for module in (lc_sql, events, advance, queue, receipts, schedule, render, send):
            if hasattr(module, "run_sql"):
                module.run_sql = timed  # type: ignore[attr-defined]
        import atexit

        atexit.register(lambda: [print(f"{d:7.2f}s {q}", file=sys.stderr) for d, q in sorted(slow)[-25:]])
    out: dict[str, object] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    con = db.connect(path)  # the nightly run's settings, nothing of the benchmark's own
    out["duckdb_settings"] = dict(
        con.execute(
            """
        SELECT name, value FROM duckdb_settings()
        WHERE name IN ('memory_limit', 'threads', 'temp_directory', 'preserve_insertion_order')
        ORDER BY name
        """
        ).fetchall()
    )
    t = time.perf_counter()
    n = con.execute("SELECT count(*) FROM lifecycle_events WHERE logical_date = ?", [D]).fetchone()
    out["scan_count_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    con.execute(
        """
        SELECT sum(hash(msisdn, event, effective_date, region, subscriber_ref, tenure_start,
                        contact_email, contact_phone, language))
        FROM lifecycle_events WHERE logical_date = ?
        """,
        [D],
    ).fetchone()
    out["scan_all_columns_s"] = round(time.perf_counter() - t, 3)
    out["lifecycle_rows"] = int(n[0]) if n else 0
    out["tenures"] = int((con.execute("SELECT count(*) FROM tenures").fetchone() or (0,))[0])

    def step(name: str, fn: object) -> object:
        t0, c0 = time.perf_counter(), _cpu_s()
        con.execute("BEGIN TRANSACTION")
        report = fn(con, settings, D)  # type: ignore[operator]
        t1 = time.perf_counter()
        con.execute("COMMIT")
        out[f"{name}_s"] = round(time.perf_counter() - t0, 2)
        out[f"{name}_commit_s"] = round(time.perf_counter() - t1, 2)
        out[f"{name}_cpu_s"] = round(_cpu_s() - c0, 2)
        return report

    t_all, c_all = time.perf_counter(), _cpu_s()
    out["receipts_report"] = repr(step("apply_receipts", rm.apply_receipts))
    out["advance_report"] = repr(step("advance_time", lc.advance_time))
    out["events_report"] = repr(step("apply_events", lc.apply_events))
    out["schedule_report"] = repr(step("schedule_reminders", rm.schedule_reminders))
    t = time.perf_counter()
    con.execute("CHECKPOINT")  # whatever the commits' automatic checkpoints left to write
    out["checkpoint_s"] = round(time.perf_counter() - t, 2)
    out["night_s"] = round(time.perf_counter() - t_all, 2)
    out["night_cpu_s"] = round(_cpu_s() - c_all, 2)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out["rerun_report"] = repr(step("apply_events_rerun", lc.apply_events))
    if send:
        t0 = time.perf_counter()
        channels = {n: _NullChannel(n) for n in ("sms", "email", "letter")}
        out["send_report"] = repr(rm.send_reminders(con, settings, D, channels))  # type: ignore[arg-type]
        out["send_reminders_s"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    scan_all = max(float(out["scan_all_columns_s"]), 1e-3)  # type: ignore[arg-type]
    scan_count = max(float(out["scan_count_s"]), 1e-3)  # type: ignore[arg-type]
    for key in ("apply_events", "night"):
        took = float(out[f"{key}_s"])  # type: ignore[arg-type]
        out[f"{key}_vs_scan_count"] = round(took / scan_count)
        out[f"{key}_vs_scan_all_columns"] = round(took / scan_all)
    con.close()
    return out


_SUMMARY = ("apply_receipts", "advance_time", "apply_events", "schedule_reminders")


def _summary(figures: dict[str, object]) -> str:
    rows = [f"{'step':<22}{'wall s':>9}{'cpu s':>9}{'commit s':>10}"]
    for name in _SUMMARY:
        rows.append(
            f"{name:<22}{figures[f'{name}_s']:>9}{figures[f'{name}_cpu_s']:>9}"
            f"{figures[f'{name}_commit_s']:>10}"
        )
    rows.append(f"{'checkpoint':<22}{figures['checkpoint_s']:>9}")
    rows.append(f"{'night':<22}{figures['night_s']:>9}{figures['night_cpu_s']:>9}")
    rows.append(
        f"peak RSS {figures['peak_rss_mib']} MiB (limit {figures.get('duckdb_settings', {})}); "  # type: ignore[union-attr]
        f"load {figures['load_before']} -> {figures['load_after']}"
    )
    rows.append(
        f"night = {figures['night_vs_scan_all_columns']}x a hash over every column of the day's "
        f"lifecycle rows ({figures['scan_all_columns_s']} s), "
        f"{figures['night_vs_scan_count']}x count(*) ({figures['scan_count_s']} s); "
        f"apply_events = {figures['apply_events_vs_scan_all_columns']}x the hash scan"
    )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenures", type=int, default=10_000_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument(
        "--memory-limit",
        help="run with RECYCLE_DUCKDB_MEMORY_LIMIT set to this "
        "(default: pipelines.db.client.connect's own default)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="measure this many times, each on a fresh copy")
    ap.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--build-only", action="store_true", help="build the state in --dir and stop")
    ap.add_argument("--send", action="store_true", help="also time send_reminders with a null channel")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.send)))
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    work.mkdir(parents=True, exist_ok=True)
    built = work / "built.duckdb"
    built.unlink(missing_ok=True)
    env = dict(os.environ)
    if args.memory_limit:
        env["RECYCLE_DUCKDB_MEMORY_LIMIT"] = args.memory_limit
    try:
        figures: dict[str, object] = {"tenures_built": args.tenures, "events": args.events}
        figures.update(build(built, args.tenures, args.events))
        print(f"built: {figures}", flush=True)
        if args.build_only:
            return
        for i in range(args.repeat):
            db = work / "state.duckdb"
            shutil.copyfile(built, db)
            shutil.rmtree(work / "state.duckdb.tmp", ignore_errors=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--measure", str(db), *(["--send"] if args.send else [])],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.stderr.strip():
                print(proc.stderr, file=sys.stderr)
            run = dict(figures)
            run.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            # The measuring subprocess's peak as its parent sees it (includes nothing else).
            run["children_peak_rss_mib"] = round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            )
            run["db_size_mib"] = round(db.stat().st_size / 2**20)
            print(json.dumps(run, indent=2))
            print(f"--- run {i + 1} of {args.repeat}\n{_summary(run)}", flush=True)
            db.unlink()
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
