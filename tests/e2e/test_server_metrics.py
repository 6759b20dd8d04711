"""Operators' view of the server over real HTTP: Prometheus metrics at /metrics (parsed with
prometheus_client's own parser), one masked log line per request, what `recycle serve` says it
loaded, and a port in use told in one line that names --port."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.errors import TerminalError
from pipelines.feeds.query_snapshot import SnapshotHolder, publish_snapshot
from pipelines.layout import Layout
from pipelines.server import TokenStore, create_app, serve
from pipelines.server.app import listen_socket
from pipelines.server.metrics import ServerMetrics

from .test_server_http import CHECK, NOW, REISSUED, D, build_state, serving

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Served:
    settings: Settings
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = load_settings(env={}, data_dir=tmp_path_factory.mktemp("metrics") / "data")
    with open_state(Layout(settings.data_dir).state_db) as con:
        build_state(con)
        publish_snapshot(settings, D, con)
    with closing(TokenStore.open(settings.data_dir)) as store:
        tokens = {
            "bank": store.add("bank", ["check", "feeds"], rate=1000, burst=1000),
            "prometheus": store.add("prometheus", ["metrics"], rate=1000, burst=1000),
        }
    with serving(create_app(settings, clock=lambda: NOW, snapshot_check_s=0.05)) as url:
        yield Served(settings, url, tokens)


def get(served: Served, path: str, token: str | None = None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {served.tokens.get(token, token)}"}
    return httpx.get(served.url + path, headers=headers, timeout=30)


def check(served: Served, token: str = "bank") -> httpx.Response:
    return httpx.post(
        served.url + CHECK,
        json={"phoneNumber": REISSUED, "specifiedDate": "2023-12-22"},
        headers={"Authorization": f"Bearer {served.tokens.get(token, token)}"},
        timeout=30,
    )


def scrape(served: Served) -> Samples:
    r = get(served, "/metrics", "prometheus")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(condition: Callable[[], bool]) -> None:
    """A request is counted and logged just after its answer is sent: wait a moment for it."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "not seen within 5 s"
        time.sleep(0.02)


def test_requests_are_counted_by_route_template_and_status(served: Served) -> None:
    before = scrape(served)
    assert check(served).status_code == 200
    assert check(served).status_code == 200
    assert check(served, token="nrp_not-a-token").status_code == 401
    assert get(served, "/feeds/no-such-file.json", "bank").status_code == 404
    ok = {"method": "POST", "endpoint": CHECK, "status": "200"}
    feeds = {"method": "GET", "endpoint": "/feeds/{rel:path}", "status": "404"}

    def moved() -> bool:
        after = scrape(served)
        return (
            value(after, "recycle_http_requests_total", **ok)
            - value(before, "recycle_http_requests_total", **ok)
            == 2
        )

    eventually(moved)
    after = scrape(served)
    denied = {"method": "POST", "endpoint": CHECK, "status": "401"}
    assert (
        value(after, "recycle_http_requests_total", **denied)
        - value(before, "recycle_http_requests_total", **denied)
        == 1
    )
    assert value(after, "recycle_http_requests_total", **feeds) >= 1
    latency = "recycle_http_request_duration_seconds_count"
    assert (
        value(after, latency, method="POST", endpoint=CHECK)
        - value(before, latency, method="POST", endpoint=CHECK)
        == 3
    )
    endpoints = {dict(labels).get("endpoint") for _, labels in after} - {None}
    assert "/feeds/no-such-file.json" not in endpoints  # the template, never the raw path


def test_token_use_is_counted_per_platform(served: Served) -> None:
    before = scrape(served)
    check(served)
    check(served, token="nrp_not-a-token")
    get(served, "/metrics", "bank")  # bank lacks the metrics scope
    after = scrape(served)
    use = "recycle_platform_requests_total"
    for labels, moved in (
        ({"platform": "bank", "scope": "check", "outcome": "allowed"}, 1),
        ({"platform": "none", "scope": "check", "outcome": "unknown_token"}, 1),
        ({"platform": "bank", "scope": "metrics", "outcome": "missing_scope"}, 1),
    ):
        assert value(after, use, **labels) - value(before, use, **labels) == moved, labels
    assert value(after, use, platform="prometheus", scope="metrics", outcome="allowed") >= 2


