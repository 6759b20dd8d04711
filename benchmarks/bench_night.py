"""The whole night, sending included: a 1,000,000-row day on 10,000,000 tenures.

    .venv/bin/python benchmarks/bench_night.py                               # 10M tenures, 1M rows
    .venv/bin/python benchmarks/bench_night.py --tenures 1000000 --rows 100000   # scaled
    .venv/bin/python benchmarks/bench_night.py --channels-only --messages 5000   # channels alone
    .venv/bin/python benchmarks/bench_night.py --sms smpp     # SMS over the SMSC only (default: both)

The state is built as ``bench_lifecycle.py`` builds it (set-based, in DuckDB), then made a real
data directory: contacts sealed (``contact_seal``, as go-live does) and the day's rows written as
the carrier's drop files in ``inbox/D`` (lifecycle, reissues, receipts). Each nightly step then
runs through ``run_step`` in a fresh subprocess of its own, as Airflow runs each task: ingest,
receipts, advance, events, schedule, send, ledger ("wall s" is the step, "process s" adds the
process's start and imports; the night's wall counts the processes; peak RSS is per step). Send goes through the real channels
to the loopback simulators (SMTP, HTTP SMS, and the SMSC over SMPP: SMS batches alternate
between the two) running in ANOTHER process, so the night and the gateways do not share a GIL;
the SMPP receipts that come on the bind are applied the same night, the simulators' receipts
of e-mail and HTTP SMS are written as the next night's drop and ingested and applied after
the night (``receipts D+1``, reported apart). Printed: per step wall and CPU seconds, peak RSS,
messages/s per channel, the load average, and the ratio of the night to DuckDB's own load of
the day's drop files (``CREATE TABLE AS SELECT * FROM read_csv``) measured in the same run.

``--bookkeeping`` measures the send step's own cost per reminder with a channel that accepts at
once (no gateway): everything but the round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_lifecycle as bl  # noqa: E402  (a sibling script, not a package)

D = bl.D
DROPS = {  # table -> (drop file, its columns as the drop spells them, the table's expressions)
    "lifecycle_events": (
        f"lifecycle_{D}.csv",
        "msisdn, event, effective_date, region, subscriber_ref, tenure_start, "
        "contact_email::VARCHAR AS contact_email, contact_phone::VARCHAR AS contact_phone, language",
    ),
    "reissue_events": (f"reissue_{D}.csv", "msisdn, reissue_date, region, subscriber_ref"),
    "receipt_rows": (
        f"receipts_{D - dt.timedelta(days=1)}.csv",  # the gateways' receipts of night D-1, as named
        'reminder_id, channel, status, strftime("at", \'%Y-%m-%dT%H:%M:%SZ\') AS "at", provider_ref',
    ),
}


def rss_mib() -> int:
    """The peak RSS of this process so far (the step that raised it is the first to show it).

    VmHWM, not ``ru_maxrss``: Linux keeps ``ru_maxrss`` across exec, so a step's process started
    by a parent that built a 3 GiB state reported 3 GiB whatever it used itself."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


# --------------------------------------------------------------------------- building


def build(data: Path, tenures: int, rows: int, first: int = 0) -> dict[str, Any]:
    """bench_lifecycle's state, turned into a data directory whose day D is still in drop files.
    ``first``: the numbers start at +86139 followed by ``first`` (provinces hold other numbers)."""
    from pipelines import db

    state = data / "state.duckdb"
    # Mobile numbers (+86 139...): bench_lifecycle's +86 10... are not, and ingest would
    # quarantine every row of the day as bad_number.
    bl._msisdn = lambda i: f"('+86139' || lpad(CAST({i} + {first} AS VARCHAR), 8, '0'))"
    figures = bl.build(state, tenures, rows)
    t0 = time.perf_counter()
    inbox = data / "inbox" / str(D)
    inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    con = db.connect(state)
    for table, (name, columns) in DROPS.items():
        con.execute(
            f"COPY (SELECT {columns} FROM {table} WHERE logical_date = $d ORDER BY line_no) "
            f"TO '{inbox / name}' (FORMAT csv, HEADER true)",
            {"d": D},
        )
        con.execute(f"DELETE FROM {table} WHERE logical_date = $d", {"d": D})
        (inbox / name).chmod(0o600)
    con.execute("DELETE FROM files WHERE logical_date = $d", {"d": D})
    # Go-live seals every contact (bench_lifecycle stores them in clear: it never opens one).
    for table, cols in (("tenures", ("contact_email", "contact_phone")), ("reminders", ("address",))):
        sealed = ", ".join(f"contact_seal({c}::VARCHAR) AS {c}" for c in cols)
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * REPLACE ({sealed}) FROM {table}")
    con.execute("CHECKPOINT")
    con.close()
    figures["drops_and_sealing_s"] = round(time.perf_counter() - t0, 1)
    return figures


