"""The platform server against hostile and careless clients (issue 12, "Server"), over real
HTTP on loopback: CAMARA 401/403 semantics, one date validator for every endpoint, ``/status``
without counts, bodies bounded while they stream, JSON depth and ``null`` items refused with a
400, every refusal audited and no traceback sent, slow clients timed out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import Settings as AppSettings
from pipelines.config import load_settings
from pipelines.db import open_state
from pipelines.feeds.publish import publish_feed
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.layout import Layout
from pipelines.server import TokenStore, create_app
from pipelines.server.app import KEEP_ALIVE_S, uvicorn_config
from pipelines.server.bulk import parse_dates
from pipelines.server.camara import BODY_TIMEOUT_S, ApiError
from pipelines.server.check import parse_date

from .test_server_http import BULK, CHECK, NOW, SAME, D, build_state, open_ledger, serving


@dataclass
class Hostile:
    settings: AppSettings
    url: str
    tokens: dict[str, str]
    app: Any


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    settings = load_settings(env={}, data_dir=tmp_path_factory.mktemp("hardening") / "data")
    ledger, store = open_ledger(settings)
    with open_state(Layout(settings.data_dir).state_db) as con:
        build_state(con)
        publish_feed(settings, D, con, ledger)
        publish_snapshot(settings, D, con)
    ledger.close()
    store.close()
    ts = TokenStore.open(settings.data_dir)
    tokens = {
        "bank": ts.add("bank", ["check", "bulk", "feeds", "ack"], rate=1e6, burst=10**6),
        "feeder": ts.add("feeder", ["feeds"], rate=1e6, burst=10**6),
        "gone": ts.add("gone", ["check", "bulk"], rate=1e6, burst=10**6),
    }
    ts.revoke("gone")
    ts.close()
    app = create_app(settings, clock=lambda: NOW, snapshot_check_s=0.05)
    with serving(app) as url:
        yield Hostile(settings, url, tokens, app)


def post(
    h: Hostile, path: str, content: bytes | object, token: str | None = "bank", **headers: str
) -> httpx.Response:
    hdrs = {"Content-Type": "application/json", **headers}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {h.tokens.get(token, token)}"
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    return httpx.post(h.url + path, content=body, headers=hdrs, timeout=60)


def audit_lines(h: Hostile) -> list[dict[str, Any]]:
    h.app.state.audit.flush()
    folder = h.settings.data_dir / "server" / "audit"
    return [json.loads(line) for p in sorted(folder.glob("*.jsonl")) for line in p.read_text().splitlines()]


def camara(r: httpx.Response) -> tuple[int, str]:
    doc = r.json()
    assert set(doc) == {"status", "code", "message"} and doc["status"] == r.status_code, r.text
    assert "Traceback" not in r.text
    return r.status_code, doc["code"]


ONE = {"phoneNumber": SAME, "specifiedDate": "2024-01-01"}


# ------------------------------------------------------------------ 1. CAMARA 401 / 403


@pytest.mark.parametrize(
    ("path", "body", "token", "expected"),
    [
        (CHECK, ONE, None, (401, "UNAUTHENTICATED")),
        (CHECK, ONE, "nrp_never-issued", (401, "UNAUTHENTICATED")),
        (CHECK, ONE, "gone", (401, "UNAUTHENTICATED")),  # revoked
        (CHECK, ONE, "feeder", (403, "PERMISSION_DENIED")),  # known, lacks the scope
        (BULK, {"queries": [ONE]}, "nrp_never-issued", (401, "UNAUTHENTICATED")),
        (BULK, {"queries": [ONE]}, "gone", (401, "UNAUTHENTICATED")),
        (BULK, {"queries": [ONE]}, "feeder", (403, "PERMISSION_DENIED")),
    ],
)
def test_unknown_and_revoked_tokens_are_401_missing_scope_is_403(
    hostile: Hostile, path: str, body: object, token: str | None, expected: tuple[int, str]
) -> None:
    assert camara(post(hostile, path, body, token)) == expected


def test_unknown_token_on_a_download_is_401(hostile: Hostile) -> None:
    r = httpx.get(hostile.url + "/feeds/root.json", headers={"Authorization": "Bearer nrp_never-issued"})
    assert camara(r) == (401, "UNAUTHENTICATED")


# ------------------------------------------------------------------ 2. one date rule


@pytest.mark.parametrize("date", ["0000-01-01", "2024-02-30", "2023-02-29", "2024-00-10", "١٢٣٤-01-01"])
def test_check_and_bulk_refuse_the_same_dates(hostile: Hostile, date: str) -> None:
    r = post(hostile, CHECK, {"phoneNumber": SAME, "specifiedDate": date})
    assert camara(r) == (400, "INVALID_ARGUMENT")
    r = post(hostile, BULK, {"queries": [ONE, {"phoneNumber": SAME, "specifiedDate": date}]})
    assert camara(r) == (400, "INVALID_ARGUMENT")
    assert r.json()["message"].startswith("query 2: specifiedDate")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.from_regex(r"\d{4}-\d{2}-\d{2}", fullmatch=True), st.text(max_size=12)))
def test_bulk_dates_follow_the_check_rule(value: str) -> None:
    try:
        expected: int | None = (parse_date(value, "specifiedDate") - dt.date(1970, 1, 1)).days
    except ApiError:
        expected = None
    try:
        got: int | None = int(parse_dates(pa.array([value, value], type=pa.string()))[1])
    except ApiError:
        got = None
    assert got == expected


# ------------------------------------------------------------------ 3. /status


def test_status_answers_without_a_token_but_shows_no_counts(hostile: Hostile) -> None:
    r = httpx.get(hostile.url + "/status")
    assert r.status_code == 200
    assert r.json() == {
        "snapshot": {
            "loaded": r.json()["snapshot"]["loaded"],
            "as_of": D.isoformat(),
            "data_from": "2020-01-01",
            "feed_seq": 1,
        }
    }


# ------------------------------------------------------------------ 4. bounded bodies, JSON depth

ACK = "/number-recycling/v0.2/acknowledgements"


def rss_bytes() -> int:
    """This process's resident set (the server runs in it, on a thread)."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def chunked_upload(h: Hostile, path: str, total: int, chunk: int = 64 * 1024) -> tuple[bytes, int]:
    """POST ``total`` bytes chunked over a raw socket, stopping when the server answers: the
    response and how many body bytes were sent by then."""
    host, port = h.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {h.tokens['bank']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = f"{chunk:x}\r\n".encode() + b"[" * chunk + b"\r\n"
        sent = 0
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += chunk
        sock.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            got = sock.recv(65536)
            if not got:
                break
            answer += got
    return answer, sent


@pytest.mark.parametrize(("path", "limit"), [(CHECK, 16 * 1024), (BULK, 40 * 1024 * 1024)])
def test_a_huge_chunked_body_is_refused_before_it_is_read(hostile: Hostile, path: str, limit: int) -> None:
    before = rss_bytes()
    answer, sent = chunked_upload(hostile, path, total=limit + 50 * 1024 * 1024)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"larger than" in body and b"Traceback" not in answer
    assert sent < limit + 8 * 1024 * 1024  # answered while the client was still sending
    assert rss_bytes() - before < limit + 16 * 1024 * 1024


def nested(depth: int) -> bytes:
    return b'{"queries":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHECK, b"[" * 5000 + b"]" * 5000),
        (CHECK, b'{"specifiedDate":' + b"[" * 5000 + b"]" * 5000 + b"}"),
        (BULK, nested(100_000)),
        (ACK, b'{"acknowledgements":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ],
)
def test_deeply_nested_json_is_a_400(hostile: Hostile, path: str, body: bytes) -> None:
    r = post(hostile, path, body)
    assert camara(r) == (400, "INVALID_ARGUMENT")
    assert "nested too deeply" in r.json()["message"]


@pytest.mark.parametrize(
    "item",
    [
        {"phoneNumber": None, "specifiedDate": "2024-01-01"},
        {"phoneNumber": SAME, "specifiedDate": None},
        {"phoneNumber": None, "specifiedDate": None},
    ],
)
def test_null_fields_in_bulk_items_are_a_400_naming_the_query(hostile: Hostile, item: object) -> None:
    r = post(hostile, BULK, {"queries": [ONE, ONE, item]})
    assert camara(r) == (400, "INVALID_ARGUMENT")
    assert r.json()["message"].startswith("query 3: ")


def test_null_fields_in_check_are_a_400(hostile: Hostile) -> None:
    for body in (
        {"phoneNumber": None, "specifiedDate": "2024-01-01"},
        {"phoneNumber": SAME, "specifiedDate": None},
    ):
        assert camara(post(hostile, CHECK, body)) == (400, "INVALID_ARGUMENT")


# ------------------------------------------------------------------ 5. every refusal audited, no traceback


def refusals(h: Hostile, status: int) -> int:
    """Audit lines with ``status`` (route-level lines name the action, the rest the path)."""
    return sum(1 for e in audit_lines(h) if e.get("status") == status)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("GET", "/lookup/8613800000001", None, {}, 404),  # no route
        ("GET", CHECK, None, {}, 405),  # wrong method
        ("POST", CHECK, json.dumps(ONE).encode(), {"x-correlator": "not valid!"}, 400),
        ("POST", BULK, nested(100_000), {}, 400),
        (
            "POST",
            BULK,
            json.dumps({"queries": [{"phoneNumber": None, "specifiedDate": None}]}).encode(),
            {},
            400,
        ),
        ("POST", CHECK, b"[" * 20_000, {}, 400),
    ],
)
def test_every_refusal_has_an_audit_line(
    hostile: Hostile, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int
) -> None:
    before = refusals(hostile, status)
    hdrs = {
        "Authorization": f"Bearer {hostile.tokens['bank']}",
        "Content-Type": "application/json",
        **headers,
    }
    r = httpx.request(method, hostile.url + path, content=body, headers=hdrs, timeout=30)
    assert camara(r)[0] == status
    assert refusals(hostile, status) == before + 1
    assert "8613800000001" not in json.dumps(audit_lines(hostile))  # paths are masked


