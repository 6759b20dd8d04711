"""Platforms close the loop over real HTTP (uvicorn on 127.0.0.1): download a feed day that lists
a recycled number, acknowledge it (JSON and CSV), and the carrier proves who was told what, when.

One story, in order (module-scoped server, a clock the test moves): bank downloads the daily
file that released N (and revalidates it: 304); drive downloads the rolling snapshot; late
downloads the reissue day's CSV. bank acknowledges N `unbound` as JSON, drive as CSV. Bad
uploads, missing or wrong tokens change nothing; a resubmission is stored once. Then
``notification_evidence`` shows every platform with its download times and acknowledgements,
``new_owner_view`` shows counts only, and the audit log holds no full number.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from pipelines.compliance.notifications import AckStore, new_owner_view, notification_evidence
from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.feeds.publish import publish_feed
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.layout import Layout
from pipelines.server import DEFAULT_SCOPES, TokenStore, create_app

from .test_server_http import serving, tenure

OPENAPI = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"
ACKS = "/number-recycling/v0.2/acknowledgements"
D1 = dt.date(2026, 11, 26)  # N released (feed day 1)
D2 = dt.date(2026, 11, 27)  # N reissued to a new holder (feed day 2)

N = "+8613800000002"  # prior holder 2023-10-09 .. 2026-08-01, released D1, new holder from D2
OTHER = "+8613800000007"  # released D1 too: the same files list it
KEPT = "+8613800000001"  # one holder all along, never in a feed
PRIOR_DATES = ("2023-10-09", "2026-08-01", "2026-11-26")  # the prior tenure and its release


class Clock:
    """The server's wall clock, moved by the test."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


@dataclass
class World:
    settings: Settings
    url: str
    tokens: dict[str, str]
    clock: Clock
    app: object

    def audit_text(self) -> str:
        self.app.state.audit.flush()  # type: ignore[attr-defined]
        return "".join(
            p.read_text() for p in sorted((self.settings.data_dir / "server" / "audit").glob("*.jsonl"))
        )

    def stored(self) -> int:
        store = AckStore.open(self.settings.data_dir)
        try:
            return store.count()
        finally:
            store.close()


