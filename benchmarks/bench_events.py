"""Events: the bookkeeping of fanning events out to 100 subscriptions (produce into the log,
fan out, then per delivery: build the CloudEvent, sign it, record the attempt), in CPU time
per core, beside DuckDB's own load of the same delivery records; and, separately, concurrent
delivery against a loopback sink (uvicorn in its own process).

Run: ``python benchmarks/bench_events.py [--events 2000 --subscriptions 100 --deliver 4000]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
from number_recycling_client.events import EVENT_TYPES, TYPE_PREFIX, event_id

from pipelines.config import load_settings
from pipelines.events.config import EventsConfig
from pipelines.events.deliver import deliver_once, online_signers, request_for
from pipelines.events.outbox import open_store
from pipelines.events.store import EventStore, Outcome
from pipelines.events.subscriptions import Subscriptions
from pipelines.feeds.publish import ensure_root

NOW = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)
RISK = {
    "level": "medium",
    "remindersReached": 1,
    "releaseException": False,
    "violation": False,
    "priorPort": False,
}
SINK_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


def events(n: int) -> list[tuple[str, str, str, dict[str, object]]]:
    return [
        (
            event_id("released", i),
            TYPE_PREFIX + "released",
            "2026-12-05T00:00:00Z",
            {"phoneNumber": f"+86138{i:08d}", "releasedOn": "2026-12-05", "priorEnd": "cancel", "risk": RISK},
        )
        for i in range(1, n + 1)
    ]


def subscribe(store: EventStore, n: int, sink: str, config: EventsConfig) -> None:
    subs = Subscriptions(store)
    for i in range(n):
        body = {"protocol": "HTTP", "sink": sink, "types": list(EVENT_TYPES)}
        subs.create(f"platform-{i % 100:03d}-{i}", body, config, NOW)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bookkeeping(store: EventStore, settings, config: EventsConfig) -> tuple[int, float, float, float]:  # type: ignore[no-untyped-def]
    """Claim every due delivery, build + sign each, record a 204: (deliveries, wall, cpu, sign cpu)."""
    keys = online_signers(settings)
    done, wall, cpu, sign_cpu = 0, time.perf_counter(), time.process_time(), 0.0
    at = NOW.timestamp()
    while batch := store.claim(at, 1000, 120.0):
        outcomes = []
        for due in batch:
            s0 = time.process_time()
            request_for(due, config, keys, at)
            sign_cpu += time.process_time() - s0
            outcomes.append(Outcome(due.delivery_id, due.platform, due.event_id, 1, at, 204, None, 1.0))
        store.record(outcomes, config.retry_schedule)
        done += len(batch)
    return done, time.perf_counter() - wall, time.process_time() - cpu, sign_cpu


def duckdb_load(store: EventStore) -> tuple[int, float]:
    """DuckDB's own load of the same delivery records (subscription, event id, type, data)."""
    rows = store.query(
        "SELECT d.subscription_id, e.id, e.type, e.data FROM deliveries d JOIN events e USING (position)"
    )
    records = pa.table({k: [r[i] for r in rows] for i, k in enumerate(("sub", "id", "type", "data"))})
    con = duckdb.connect()
    started = time.perf_counter()
    con.register("records", records)
    con.execute("CREATE TABLE deliveries AS SELECT * FROM records")
    return len(rows), time.perf_counter() - started


def start_sink(port_file: Path) -> subprocess.Popen[bytes]:
    code = SINK_APP + (
        "\nimport socket, uvicorn\ns = socket.socket(); s.bind(('127.0.0.1', 0))\n"
        f"open({str(port_file)!r}, 'w').write(str(s.getsockname()[1]))\n"
        "uvicorn.Server(uvicorn.Config(app, log_level='warning', access_log=False)).run(sockets=[s])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text():
        assert time.monotonic() < deadline, "the sink did not start"
        time.sleep(0.05)
    time.sleep(0.3)
    return proc


def delivery(
    settings, n_events: int, n_subs: int, config: EventsConfig, tmp: Path
) -> tuple[int, float, float]:  # type: ignore[no-untyped-def]
    proc = start_sink(tmp / "port")
    try:
        sink = f"http://127.0.0.1:{(tmp / 'port').read_text()}/events"
        store = EventStore(tmp / "deliver.sqlite")
        subscribe(store, n_subs, sink, config)
        store.append_events(events(n_events))
        report, wall, cpu = timed(
            lambda: asyncio.run(deliver_once(settings, store, config, clock=lambda: NOW))
        )
        store.close()
        assert report.delivered == n_events * n_subs, report
        return report.delivered, wall, cpu
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--subscriptions", type=int, default=100)
    ap.add_argument("--deliver", type=int, default=4000, help="deliveries sent to the loopback sink")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp_name:
        tmp = Path(tmp_name)
        settings = load_settings(env={}, data_dir=tmp / "data")
        ensure_root(settings, NOW.date())
        config = EventsConfig(allow_http_loopback=True)
        store = open_store(settings)
        subscribe(store, args.subscriptions, "https://platform.example/events", config)
        batch = events(args.events)
        _, p_wall, p_cpu = timed(store.append_events, batch)
        fanned, f_wall, f_cpu = timed(Subscriptions(store).fan_out, NOW)
        done, b_wall, b_cpu, sign_cpu = bookkeeping(store, settings, config)
        assert fanned == done == args.events * args.subscriptions
        rows, duck_s = duckdb_load(store)
        store.close()
        cpu = p_cpu + f_cpu + b_cpu
        print(
            f"produce   {args.events:>9,} events      {p_wall:7.3f} s wall {p_cpu:7.3f} s cpu  {args.events / p_cpu:>11,.0f} events/s/core"
        )
        print(
            f"fan-out   {fanned:>9,} deliveries  {f_wall:7.3f} s wall {f_cpu:7.3f} s cpu  {fanned / f_cpu:>11,.0f} deliveries/s/core"
        )
        print(
            f"build+sign+record {done:>9,}     {b_wall:7.3f} s wall {b_cpu:7.3f} s cpu  {done / b_cpu:>11,.0f} deliveries/s/core"
            f" (of which build+sign {sign_cpu:.3f} s: {done / sign_cpu:,.0f}/s)"
        )
        print(
            f"bookkeeping total: {done / cpu:,.0f} deliveries (event x subscription)/s/core = "
            f"{args.events / cpu:,.0f} source events/s/core fanned to {args.subscriptions} subscriptions"
        )
        print(
            f"duckdb load of the same {rows:,} delivery records: {duck_s:.3f} s ({rows / duck_s:,.0f} rows/s); "
            f"bookkeeping / duckdb = {cpu / duck_s:.1f}x"
        )
        n_subs = 10
        sent, d_wall, d_cpu = delivery(
            settings, max(1, args.deliver // n_subs), n_subs, dataclasses.replace(config, concurrency=64), tmp
        )
        print(
            f"delivery  {sent:>9,} POSTs to a loopback sink, concurrency 64: {d_wall:.3f} s wall "
            f"({sent / d_wall:,.0f}/s), {d_cpu:.3f} s cpu in this process"
        )
        print(json.dumps({"events": args.events, "subscriptions": args.subscriptions}))


if __name__ == "__main__":
    main()