# --------------------------------------------------------------------------- simulators


def serve_simulators(day: dt.date, seed: int) -> None:
    """Child process: SMTP + HTTP SMS + SMSC on loopback; endpoints on stdout; on a line
    ``<inbox> <letters>`` from stdin, the e-mail/SMS receipts drop written; EOF stops."""
    from pipelines.config import Settings
    from pipelines.dev.simulators import GatewaySimulator, write_receipts
    from pipelines.dev.smsc import SmscSimulator

    settings = Settings()
    night = settings.day_start(day) + dt.timedelta(hours=20)
    with (
        GatewaySimulator() as sim,
        SmscSimulator(seed=seed, zone=settings.zone, receipt_clock=lambda: night) as smsc,
    ):
        s = smsc.settings()
        endpoints = {
            "smtp_port": sim.smtp_settings().port,
            "sms_url": sim.sms_settings().url,
            "smpp_port": s.port,
        }
        print(json.dumps(endpoints), flush=True)
        for line in sys.stdin:
            inbox, letters = line.split()
            t0 = time.perf_counter()
            accepted = sim.drain()
            path = write_receipts(accepted, Path(letters), day, Path(inbox), seed)
            print(json.dumps({"receipts": str(path), "accepted": len(accepted),
                              "write_receipts_s": round(time.perf_counter() - t0, 2)}), flush=True)  # fmt: skip
    u = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"simulators_cpu_s": round(u.ru_utime + u.ru_stime, 1)}), flush=True)


@contextlib.contextmanager
def simulators(day: dt.date, seed: int = 7) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-simulators"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(60)


# --------------------------------------------------------------------------- channels


class Timed:
    """Wraps a channel: wall seconds spent in its batches and messages sent, for messages/s."""

    def __init__(self, inner: Any, label: str) -> None:
        self.name, self.inner, self.label = inner.name, inner, label
        self.seconds, self.sent = 0.0, 0

    def send_batch(self, reminders: Sequence[Any], on_accepted: Any = None) -> Any:
        t0 = time.perf_counter()
        out = self.inner.send_batch(reminders, on_accepted)
        self.seconds += time.perf_counter() - t0
        self.sent += len(out.sent)
        return out


class Alternating:
    """SMS batches alternately over SMPP and the HTTP gateway: both channels carry the night."""

    name = "sms"

    def __init__(self, *channels: Timed) -> None:
        self.channels, self.n = channels, 0

    def send_batch(self, reminders: Sequence[Any], on_accepted: Any = None) -> Any:
        self.n += 1
        return self.channels[self.n % len(self.channels)].send_batch(reminders, on_accepted)


def channels_for(
    endpoints: dict[str, Any], settings: Any, letters_dir: Path, sms: str = "both"
) -> tuple[dict[str, Any], list[Timed]]:
    """The night's channels; ``sms``: "both" (batches alternate HTTP and SMPP: every simulator
    carries the night), "smpp" (a carrier with its own SMSC) or "http" (a gateway only)."""
    from pipelines.config import SmppSettings, SmsSettings, SmtpSettings
    from pipelines.reminders.channels import LetterBatchChannel, SmsHttpChannel, SmtpChannel
    from pipelines.reminders.smpp import SmppChannel

    smpp = SmppSettings(host="127.0.0.1", port=endpoints["smpp_port"], system_id="recycle", password="simpass",
                        source="10086", window=settings.smpp_window, rate=settings.smpp_rate, receipt_grace_s=2.0)  # fmt: skip
    timed = [
        Timed(
            SmtpChannel(SmtpSettings(host="127.0.0.1", port=endpoints["smtp_port"]), local_hostname="bench"),
            "smtp",
        ),
        Timed(SmsHttpChannel(SmsSettings(url=endpoints["sms_url"])), "http_sms"),
        Timed(SmppChannel(smpp, zone=settings.zone, clock=settings.clock), "smpp"),
        Timed(LetterBatchChannel(letters_dir, D), "letter"),
    ]
    by_mode = {"both": Alternating(timed[1], timed[2]), "http": timed[1], "smpp": timed[2]}
    return {"email": timed[0], "sms": by_mode[sms], "letter": timed[3]}, timed


