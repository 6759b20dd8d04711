"""The platform server over real HTTP (uvicorn on 127.0.0.1, an ephemeral port).

CAMARA scenarios, error codes, tokens and scopes, audit log, rate limit, bulk check with a
verified receipt, static files with ETags and cache headers, path traversal, snapshot reload,
and the committed OpenAPI document.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest
import uvicorn
from number_recycling_client import verify_receipt
from number_recycling_client.ledger.entries import CanonicalValue, EntryType, PreparedEntry

from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.errors import TamperedFileError
from pipelines.feeds.publish import load_root, publish_feed
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.layout import Layout
from pipelines.ledger.ledger import Ledger
from pipelines.ledger.openings import OpeningsStore
from pipelines.ledger.signer import load_or_create_signer
from pipelines.server import TokenStore, create_app, openapi_bytes

OPENAPI = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"
NOW = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)
D = dt.date(2026, 11, 27)  # the snapshot's logical date
CHECK = "/number-recycling/v0.2/check"
BULK = "/number-recycling/v0.2/bulk-check"

SAME = "+8613800000001"  # one holder since 2023-10-09 (CAMARA scenario 1)
REISSUED = "+8613800000002"  # A 2023-10-09..2024-02-25, released, B from 2024-09-21 (scenario 2)
FROZEN = "+8613800000003"  # cancelled 2026-10-01, still in its freeze (not released)
PORTED = "+8613800000004"  # ported away 2025-03-01
SUSPENDED = "+8613800000005"  # suspended (双停), not yet a permanent disconnection
NEVER = "+8613899999999"  # never ours
ALL_NUMBERS = (SAME, REISSUED, FROZEN, PORTED, SUSPENDED, NEVER)


def tenure(
    con: duckdb.DuckDBPyConnection,
    tid: str,
    msisdn: str,
    start: str,
    end: str | None = None,
    reason: str | None = None,
    opened_by: str = "snapshot",
) -> None:
    con.execute(
        "INSERT INTO tenures (tenure_id, msisdn, tenure_start, tenure_end, end_reason, subscriber_ref,"
        " region, opened_by, opened_logical) VALUES (?, ?, ?, ?, ?, ?, 'GD', ?, ?)",
        [tid, msisdn, start, end, reason, f"sub-{tid}", opened_by, start],
    )


def build_state(con: duckdb.DuckDBPyConnection) -> None:
    tenure(con, "T0", "+8613800000009", "2020-01-01")  # the earliest data: data_from = 2020-01-01
    tenure(con, "T1", SAME, "2023-10-09")
    tenure(con, "T2a", REISSUED, "2023-10-09", "2024-02-25", "cancel")
    con.execute(
        "INSERT INTO releases VALUES (?, 'T2a', '2024-02-25', '2024-05-25', 2, false, '2024-05-25', 'GD')",
        [REISSUED],
    )
    tenure(con, "T2b", REISSUED, "2024-09-21", opened_by="reissue")
    con.execute(
        "INSERT INTO reissues VALUES (?, 'T2a', 'T2b', '2024-09-21', '2024-02-25', '2024-05-25', false,"
        " '2024-09-21', 'GD', 'f', 1)",
        [REISSUED],
    )
    tenure(con, "T3", FROZEN, "2022-01-01", "2026-10-01", "cancel")
    tenure(con, "T4", PORTED, "2021-01-01", "2025-03-01", "port_out")
    tenure(con, "T5", SUSPENDED, "2021-06-01")


@dataclass
class World:
    settings: Settings
    url: str
    tokens: dict[str, str]
    app_holder: object


@contextmanager
def serving(app: object) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",  # type: ignore[arg-type]
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def open_ledger(settings: Settings) -> tuple[Ledger, OpeningsStore]:
    layout = Layout(settings.data_dir)
    signer = load_or_create_signer(layout.keys_dir, settings.ledger.key_name)
    store = OpeningsStore.open(settings.data_dir / "private" / "openings", layout.keys_dir)
    return Ledger.open(layout.ledger_dir, signer, settings.ledger.origin, store), store


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = load_settings(env={}, data_dir=tmp_path_factory.mktemp("server") / "data")
    ledger, store = open_ledger(settings)
    with open_state(Layout(settings.data_dir).state_db) as con:
        build_state(con)
        # 300 earlier entries, so the ledger has a full tile and a partial one
        ledger.append(
            [
                PreparedEntry(f"earlier:{i}", EntryType.FEED_MANIFEST, CanonicalValue.build(seq=i))
                for i in range(300)
            ]
        )
        publish_feed(settings, D, con, ledger)
        publish_snapshot(settings, D, con)
    ledger.close()
    store.close()
    ts = TokenStore.open(settings.data_dir)
    tokens = {
        "bank": ts.add("bank", ["check", "bulk", "feeds"], rate=1000, burst=1000),
        "checker": ts.add("checker", ["check"], rate=1000, burst=1000),
        "slow": ts.add("slow", ["check"], rate=0.5, burst=2),
        "doomed": ts.add("doomed", ["check"], rate=1000, burst=1000),
    }
    ts.close()
    app = create_app(settings, clock=lambda: NOW, snapshot_check_s=0.05)
    with serving(app) as url:
        yield World(settings, url, tokens, app)


def post(
    world: World, path: str, body: object, token: str | None = "bank", headers: dict[str, str] | None = None
) -> httpx.Response:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {world.tokens.get(token, token)}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    h.setdefault("Content-Type", "application/json")
    return httpx.post(world.url + path, content=content, headers=h, timeout=30)


def check(world: World, phone: str | None, date: str, **kw: object) -> httpx.Response:
    body: dict[str, str] = {"specifiedDate": date}
    if phone is not None:
        body["phoneNumber"] = phone
    return post(world, CHECK, body, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ CAMARA check


@pytest.mark.parametrize(
    ("phone", "date", "recycled"),
    [
        (SAME, "2023-12-22", False),  # scenario 1: the same holder
        (SAME, "2023-10-09", False),  # the contract day itself
        (REISSUED, "2023-12-22", True),  # scenario 2: cancelled and reissued since
        (REISSUED, "2024-02-25", True),  # the cancel day: no contract that day
        (REISSUED, "2024-06-30", True),  # inside the freeze gap, nobody held it
        (REISSUED, "2024-09-21", False),  # the new holder since
        (FROZEN, "2026-09-01", True),  # cancelled since: the subscriber gave it up (docs/answers.md)
        (FROZEN, "2026-10-15", True),  # a date inside its freeze gap
        (SUSPENDED, "2026-01-01", False),  # a suspension is never recycling
    ],
)
def test_camara_scenarios(world: World, phone: str, date: str, recycled: bool) -> None:
    r = check(world, phone, date, headers={"x-correlator": "b4333c46-49c0-4f62-80d7-f0ef930f1c46"})
    assert r.status_code == 200, r.text
    assert r.json() == {"phoneNumberRecycled": recycled}
    assert r.headers["x-correlator"] == "b4333c46-49c0-4f62-80d7-f0ef930f1c46"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "INVALID_ARGUMENT"),
        (b"[]", 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME}, 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME, "specifiedDate": "2024-13-01"}, 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME, "specifiedDate": "2024-1-1"}, 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME, "specifiedDate": 20240101}, 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": "8613800000001", "specifiedDate": "2024-01-01"}, 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": "+0138000", "specifiedDate": "2024-01-01"}, 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": 8613800000001, "specifiedDate": "2024-01-01"}, 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME, "specifiedDate": "2026-11-29"}, 400, "OUT_OF_RANGE"),  # tomorrow
        ({"phoneNumber": SAME, "specifiedDate": "2019-12-31"}, 400, "OUT_OF_RANGE"),  # before data_from
        ({"specifiedDate": "2024-01-01"}, 422, "MISSING_IDENTIFIER"),
        ({"phoneNumber": PORTED, "specifiedDate": "2024-01-01"}, 404, "IDENTIFIER_NOT_FOUND"),
        ({"phoneNumber": NEVER, "specifiedDate": "2024-01-01"}, 404, "IDENTIFIER_NOT_FOUND"),
    ],
)
def test_check_errors_follow_camara(world: World, body: object, status: int, code: str) -> None:
    r = post(world, CHECK, body, headers={"x-correlator": "abc-123"})
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["status"] == status and doc["code"] == code and doc["message"]
    assert set(doc) == {"status", "code", "message"}
    assert r.headers["x-correlator"] == "abc-123"


def test_invalid_correlator_is_refused(world: World) -> None:
    r = check(world, SAME, "2024-01-01", headers={"x-correlator": "not valid!"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_ARGUMENT"


# ------------------------------------------------------------------ tokens and scopes


def test_tokens_and_scopes(world: World) -> None:
    assert check(world, SAME, "2024-01-01", token=None).json()["code"] == "UNAUTHENTICATED"
    r = httpx.post(
        world.url + CHECK,
        json={"phoneNumber": SAME, "specifiedDate": "2024-01-01"},
        headers={"Authorization": "Basic Zm9vOmJhcg=="},
    )
    assert r.status_code == 401
    r = check(world, SAME, "2024-01-01", token="nrp_wrong-token")
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHENTICATED")
    assert check(world, SAME, "2024-01-01", token="checker").status_code == 200
    r = post(
        world, BULK, {"queries": [{"phoneNumber": SAME, "specifiedDate": "2024-01-01"}]}, token="checker"
    )
    assert (r.status_code, r.json()["code"]) == (403, "PERMISSION_DENIED")
    r = httpx.get(
        world.url + "/feeds/root.json", headers={"Authorization": f"Bearer {world.tokens['checker']}"}
    )
    assert r.status_code == 403
    assert httpx.get(world.url + "/feeds/root.json").status_code == 401


def test_revocation_takes_effect_at_once(world: World) -> None:
    assert check(world, SAME, "2024-01-01", token="doomed").status_code == 200
    ts = TokenStore.open(world.settings.data_dir)
    ts.revoke("doomed")
    ts.close()
    r = check(world, SAME, "2024-01-01", token="doomed")
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHENTICATED")


def test_rate_limit_answers_429_with_retry_after(world: World) -> None:
    codes = [check(world, SAME, "2024-01-01", token="slow") for _ in range(4)]
    assert [r.status_code for r in codes[:2]] == [200, 200]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert limited[0].json()["code"] == "TOO_MANY_REQUESTS"
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert check(world, SAME, "2024-01-01", token="checker").status_code == 200  # per-token buckets


# ------------------------------------------------------------------ bulk


def test_bulk_check_answers_and_signs_a_receipt(world: World) -> None:
    pairs = [
        (REISSUED, "2023-12-22"),  # disconnected 2024-02-25, after: yes
        (REISSUED, "2024-02-25"),  # disconnected that day: yes
        (REISSUED, "2024-06-30"),  # in the freeze gap, reissued since: yes (one rule with /check)
        (SAME, "2023-12-22"),  # never disconnected: no
        (FROZEN, "2026-09-01"),  # cancelled since: yes (the same answer as /check)
        (SUSPENDED, "2024-01-01"),  # no
        (PORTED, "2024-01-01"),  # not ours: no_data
        (NEVER, "2024-01-01"),  # no_data
        (SAME, "2019-01-01"),  # before its tenure began (first answerable date): no_data
    ]
    expected = ["yes", "yes", "yes", "no", "yes", "no", "no_data", "no_data", "no_data"]
    body = {"queries": [{"phoneNumber": p, "specifiedDate": d} for p, d in pairs]}
    r = post(world, BULK, body, headers={"x-correlator": "bulk-1"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["results"] == expected
    assert doc["counts"] == {"yes": 4, "no": 2, "no_data": 3}
    root = load_root(world.settings)
    assert root is not None
    receipt = verify_receipt(
        doc["receipt"], root.signed, [p for p, _ in pairs], [d for _, d in pairs], doc["results"]
    )
    assert receipt.platform == "bank" and receipt.pairs == 9 and receipt.snapshot_date == D
    assert receipt.feed_seq == 1 and receipt.checkpoint is not None
    assert receipt.checkpoint.startswith(world.settings.ledger.origin + "\n301\n")
    with pytest.raises(TamperedFileError):
        verify_receipt(
            doc["receipt"],
            root.signed,
            [p for p, _ in pairs],
            [d for _, d in pairs],
            ["no", *doc["results"][1:]],
        )

    csv = "phoneNumber,specifiedDate\n" + "".join(f"{p},{d}\n" for p, d in pairs)
    r2 = post(world, BULK, csv.encode(), headers={"Content-Type": "text/csv"})
    assert r2.status_code == 200 and r2.json()["results"] == expected
    assert r2.json()["receipt"]["signed"]["request_sha256"] == doc["receipt"]["signed"]["request_sha256"]


def test_bulk_rejects_bad_rows_and_oversize_requests(world: World) -> None:
    bad = {
        "queries": [
            {"phoneNumber": SAME, "specifiedDate": "2024-01-01"},
            {"phoneNumber": SAME, "specifiedDate": "2024-02-30"},
        ]
    }
    r = post(world, BULK, bad)
    assert r.status_code == 400 and "query 2" in r.json()["message"]
    r = post(world, BULK, {"queries": [{"phoneNumber": "138", "specifiedDate": "2024-01-01"}]})
    assert r.status_code == 400 and "query 1" in r.json()["message"]
    csv = "phoneNumber,specifiedDate\n" + f"{SAME},2024-01-01\n" * 250_001
    r = post(world, BULK, csv.encode(), headers={"Content-Type": "text/csv"})
    assert (r.status_code, r.json()["code"]) == (400, "OUT_OF_RANGE")


# ------------------------------------------------------------------ static files


def test_static_files_have_etags_and_cache_headers(world: World) -> None:
    auth = {"Authorization": f"Bearer {world.tokens['bank']}"}
    r = httpx.get(world.url + "/feeds/root.json", headers=auth)
    assert (
        r.status_code == 200
        and r.content == (Layout(world.settings.data_dir).feeds_dir / "root.json").read_bytes()
    )
    etag = r.headers["etag"]
    again = httpx.get(world.url + "/feeds/root.json", headers={**auth, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert (
        "max-age=60" in httpx.get(world.url + "/feeds/timestamp.json", headers=auth).headers["cache-control"]
    )
    daily = httpx.get(world.url + f"/feeds/daily/{D}/recycled.parquet", headers=auth)
    assert daily.status_code == 200 and "immutable" in daily.headers["cache-control"]

    cp = httpx.get(world.url + "/ledger/checkpoint")  # the ledger is public
    assert cp.status_code == 200 and cp.headers["cache-control"] == "public, max-age=60"
    full = httpx.get(world.url + "/ledger/tile/0/000")
    assert full.status_code == 200 and len(full.content) == 256 * 32
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    bundle = httpx.get(world.url + "/ledger/tile/entries/000")
    assert bundle.status_code == 200 and bundle.headers["cache-control"].endswith("immutable")
    partial = httpx.get(world.url + "/ledger/tile/0/001.p/45")
    assert partial.status_code == 200 and partial.headers["cache-control"] == "public, max-age=60"
    assert (
        httpx.get(
            world.url + "/ledger/tile/0/000", headers={"If-None-Match": full.headers["etag"]}
        ).status_code
        == 304
    )


def raw_get(world: World, path: str, token: str | None = None) -> int:
    """GET with the path sent byte for byte (httpx would normalise '..')."""
    host, port = world.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    conn.request("GET", path, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.parametrize(
    "path",
    [
        "/feeds/../keys/feed-keys.json",
        "/feeds/..%2Fkeys%2Ffeed-keys.json",
        "/feeds/%2e%2e/state.duckdb",
        "/feeds/daily/../../keys/feed-keys.json",
        "/feeds/daily/2026-11-27/../../../state.duckdb",
        "/ledger/../keys/feed-keys.json",
        "/ledger/..%2F..%2Fstate.duckdb",
        "/ledger/tile/../../private/openings/openings.duckdb",
        "/ledger/vkey/../../server/platforms.sqlite",
        "/feeds//etc/passwd",
    ],
)
def test_path_traversal_is_impossible(world: World, path: str) -> None:
    assert raw_get(world, path, world.tokens["bank"]) in (404, 400)


# ------------------------------------------------------------------ audit, reload, OpenAPI


def test_audit_log_records_everything_without_full_numbers(world: World) -> None:
    check(world, REISSUED, "2023-12-22", headers={"x-correlator": "audit-1"})
    httpx.get(
        world.url + "/feeds/timestamp.json", headers={"Authorization": f"Bearer {world.tokens['bank']}"}
    )
    world.app_holder.state.audit.flush()  # type: ignore[attr-defined]
    audit_dir = world.settings.data_dir / "server" / "audit"
    text = "".join(p.read_text() for p in audit_dir.glob("*.jsonl"))
    entries = [json.loads(line) for line in text.splitlines()]
    mine = [e for e in entries if e.get("correlator") == "audit-1"]
    assert mine and mine[0]["platform"] == "bank" and mine[0]["action"] == "check"
    assert mine[0]["phone"] == "138****0002" and mine[0]["recycled"] is True and mine[0]["at"]
    assert any(e["action"] == "download" and e["path"] == "/feeds/timestamp.json" for e in entries)
    assert any(e["action"] == "bulk_check" and e.get("pairs") for e in entries)
    for number in ALL_NUMBERS:
        assert number not in text and number[3:] not in text  # neither E.164 nor national form


def test_server_switches_to_a_new_snapshot(world: World, tmp_path: Path) -> None:
    assert check(world, SAME, "2024-01-01").json() == {"phoneNumberRecycled": False}
    with open_state(Layout(world.settings.data_dir).state_db) as con:
        con.execute(
            "UPDATE tenures SET tenure_end = '2026-11-20', end_reason = 'cancel' WHERE tenure_id = 'T1'"
        )
        con.execute(
            "INSERT INTO releases VALUES (?, 'T1', '2026-11-20', '2026-11-28', 0, true, '2026-11-28', 'GD')",
            [SAME],
        )
        report = publish_snapshot(world.settings, D + dt.timedelta(days=1), con)
    assert report.switched
    deadline = time.monotonic() + 10
    while httpx.get(world.url + "/status").json()["snapshot"]["as_of"] != "2026-11-28":
        assert time.monotonic() < deadline, "the server did not load the new snapshot"
        time.sleep(0.05)
    assert check(world, SAME, "2024-01-01").json() == {"phoneNumberRecycled": True}


def test_committed_openapi_is_current(world: World) -> None:
    current = openapi_bytes(world.app_holder)  # type: ignore[arg-type]
    assert OPENAPI.read_bytes() == current, (
        "schemas/openapi.json is stale: .venv/bin/python -m pipelines.server.app --openapi > schemas/openapi.json"
    )
    doc = json.loads(current)
    op = doc["paths"]["/number-recycling/v0.2/check"]["post"]
    assert op["operationId"] == "checkNumberRecycling"
    assert set(op["responses"]) >= {"200", "400", "401", "403", "404", "422"}
    assert "/number-recycling/v0.2/bulk-check" in doc["paths"]
    served = httpx.get(world.url + "/openapi.json").json()
    assert served == doc


def test_today_is_the_carriers_day(world: World) -> None:
    # 04:31 on 12-05 in Beijing is 20:31 on 12-04 in UTC: the carrier (Asia/Shanghai, the CN
    # default) is already on 12-05, so 12-05 is today, not the future; 12-06 is tomorrow.
    assert world.settings.timezone == "Asia/Shanghai"
    early = dt.datetime(2026, 12, 4, 20, 31, tzinfo=dt.UTC)
    app = create_app(world.settings, clock=lambda: early, snapshot_check_s=0.05)
    with serving(app) as url:
        other = World(world.settings, url, world.tokens, app)
        r = check(other, REISSUED, "2026-12-05")
        assert r.status_code == 200, r.text
        assert r.json() == {"phoneNumberRecycled": False}
        r = check(other, REISSUED, "2026-12-06")
        assert r.status_code == 400 and r.json()["code"] == "OUT_OF_RANGE", r.text
        assert "future" in r.json()["message"]
