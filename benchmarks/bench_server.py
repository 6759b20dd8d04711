"""Server benchmark: a 10,000,000-tenure query snapshot, single CAMARA checks and one bulk check.

    .venv/bin/python benchmarks/bench_server.py [--tenures 10000000] [--requests 10000] [--bulk 250000]

Builds a synthetic state (8 numbers in 10 with one open tenure, 2 in 10 cancelled, released and
reissued), publishes its query snapshot, starts ``uvicorn`` in a separate process on
127.0.0.1, then measures over loopback with one keep-alive HTTP client:
single-check latency p50/p99 over ``--requests`` sequential requests (targets: p99 <= 5 ms)
and one bulk check of ``--bulk`` pairs, upload to parsed answer (target: <= 3 s).
Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipelines.config import load_settings  # noqa: E402
from pipelines.db import open_state  # noqa: E402
from pipelines.feeds.publish import ensure_root  # noqa: E402
from pipelines.feeds.query_snapshot import publish_snapshot  # noqa: E402
from pipelines.layout import Layout  # noqa: E402
from pipelines.server import TokenStore  # noqa: E402

DAY = dt.date(2026, 11, 27)
BASE = 13_000_000_000  # +86 13x xxxx xxxx


def build_state(con: duckdb.DuckDBPyConnection, tenures: int) -> int:
    """``tenures`` rows: numbers i < 0.8 N hold one open tenure; the rest were reissued once."""
    reissued = tenures // 10
    single = tenures - 2 * reissued
    numbers = single + reissued
    con.execute(
        f"""
        INSERT INTO tenures (tenure_id, msisdn, tenure_start, tenure_end, end_reason, subscriber_ref,
                             region, opened_by, opened_logical)
        SELECT 'T' || i, '+86' || ({BASE} + i * 7), DATE '2015-01-01' + CAST(i % 3000 AS INT),
               NULL, NULL, 's' || i, 'GD', 'snapshot', DATE '2026-09-01'
        FROM range({single}) t(i)
        UNION ALL
        SELECT 'A' || i, '+86' || ({BASE} + i * 7), DATE '2012-01-01' + CAST(i % 1000 AS INT),
               DATE '2016-01-01' + CAST(i % 2500 AS INT), 'cancel', 'a' || i, 'GD', 'snapshot',
               DATE '2026-09-01'
        FROM range({single}, {numbers}) t(i)
        UNION ALL
        SELECT 'B' || i, '+86' || ({BASE} + i * 7), DATE '2016-06-01' + CAST(i % 2500 AS INT),
               NULL, NULL, 'b' || i, 'GD', 'reissue', DATE '2026-09-01'
        FROM range({single}, {numbers}) t(i)
        """
    )
    con.execute(
        f"""
        INSERT INTO releases
        SELECT '+86' || ({BASE} + i * 7), 'A' || i, DATE '2016-01-01' + CAST(i % 2500 AS INT),
               DATE '2016-04-01' + CAST(i % 2500 AS INT), 2, false,
               DATE '2016-04-01' + CAST(i % 2500 AS INT), 'GD'
        FROM range({single}, {numbers}) t(i)
        """
    )
    return numbers


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenures", type=int, default=10_000_000)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--bulk", type=int, default=250_000)
    ap.add_argument("--data", type=Path, default=None, help="data directory (default: a temp dir)")
    args = ap.parse_args()

    data = args.data or Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        run(args, data)
    finally:
        if args.data is None:
            shutil.rmtree(data, ignore_errors=True)


def run(args: argparse.Namespace, data: Path) -> None:
    settings = load_settings(env={}, data_dir=data)
    out: dict[str, object] = {"tenures": args.tenures}

    t0 = time.perf_counter()
    with open_state(Layout(data).state_db) as con:
        numbers = build_state(con, args.tenures)
        out["build_state_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        report = publish_snapshot(settings, DAY, con)
        out["publish_snapshot_s"] = round(time.perf_counter() - t0, 2)
    out["numbers"] = numbers
    assert report.tenures == args.tenures
    ensure_root(settings, DAY)  # the receipt key
    store = TokenStore.open(data)
    token = store.add("bench", ["check", "bulk"], rate=1e6, burst=1_000_000)
    store.close()

    port = 18080 + os.getpid() % 1000
    code = (
        "import sys; from pathlib import Path; from pipelines.config import load_settings; "
        "from pipelines.server.app import create_app; import uvicorn; "
        f"uvicorn.run(create_app(load_settings(env={{}}, data_dir=Path({str(data)!r}))), "
        f"host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
    )
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            while True:
                try:
                    if client.get("/status").json()["snapshot"]["loaded"]:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise SystemExit("the server exited")
                time.sleep(0.2)
            out["server_start_and_load_s"] = round(time.perf_counter() - t0, 2)
            out["server_rss_mb"] = rss_mb(server.pid)

            rng = random.Random(7)

            def body() -> bytes:
                i = rng.randrange(int(numbers * 1.05))  # 5% are not ours (404)
                date = (dt.date(2016, 1, 1) + dt.timedelta(days=rng.randrange(3900))).isoformat()
                return json.dumps({"phoneNumber": f"+86{BASE + i * 7}", "specifiedDate": date}).encode()

            # One keep-alive connection with the standard library's client: what is measured is
            # the server plus loopback, not the client library's own overhead.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

            def one(payload: bytes) -> int:
                conn.request("POST", "/number-recycling/v0.2/check", body=payload, headers=headers)
                resp = conn.getresponse()
                resp.read()
                return resp.status

            for _ in range(300):  # warm-up
                one(body())
            lat: list[float] = []
            statuses: dict[int, int] = {}
            for _ in range(args.requests):
                payload = body()
                t = time.perf_counter()
                status = one(payload)
                lat.append((time.perf_counter() - t) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
            conn.close()
            out["load_average_1m"] = os.getloadavg()[0]
            out["single_check_ms"] = {
                "client": "http.client, one keep-alive connection, sequential",
                "requests": args.requests,
                "p50": round(percentile(lat, 50), 3),
                "p99": round(percentile(lat, 99), 3),
                "max": round(max(lat), 3),
                "statuses": statuses,
            }

            queries = []
            for _ in range(args.bulk):
                i = rng.randrange(int(numbers * 1.05))
                date = (dt.date(2014, 1, 1) + dt.timedelta(days=rng.randrange(4700))).isoformat()
                queries.append({"phoneNumber": f"+86{BASE + i * 7}", "specifiedDate": date})
            payload = json.dumps({"queries": queries}).encode()
            t = time.perf_counter()
            r = client.post(
                "/number-recycling/v0.2/bulk-check",
                content=payload,
                headers={"Content-Type": "application/json"},
            )
            doc = r.json()
            elapsed = time.perf_counter() - t
            assert r.status_code == 200, r.text[:300]
            out["bulk_check"] = {
                "pairs": args.bulk,
                "seconds": round(elapsed, 3),
                "request_mb": round(len(payload) / 1e6, 1),
                "counts": doc["counts"],
            }
    finally:
        server.terminate()
        server.wait(30)
    out["targets_met"] = {
        "single_p99_le_5ms": out["single_check_ms"]["p99"] <= 5.0,  # type: ignore[index]
        "bulk_le_3s": out["bulk_check"]["seconds"] <= 3.0,  # type: ignore[index]
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