# --------------------------------------------------------------------------- the night


STEPS = ("ingest", "receipts", "advance", "events", "schedule", "send", "ledger")


def measure(data: Path, sms: str = "both") -> dict[str, Any]:
    """The night's steps on ``data``, each in a process of its own as Airflow runs its tasks (so a
    step's peak RSS is its own, not the most any earlier step left behind); figures as JSON.
    The night's wall time includes each process's start and imports, as a real night's does."""
    out: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    t_all, cpu_all = time.perf_counter(), 0.0
    for name in STEPS:
        t0 = time.perf_counter()
        figures = child("--child", "step", "--step", name, "--data", str(data), "--sms", sms)
        figures.pop("children_peak_rss_mib", None)
        wall = round(time.perf_counter() - t0, 2)
        if name == "send":
            out.update({k: v for k, v in figures.items() if k != "send"})
            figures = figures["send"]
        out[name] = {**figures, "process_wall_s": wall}
        cpu_all += figures["cpu_s"]
        print(f"  {name}: {out[name]}", file=sys.stderr, flush=True)
    out["night"] = {"wall_s": round(time.perf_counter() - t_all, 2), "cpu_s": round(cpu_all, 2)}
    out["peak_rss_mib"] = max(out[name]["rss_mib"] for name in STEPS)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def one_step(data: Path, name: str, sms: str = "both") -> dict[str, Any]:
    """Child process: one step through ``run_step`` (send: through the simulators, :func:`send`)."""
    from pipelines.config import Settings
    from pipelines.nightly.steps import RunContext, run_step

    settings = Settings(data_dir=data)
    if name == "send":
        return send(settings, data, sms)
    t0, c0 = time.perf_counter(), cpu_s()
    run_step(settings, D, name, RunContext())
    return {
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(cpu_s() - c0, 2),
        "rss_mib": rss_mib(),
    }


def send(settings: Any, data: Path, sms: str = "both") -> dict[str, Any]:
    """The send step with the real channels against the simulators' process, SMPP receipts applied
    the same night; the other receipts written by the simulators as the next night's drop."""
    from pipelines import db
    from pipelines.layout import Layout
    from pipelines.reminders import send_reminders
    from pipelines.reminders.bind_receipts import finish_smpp_night

    layout = Layout(data)
    letters = layout.outbox_dir / "letters"
    next_inbox = layout.inbox(D + dt.timedelta(days=1))
    out: dict[str, Any] = {}
    knobs = argparse.Namespace(zone=settings.zone, smpp_window=50, smpp_rate=1e6,
                               clock=lambda: settings.day_start(D) + dt.timedelta(hours=20))  # fmt: skip
    with simulators(D) as sim:
        assert sim.stdout is not None and sim.stdin is not None
        endpoints = json.loads(sim.stdout.readline())
        channels, timed = channels_for(endpoints, knobs, letters, sms)
        t0, c0 = time.perf_counter(), cpu_s()
        with db.open_state(layout.state_db) as con:
            report = send_reminders(con, settings, D, channels, journal_dir=layout.outbox_dir / "journal")
            out["send"] = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu_s() - c0, 2),
                           "sent": report.sent, "attempted": report.attempted, "failed": report.failed,
                           "rss_mib": rss_mib()}  # fmt: skip
            for t in timed[:2]:
                t.inner.close()
            t1 = time.perf_counter()
            smpp_report = finish_smpp_night(con, settings, D, timed[2].inner, next_inbox)
            out["smpp_receipts_same_night"] = {
                "wall_s": round(time.perf_counter() - t1, 2),
                "report": repr(smpp_report),
            }
        sim.stdin.write(f"{next_inbox} {letters}\n")
        sim.stdin.flush()
        out["simulated_receipts"] = json.loads(sim.stdout.readline())
        sim.stdin.close()
        out["simulators"] = json.loads(sim.stdout.readline())
    out["messages_per_s"] = {t.label: round(t.sent / t.seconds) if t.seconds else 0 for t in timed}
    out["messages"] = {t.label: t.sent for t in timed}
    out["send"]["reminders_per_s"] = round(report.sent / max(out["send"]["wall_s"], 1e-3))
    return out


