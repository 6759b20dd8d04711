"""The light client at a nation's size: a 1,000,000-row day read from its CSV, stored in
sqlite3, then checks. `python benchmarks/bench_light_client.py` (figures: clients/python/README.md)."""

import datetime as dt
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from number_recycling_client.check import LocalFeed
from number_recycling_client.feedfiles import FEED_COLUMNS, read_csv
from number_recycling_client.store import connect

from pipelines.feeds.publish import FEED_SCHEMA, _csv_bytes

N = 1_000_000
t = pa.table(
    {
        "msisdn": [f"+86138{i:08d}" for i in range(N)],
        "event": ["released"] * N,
        "disconnected_on": pa.array([dt.date(2026, 8, 1)] * N, pa.date32()),
        "released_on": pa.array([dt.date(2026, 9, 1)] * N, pa.date32()),
        "reissued_on": pa.nulls(N, pa.date32()),
        "region": ["GD"] * N,
        "seq": pa.array(range(1, N + 1), pa.int64()),
        "prior_end": ["cancel"] * N,
        "reminders_reached": pa.array([2] * N, pa.int8()),
        "release_exception": [False] * N,
        "violation": [False] * N,
        "risk": ["low"] * N,
    },
    schema=FEED_SCHEMA,
)
data = _csv_bytes(t)
print("csv MB", len(data) / 1e6)
t0 = time.perf_counter()
rows = read_csv(data, FEED_COLUMNS, "bench")
t1 = time.perf_counter()
print("parse s", round(t1 - t0, 2))
rows = [(*r, dt.date(2026, 9, 1)) for r in rows]
d = Path(tempfile.mkdtemp())
con = connect(d)
t0 = time.perf_counter()
con.execute("BEGIN")
con.executemany(f"INSERT INTO feed_rows VALUES ({','.join('?' * (len(FEED_COLUMNS) + 1))})", rows)
con.execute("INSERT INTO manifests VALUES (1,'2026-09-01','x',x'00')")
con.execute("COMMIT")
t1 = time.perf_counter()
print("store s", round(t1 - t0, 2))
con.close()
print("db MB", (d / "feed.sqlite").stat().st_size / 1e6)
lat = []
with LocalFeed(d) as f:
    for i in range(0, N, 1000):
        a = time.perf_counter()
        f.check(f"+86138{i:08d}", dt.date(2026, 7, 1))
        lat.append(time.perf_counter() - a)
lat.sort()
print("check p50 ms", round(lat[len(lat) // 2] * 1e3, 3), "p99 ms", round(lat[int(len(lat) * 0.99)] * 1e3, 3))