def build(con: duckdb.DuckDBPyConnection) -> None:
    tenure(con, "T0", "+8613800000009", "2020-01-01")
    tenure(con, "T1", KEPT, "2023-10-09")
    tenure(con, "T2a", N, "2023-10-09", "2026-08-01", "cancel")
    tenure(con, "T7", OTHER, "2022-01-01", "2026-08-02", "cancel")
    con.execute("INSERT INTO releases VALUES (?, 'T2a', '2026-08-01', ?, 2, false, ?, 'GD')", [N, D1, D1])
    con.execute("INSERT INTO releases VALUES (?, 'T7', '2026-08-02', ?, 2, false, ?, 'GD')", [OTHER, D1, D1])
    tenure(con, "T2b", N, D2.isoformat(), opened_by="reissue")
    con.execute(
        "INSERT INTO reissues VALUES (?, 'T2a', 'T2b', ?, '2026-08-01', ?, false, ?, 'GD', 'f', 1)",
        [N, D2, D1, D2],
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = load_settings(env={}, data_dir=tmp_path_factory.mktemp("acks") / "data")
    with open_state(Layout(settings.data_dir).state_db) as con:
        build(con)
        publish_feed(settings, D1, con)
        publish_feed(settings, D2, con)
        publish_snapshot(settings, D2, con)
    ts = TokenStore.open(settings.data_dir)
    tokens = {
        "bank": ts.add("bank", DEFAULT_SCOPES.split(","), rate=1000, burst=1000),
        "drive": ts.add("drive", ["feeds", "ack"], rate=1000, burst=1000),
        "late": ts.add("late", ["feeds"], rate=1000, burst=1000),
        "checker": ts.add("checker", ["check"], rate=1000, burst=1000),
    }
    ts.close()
    clock = Clock(dt.datetime(2026, 11, 28, 1, 0, tzinfo=dt.UTC))
    app = create_app(settings, clock=clock, snapshot_check_s=0.05)
    with serving(app) as url:
        yield World(settings, url, tokens, clock, app)


def get(world: World, path: str, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(
        world.url + path,
        headers={"Authorization": f"Bearer {world.tokens[token]}", **(headers or {})},
        timeout=30,
    )


def ack(
    world: World,
    body: object,
    token: str | None = "bank",
    csv: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {world.tokens.get(token, token)}"
    h["Content-Type"] = "text/csv" if csv else "application/json"
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return httpx.post(world.url + ACKS, content=content, headers=h, timeout=30)


BANK_ACKS = {
    "acknowledgements": [
        {
            "phoneNumber": N,
            "status": "unbound",
            "feedDate": D1.isoformat(),
            "observedAt": "2026-11-28T09:15:00+08:00",
        },
        {"phoneNumber": OTHER, "status": "no_account", "feedDate": D1.isoformat()},
    ]
}
DRIVE_CSV = (
    "phone_number,status,feed_date,observed_at\n"
    f"{N},unbound,{D2},2026-11-28T03:00:00Z\n"
    f"{N},step_up_enabled,,\n"
)


def test_1_platforms_download_the_feed(world: World) -> None:
    world.clock.at = dt.datetime(2026, 11, 28, 1, 0, tzinfo=dt.UTC)
    first = get(world, f"/feeds/daily/{D1}/recycled.parquet", "bank")
    assert first.status_code == 200
    world.clock.at = dt.datetime(2026, 11, 28, 1, 5, tzinfo=dt.UTC)
    again = get(
        world, f"/feeds/daily/{D1}/recycled.parquet", "bank", {"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    world.clock.at = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC)
    assert get(world, "/feeds/snapshot/recycled.parquet", "drive").status_code == 200
    world.clock.at = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)
    assert get(world, f"/feeds/daily/{D2}/recycled.csv", "late").status_code == 200
    assert get(world, f"/feeds/daily/{D2}/manifest.json", "late").status_code == 200  # lists no number


def test_2_tokens_and_scopes(world: World) -> None:
    r = ack(world, BANK_ACKS, token=None)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHENTICATED")
    r = ack(world, BANK_ACKS, token="nrp_not-a-token")
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHENTICATED")
    for token in ("late", "checker"):  # valid tokens without the ack scope
        r = ack(world, BANK_ACKS, token=token)
        assert (r.status_code, r.json()["code"]) == (403, "PERMISSION_DENIED")
        assert "'ack'" in r.json()["message"]
    assert world.stored() == 0


@pytest.mark.parametrize(
    ("body", "csv", "expected"),
    [
        (
            {"acknowledgements": [BANK_ACKS["acknowledgements"][0], {"phoneNumber": N, "status": "deleted"}]},
            False,
            "item 2: status 'deleted'",
        ),
        (
            {
                "acknowledgements": [
                    *BANK_ACKS["acknowledgements"],
                    {"phoneNumber": "13800000002", "status": "unbound"},
                ]
            },
            False,
            "item 3: phoneNumber must be E.164",
        ),
        (
            {"acknowledgements": [{"phoneNumber": N, "status": "unbound", "feedDate": "2026-11-20"}]},
            False,
            "item 1: feedDate '2026-11-20' is not a published feed day",
        ),
        (
            {"acknowledgements": [{"phoneNumber": N, "status": "unbound", "observedAt": "2026-11-27 10:00"}]},
            False,
            "item 1: observedAt",
        ),
        (
            {
                "acknowledgements": [
                    {"phoneNumber": N, "status": "unbound", "observedAt": "2026-12-31T00:00:00Z"}
                ]
            },
            False,
            "is in the future",
        ),
        (
            {"acknowledgements": [{"phoneNumber": N, "status": "unbound", "note": "x"}]},
            False,
            "item 1: unknown field(s) note",
        ),
        ({"acknowledgements": []}, False, "no acknowledgements"),
        ({"queries": []}, False, '{"acknowledgements"'),
        (DRIVE_CSV + f"{N},unbound,2026-02-30,\n", True, "line 4: feed_date '2026-02-30'"),
        (DRIVE_CSV + f"{N},unbound\n", True, "line 4: expected 4 fields"),
        (
            "phoneNumber,status\n" + f"{N},unbound\n",
            True,
            "header line phone_number,status,feed_date,observed_at",
        ),
    ],
)
def test_3_bad_uploads_store_nothing(world: World, body: object, csv: bool, expected: str) -> None:
    r = ack(world, body, token="drive" if csv else "bank", csv=csv)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["code"] == "INVALID_ARGUMENT" and expected in doc["message"], doc["message"]
    assert N not in doc["message"]  # the number is not echoed into messages (they end up in logs)
    assert world.stored() == 0


def test_3b_too_many_items_is_out_of_range(world: World) -> None:
    body = "phone_number,status,feed_date,observed_at\n" + f"{N},unbound,,\n" * 100_001
    r = ack(world, body, token="drive", csv=True)
    assert (r.status_code, r.json()["code"]) == (400, "OUT_OF_RANGE")
    assert world.stored() == 0


def test_4_json_and_csv_acknowledgements_are_stored_once(world: World) -> None:
    world.clock.at = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)
    r = ack(world, BANK_ACKS, headers={"x-correlator": "ack-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "alreadyStored": 0, "receivedAt": "2026-11-29T09:00:00.000000Z"}
    assert r.headers["x-correlator"] == "ack-1"
    world.clock.at = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)
    r = ack(world, DRIVE_CSV, token="drive", csv=True)
    assert r.status_code == 200 and r.json()["accepted"] == 2 and r.json()["alreadyStored"] == 0
    assert world.stored() == 4

    world.clock.at = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    again = ack(world, BANK_ACKS)  # the same acknowledgements again: nothing new
    assert again.status_code == 200
    assert again.json() == {"accepted": 2, "alreadyStored": 2, "receivedAt": "2026-11-30T09:00:00.000000Z"}
    assert world.stored() == 4


def test_5_notification_evidence_names_who_was_told_when(world: World) -> None:
    ev = notification_evidence(world.settings, N)
    assert ev["msisdn"] == N
    assert [(row["feed_date"], row["event"]) for row in ev["listings"]] == [
        (D1.isoformat(), "released"),
        (D2.isoformat(), "reissued"),
    ]
    platforms = {p["platform"]: p for p in ev["platforms"]}
    assert list(platforms) == ["bank", "drive", "late"]  # sorted; checker never touched N

    bank = platforms["bank"]
    assert bank["notified"] == [
        {
            "feed_date": "2026-11-26",
            "first_at": "2026-11-28T01:00:00.000000Z",
            "path": "/feeds/daily/2026-11-26/recycled.parquet",
        }
    ]
    assert [(d["at"], d["status"]) for d in bank["downloads"]] == [
        ("2026-11-28T01:00:00.000000Z", 200),
        ("2026-11-28T01:05:00.000000Z", 304),
    ]
    assert [
        (a["status"], a["feed_date"], a["observed_at"], a["received_at"], a["source"])
        for a in bank["acknowledgements"]
    ] == [("unbound", "2026-11-26", "2026-11-28T01:15:00.000000Z", "2026-11-29T09:00:00.000000Z", "api")]

    drive = platforms["drive"]  # the snapshot of D2 holds both feed days
    assert [n["feed_date"] for n in drive["notified"]] == ["2026-11-26", "2026-11-27"]
    assert drive["downloads"][0]["snapshot_of"] == "2026-11-27"
    assert drive["downloads"][0]["at"] == "2026-11-28T02:00:00.000000Z"
    assert sorted(a["status"] for a in drive["acknowledgements"]) == ["step_up_enabled", "unbound"]

    late = platforms["late"]
    assert late["notified"] == [
        {
            "feed_date": "2026-11-27",
            "first_at": "2026-11-29T08:00:00.000000Z",
            "path": "/feeds/daily/2026-11-27/recycled.csv",
        }
    ]
    assert late["acknowledgements"] == []
    json.dumps(ev)  # JSON-serialisable
    assert notification_evidence(world.settings, N) == ev  # deterministic


def test_6_new_owner_sees_counts_only(world: World) -> None:
    view = new_owner_view(world.settings, N, dt.date(2026, 11, 30))
    assert view == {
        "number": "138****0002",
        "as_of": "2026-11-30",
        "holder_since": D2.isoformat(),
        "recycled": True,
        "platforms_notified": 3,
        "platforms_acknowledged": 2,
        "unbound": 2,
        "no_account": 0,
        "step_up_enabled": 1,
        "named": [],  # no platform agreed to be named: all counted
        "others": {"platforms": 3, "unbound": 2, "no_account": 0, "step_up_enabled": 1, "not_answered": 1},
    }
    text = json.dumps(view)
    for leak in (*PRIOR_DATES, "bank", "drive", "late", N, N[3:]):
        assert leak not in text, leak
    # as of the reissue day nobody had downloaded or acknowledged anything yet
    early = new_owner_view(world.settings, N, D2)
    assert (early["platforms_notified"], early["platforms_acknowledged"], early["unbound"]) == (0, 0, 0)
    # as of the 28th: downloads yes, acknowledgements (received the 29th) not yet
    mid = new_owner_view(world.settings, N, dt.date(2026, 11, 28))
    assert (mid["platforms_notified"], mid["unbound"]) == (2, 0)
    kept = new_owner_view(world.settings, KEPT, dt.date(2026, 11, 30))
    assert kept["recycled"] is False and kept["platforms_notified"] == 0


def test_7_audit_log_records_every_call_without_full_numbers(world: World) -> None:
    text = world.audit_text()
    entries = [json.loads(line) for line in text.splitlines()]
    acks = [e for e in entries if e["action"] == "acknowledge"]
    assert {e["status"] for e in acks} >= {200, 400, 401, 403}
    ok = [e for e in acks if e.get("correlator") == "ack-1"]
    assert ok and ok[0]["platform"] == "bank" and ok[0]["items"] == 2 and ok[0]["stored"] == 2
    assert ok[0]["counts"] == {"unbound": 1, "no_account": 1, "step_up_enabled": 0}
    downloads = [e for e in entries if e["action"] == "download" and e["status"] in (200, 304)]
    assert downloads and all(len(e["sha256"]) == 64 for e in downloads)
    for number in (N, OTHER, KEPT):
        assert number not in text and number[3:] not in text


def test_8_openapi_documents_the_endpoint(world: World) -> None:
    doc = json.loads(OPENAPI.read_text())
    op = doc["paths"][ACKS]["post"]
    assert op["operationId"] == "acknowledgeNumbers" and "ack" in op["description"]
    assert set(op["requestBody"]["content"]) == {"application/json", "text/csv"}
    assert httpx.get(world.url + "/openapi.json").json()["paths"][ACKS] == doc["paths"][ACKS]