def next_night_receipts(data: Path) -> dict[str, Any]:
    """Child process: D+1's ingest of the receipts drop and apply_receipts (after the night)."""
    from pipelines import db
    from pipelines.config import Settings
    from pipelines.ingest.drops import ingest_day
    from pipelines.layout import Layout
    from pipelines.reminders import apply_receipts

    settings = Settings(data_dir=data)
    t0, c0 = time.perf_counter(), cpu_s()
    with db.open_state(Layout(data).state_db) as con:
        ingest_day(settings, D + dt.timedelta(days=1), con)
        with db.transaction(con):
            report = apply_receipts(con, settings, D + dt.timedelta(days=1))
    return {
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(cpu_s() - c0, 2),
        "report": repr(report),
    }


def duckdb_load(inbox: Path) -> float:
    """DuckDB's own load of the day's drop files into a fresh DuckDB file (best of two)."""
    import duckdb

    best = float("inf")
    for i in range(2):
        db_path = inbox.parent.parent / f"load-{i}.duckdb"
        db_path.unlink(missing_ok=True)
        con = duckdb.connect(str(db_path))
        t0 = time.perf_counter()
        for n, f in enumerate(sorted(inbox.glob("*.csv"))):
            con.execute(f"CREATE TABLE t{n} AS SELECT * FROM read_csv(?, ignore_errors = true)", [str(f)])
        con.close()
        best = min(best, time.perf_counter() - t0)
        db_path.unlink(missing_ok=True)
    return best


class NullChannel:
    """Accepts a batch at once, through the journal hook: the send step's bookkeeping alone."""

    def __init__(self, name: str) -> None:
        self.name = name

    def send_batch(self, reminders: Sequence[Any], on_accepted: Any = None) -> Any:
        from pipelines.reminders.channels import BatchOutcome, SendResult

        at = dt.datetime(2026, 9, 1, 12, tzinfo=dt.UTC)
        sent = tuple(SendResult(r.reminder_id, r.channel, "null-" + r.reminder_id, at) for r in reminders)
        for s in sent if on_accepted else ():
            on_accepted(s)
        return BatchOutcome(sent, ())


def bookkeeping(data: Path) -> dict[str, Any]:
    """Child process: the steps up to schedule, then send_reminders with null channels."""
    from pipelines import db
    from pipelines.config import Settings
    from pipelines.layout import Layout
    from pipelines.nightly.steps import RunContext, run_step
    from pipelines.reminders import send_reminders

    settings = Settings(data_dir=data)
    for name in ("ingest", "receipts", "advance", "events", "schedule"):
        run_step(settings, D, name, RunContext())
    layout = Layout(data)
    t0, c0 = time.perf_counter(), cpu_s()
    with db.open_state(layout.state_db) as con:
        channels = {n: NullChannel(n) for n in ("email", "sms", "letter")}
        report = send_reminders(con, settings, D, channels, journal_dir=layout.outbox_dir / "journal")
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = max(report.sent, 1)
    return {"sent": report.sent, "batches": report.batches, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "us_per_reminder_wall": round(wall / n * 1e6, 1), "us_per_reminder_cpu": round(cpu / n * 1e6, 1)}  # fmt: skip


# --------------------------------------------------------------------------- driver