def test_a_server_failure_is_a_camara_500_audited_without_a_traceback(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("signer exploded at /secret/path")

    monkeypatch.setattr(hostile.app.state.server.receipt_keys, "current", broken)
    before = refusals(hostile, 500)
    r = post(hostile, BULK, {"queries": [ONE]})
    assert camara(r) == (500, "INTERNAL")
    assert "secret" not in r.text and "RuntimeError" not in r.text
    assert refusals(hostile, 500) == before + 1


# ------------------------------------------------------------------ 6. slow clients


@contextmanager
def served_with(app: Any, keep_alive_s: float) -> Iterator[int]:
    """``app`` under the configuration ``recycle serve`` uses, with a short keep-alive."""
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, keep_alive_s=keep_alive_s))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def test_serve_configures_the_keep_alive_and_body_deadlines(hostile: Hostile) -> None:
    app = create_app(hostile.settings)
    config = uvicorn_config(app, "127.0.0.1", 0)
    app.state.server.close()
    assert config.timeout_keep_alive == KEEP_ALIVE_S == 5.0
    assert BODY_TIMEOUT_S == 60.0


def test_a_trickling_body_is_cut_off_and_an_idle_connection_closed(hostile: Hostile) -> None:
    app = create_app(hostile.settings, clock=lambda: NOW, body_timeout_s=0.5)
    with (
        served_with(app, keep_alive_s=0.5) as port,
        socket.create_connection(("127.0.0.1", port), 10) as sock,
    ):
        sock.sendall(
            f"POST {CHECK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hostile.tokens['bank']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        started = time.monotonic()
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"REQUEST_TIMEOUT"' in answer and time.monotonic() - started < 5
    with (
        served_with(app, keep_alive_s=0.5) as port,
        socket.create_connection(("127.0.0.1", port), 10) as sock,
    ):
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server once idle
        assert time.monotonic() - started < 5