def test_an_invented_method_is_counted_as_other(served: Served) -> None:
    # uvicorn refuses such a request itself (400, before the app); another ASGI server may not.
    metrics = ServerMetrics(SnapshotHolder(served.settings.data_dir / "none"), served.settings, lambda: NOW)
    metrics.observe("BREW", "/status", 405, 0.001)
    text = metrics.exposition().decode()
    assert 'method="OTHER"' in text and "BREW" not in text


def test_metrics_need_a_token_with_the_metrics_scope(served: Served) -> None:
    assert get(served, "/metrics").status_code == 401
    assert get(served, "/metrics", "bank").status_code == 403
    assert get(served, "/metrics", "prometheus").status_code == 200
    assert "/metrics" not in httpx.get(served.url + "/openapi.json").json()["paths"]


def test_snapshot_age_and_as_of(served: Served) -> None:
    samples = scrape(served)
    assert value(samples, "recycle_query_snapshot_loaded") == 1
    info = [dict(labels) for name, labels in samples if name == "recycle_query_snapshot_info"]
    assert [i["as_of"] for i in info] == ["2026-11-27"]
    # 2026-11-27 in Beijing ended at 16:00 UTC; the server's clock says 09:30 UTC the next day.
    assert value(samples, "recycle_query_snapshot_age_seconds") == 17.5 * 3600
    start = dt.datetime(2026, 11, 26, 16, tzinfo=dt.UTC).timestamp()  # 2026-11-27 begins in Beijing
    assert value(samples, "recycle_query_snapshot_as_of_timestamp_seconds") == start
    assert value(samples, "recycle_query_snapshot_tenures") == 7  # build_state's tenures


def test_each_request_is_logged_once_with_numbers_masked(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.server.access"):
        check(served)
        get(served, "/lookup/%2B8613800000002", "bank")

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "pipelines.server.access"]

        eventually(lambda: len([x for x in lines() if "/lookup" in x or CHECK in x]) == 2)
    text = "\n".join(lines())
    (one,) = [x for x in lines() if CHECK in x]
    assert one.startswith(f"POST {CHECK} 200 platform=bank ") and one.endswith("ms")
    (unmatched,) = [x for x in lines() if "/lookup" in x]
    assert unmatched.startswith("GET <unmatched> /lookup/138****0002 404 platform=- ")
    assert "13800000002" not in text and "8613800000002" not in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_port_in_use_is_one_line_naming_port(served: Served) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TerminalError) as caught:
            listen_socket("127.0.0.1", port)
        with pytest.raises(TerminalError):
            serve(served.settings, "127.0.0.1", port)  # before uvicorn is started
        message = caught.value.diagnostics()
        assert "\n" not in message and f"port {port} is in use" in message
        assert f"recycle serve --port {port + 1}" in message
        proc = recycle("serve", "--port", str(port), "--data", str(served.settings.data_dir))
        _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    with pytest.raises(TerminalError, match="check --host and --port"):
        listen_socket("192.0.2.1", 8080)  # TEST-NET-1: not an address of this machine
    assert "Traceback" not in err and "is in use" in err and "--port" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err  # at 80 columns


def recycle(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECYCLE_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="80", NO_COLOR="1")
    return subprocess.Popen(
        [sys.executable, "-c", "from pipelines.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_says_what_it_loaded_and_logs_requests(served: Served) -> None:
    port = free_port()
    proc = recycle("serve", "--port", str(port), "--data", str(served.settings.data_dir))
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any("Application startup complete" in line for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            seen.append(proc.stderr.readline())
        assert httpx.get(f"http://127.0.0.1:{port}/status", timeout=10).status_code == 200
        while not any("GET /status 200" in line for line in seen):
            assert time.monotonic() < deadline, "".join(seen)
            seen.append(proc.stderr.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    text = "".join(seen)
    assert f"serving on http://127.0.0.1:{port}" in text
    (loaded,) = [line for line in seen if "query snapshot" in line]
    assert f"data dir {served.settings.data_dir}:" in loaded
    assert "as_of 2026-11-27" in loaded and "7 tenures of 6 numbers" in loaded and "feed seq None" in loaded
    assert "GET /status 200 platform=- " in text