def child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], check=False, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "")
    proc.check_returncode()
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["children_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return result


def summary(run: dict[str, Any]) -> str:
    rows = [f"{'step':<28}{'wall s':>9}{'cpu s':>9}{'peak RSS MiB':>14}{'process s':>11}"]
    for name in (*STEPS, "night"):
        if name in run:
            r = run[name]
            rows.append(
                f"{name:<28}{r['wall_s']:>9}{r['cpu_s']:>9}{r.get('rss_mib', ''):>14}{r.get('process_wall_s', ''):>11}"
            )
    if "receipts_next_night" in run:
        r = run["receipts_next_night"]
        rows.append(f"{'receipts D+1 (ingest+apply)':<28}{r['wall_s']:>9}{r['cpu_s']:>9}")
    if "send" in run:
        rows.append(f"send (SMS over {run.get('sms', 'both')}): {run['send']['reminders_per_s']:,} reminders/s overall; per channel (msgs/s in its "
                    f"batches): {run['messages_per_s']}; messages {run['messages']}")  # fmt: skip
        rows.append(f"simulators' process CPU: {run['simulators']['simulators_cpu_s']} s")
    load = run["duckdb_load_s"]
    rows.append(f"peak RSS {run['peak_rss_mib']} MiB; load {run['load_before']} -> {run['load_after']}")
    rows.append(f"DuckDB's own load of the day's drop files: {load:.2f} s; night = {run['night']['wall_s'] / load:.0f}x that"
                f" (ingest = {run['ingest']['wall_s'] / load:.1f}x)")  # fmt: skip
    return "\n".join(rows)


def channels_only(messages: int) -> None:
    """The three channels against the simulators' process, ``messages`` each, 1,000 a batch."""
    from pipelines.config import Settings
    from pipelines.reminders.channels import OutgoingReminder

    text = "尊敬的用户，您的号码138****0001将于2026-12-01回收。如需保留号码请在此日期前办理复机。"
    em = [
        OutgoingReminder(f"RE{i:08d}", "email", f"u{i}@example.cn", "zh-CN", "号码回收提醒", text, D)
        for i in range(messages)
    ]
    sm = [
        OutgoingReminder(f"RS{i:08d}", "sms", f"+86139{i:08d}", "zh-CN", "", text, D) for i in range(messages)
    ]
    settings = Settings()
    knobs = argparse.Namespace(
        zone=settings.zone, smpp_window=50, smpp_rate=1e6, clock=lambda: dt.datetime.now(dt.UTC)
    )
    print(f"load {os.getloadavg()}")
    with simulators(D) as sim, tempfile.TemporaryDirectory() as tmp:
        assert sim.stdout is not None
        _, timed = channels_for(json.loads(sim.stdout.readline()), knobs, Path(tmp))
        for t, msgs in zip(timed[:3], (em, sm, sm), strict=True):
            c0 = cpu_s()
            for i in range(0, messages, 1000):
                t.send_batch(msgs[i : i + 1000])
            t.inner.close()
            print(f"{t.label}: {t.sent / t.seconds:,.0f} messages/s, {(cpu_s() - c0) / messages * 1e6:.0f} µs CPU "
                  f"a message in this process")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenures", type=int, default=10_000_000)
    ap.add_argument("--rows", type=int, default=1_000_000, help="lifecycle rows of the day")
    ap.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--bookkeeping", action="store_true", help="the send step with null channels")
    ap.add_argument("--sms", choices=["both", "smpp", "http"], default="both",
                    help="SMS over both (alternate batches), the SMSC only, or the HTTP gateway only")  # fmt: skip
    ap.add_argument("--channels-only", action="store_true")
    ap.add_argument("--messages", type=int, default=5000, help="with --channels-only")
    ap.add_argument("--serve-simulators", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["step", "bookkeeping", "receipts"], help=argparse.SUPPRESS)
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_simulators:
        return serve_simulators(D, 7)
    if args.channels_only:
        return channels_only(args.messages)
    if args.child:
        fn = {
            "step": lambda d: one_step(d, args.step, args.sms),
            "bookkeeping": bookkeeping,
            "receipts": next_night_receipts,
        }
        print(json.dumps(fn[args.child](args.data)))
        return None
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-night-"))
    try:
        data = work / "data"
        shutil.rmtree(data, ignore_errors=True)
        t0 = time.perf_counter()
        figures: dict[str, Any] = {
            "tenures": args.tenures,
            "rows": args.rows,
            **build(data, args.tenures, args.rows),
        }
        figures["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"built: {figures}", flush=True)
        if args.bookkeeping:
            print(json.dumps(child("--child", "bookkeeping", "--data", str(data))))
            return None
        run = {**figures, "sms": args.sms, **measure(data, args.sms)}
        run["receipts_next_night"] = child("--child", "receipts", "--data", str(data))
        run["duckdb_load_s"] = duckdb_load(data / "inbox" / str(D))
        print(json.dumps(run, indent=1, default=str))
        print(summary(run), flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return None


if __name__ == "__main__":
    main()
