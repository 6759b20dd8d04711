"""Acknowledgements (reading, validation, store), notification evidence, the new holder's view, and
their CLI commands, over real feed files, a real audit log and a real SQLite store.

The carrier fixture publishes four feed days in which one number is recycled twice:
N: holder A until day 1 (released day 1), holder B from day 2 (reissued), B gone day 3
(released day 3), holder C from day 4 (reissued). C's view must count only what happened since
day 3; the evidence shows everything.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from lifecycle_testkit import insert_tenure
from number_recycling_client.wire import Envelope, Manifest
from typer.testing import CliRunner

from pipelines.cli.app import app as cli_app
from pipelines.compliance.notifications import (
    AckStore,
    AckUpload,
    acknowledgements_digest,
    new_owner_view,
    notification_evidence,
    read_acknowledgements,
    validate_acknowledgements,
)
from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.errors import DataContractError, TerminalError
from pipelines.feeds.publish import FeedPaths, load_root, publish_feed
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.layout import Layout
from pipelines.server.platforms import AuditLog, TokenStore

D1 = dt.date(2026, 9, 1)
NOW = dt.datetime(2026, 9, 10, 12, 0, tzinfo=dt.UTC)
N = "+8613800000002"  # recycled twice (see the module docstring)
M = "+8613800000003"  # released day 2
HELD = "+8613800000001"  # one holder since 2021, never recycled
FROZEN = "+8613800000004"  # cancelled day 2, not released: nobody holds it
PLATFORMS = ("p_old", "p_new", "p_snap", "p_stale", "p_ack_only")
PRIOR_DATES = ("2020-01-01", "2026-06-01", "2026-09-01", "2026-09-02", "2026-09-03")


def day(n: int) -> dt.date:
    return D1 + dt.timedelta(days=n - 1)


def at(n: int, hour: int = 10) -> dt.datetime:
    return dt.datetime.combine(day(n), dt.time(hour), dt.UTC)


def _release(
    con: duckdb.DuckDBPyConnection, msisdn: str, tid: str, disconnected: dt.date, on: dt.date
) -> None:
    con.execute(
        "INSERT INTO releases VALUES (?, ?, ?, ?, 2, false, ?, 'GD')", [msisdn, tid, disconnected, on, on]
    )


def _reissue(
    con: duckdb.DuckDBPyConnection,
    msisdn: str,
    prior: str,
    new: str,
    on: dt.date,
    disconnected: dt.date,
    released: dt.date,
) -> None:
    con.execute(
        "INSERT INTO reissues VALUES (?, ?, ?, ?, ?, ?, false, ?, 'GD', 'f', 1)",
        [msisdn, prior, new, on, disconnected, released, on],
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("carrier") / "data"
    settings = load_settings(env={}, data_dir=data)
    with open_state(Layout(data).state_db) as con:
        insert_tenure(con, "A", N, dt.date(2020, 1, 1), dt.date(2026, 6, 1), "cancel")
        _release(con, N, "A", dt.date(2026, 6, 1), day(1))
        insert_tenure(con, "B", N, day(2), day(3), "cancel", opened_by="reissue")
        _reissue(con, N, "A", "B", day(2), dt.date(2026, 6, 1), day(1))
        _release(con, N, "B", day(3), day(3))
        insert_tenure(con, "C", N, day(4), opened_by="reissue")
        _reissue(con, N, "B", "C", day(4), day(3), day(3))
        insert_tenure(con, "M1", M, dt.date(2019, 1, 1), dt.date(2026, 5, 1), "cancel")
        _release(con, M, "M1", dt.date(2026, 5, 1), day(2))
        insert_tenure(con, "H", HELD, dt.date(2021, 3, 1))
        insert_tenure(con, "F", FROZEN, dt.date(2021, 3, 1), day(2), "cancel")
        for n in range(1, 5):
            publish_feed(settings, day(n), con)
        publish_snapshot(settings, day(4), con)
    tokens = TokenStore.open(data)
    for name in PLATFORMS:
        tokens.add(name, ["feeds", "ack"])
    tokens.close()
    return data


@pytest.fixture
def settings(template: Path, tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    shutil.copytree(template, data)
    return load_settings(env={}, data_dir=data)


@pytest.fixture
def store(settings: Settings) -> Iterator[AckStore]:
    s = AckStore.open(settings.data_dir)
    yield s
    s.close()


def snapshot_sha(settings: Settings, n: int) -> str:
    path = FeedPaths.of(settings).manifest(day(n))
    manifest = Envelope.from_bytes(path.read_bytes(), Manifest).signed
    return next(m.sha256 for m in manifest.snapshot if m.path.endswith(".parquet"))


def acks(
    body: str | bytes | dict[str, object],
    csv: bool = False,
    now: dt.datetime = NOW,
    published: tuple[dt.date, ...] = (day(1), day(2), day(3), day(4)),
) -> pa.Table:
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    upload = read_acknowledgements(data, "text/csv" if csv else "application/json")
    return validate_acknowledgements(upload, published=published, now=now)


def invalid(body: str | bytes | dict[str, object], csv: bool = False) -> str:
    with pytest.raises(DataContractError) as info:
        acks(body, csv)
    return str(info.value)


# ------------------------------------------------------------------ reading and validation


def test_json_and_csv_give_the_same_normalised_rows_and_digest() -> None:
    as_json = acks(
        {
            "acknowledgements": [
                {
                    "phoneNumber": N,
                    "status": "unbound",
                    "feedDate": "2026-09-03",
                    "observedAt": "2026-09-04t08:00:00.25+08:00",
                },
                {"phoneNumber": M, "status": "no_account", "feedDate": None, "observedAt": None},
                {"phoneNumber": HELD, "status": "step_up_enabled", "observedAt": "2026-09-05 01:02:03z"},
            ]
        }
    )
    as_csv = acks(
        b"\xef\xbb\xbfphone_number, status, feed_date, observed_at\r\n"
        b"+8613800000002,unbound,2026-09-03,2026-09-04T00:00:00.25Z\r\n"
        b" +8613800000003 , no_account ,,\r\n"
        b'"+8613800000001","step_up_enabled","","2026-09-05T01:02:03+00:00"\r\n',
        csv=True,
    )
    assert (
        as_json.to_pylist()
        == as_csv.to_pylist()
        == [
            {
                "msisdn": N,
                "status": "unbound",
                "feed_date": "2026-09-03",
                "observed_at": "2026-09-04T00:00:00.250000Z",
            },
            {"msisdn": M, "status": "no_account", "feed_date": None, "observed_at": None},
            {
                "msisdn": HELD,
                "status": "step_up_enabled",
                "feed_date": None,
                "observed_at": "2026-09-05T01:02:03.000000Z",
            },
        ]
    )
    assert acknowledgements_digest(as_json) == acknowledgements_digest(as_csv)
    assert len(acknowledgements_digest(as_json)) == 64


@pytest.mark.parametrize(
    ("body", "csv", "expected"),
    [
        (b"{", False, "not valid JSON"),
        ({"acknowledgements": [N]}, False, "item 1: each acknowledgement must be a JSON object"),
        (
            {"acknowledgements": [{"phoneNumber": N, "status": "unbound"}, {"phoneNumber": N, "status": 1}]},
            False,
            "item 2: status must be a string",
        ),
        (
            {"acknowledgements": [{"phoneNumber": N, "status": "unbound"}, {"status": "unbound"}]},
            False,
            "item 2: phoneNumber is missing",
        ),
        ({"acknowledgements": [{"phoneNumber": N}]}, False, "item 1: status is missing"),
        (
            {
                "acknowledgements": [
                    {"phoneNumber": N, "status": "unbound", "observedAt": "2026-02-30T00:00:00Z"}
                ]
            },
            False,
            "item 1: observedAt '2026-02-30T00:00:00Z' is not a real date and time",
        ),
        (
            {
                "acknowledgements": [
                    {"phoneNumber": N, "status": "unbound", "observedAt": "2026-09-10T12:06:00Z"}
                ]
            },
            False,
            "is in the future",
        ),
        (
            {"acknowledgements": [{"phoneNumber": N, "status": "unbound", "feedDate": "2026-09-05"}]},
            False,
            "item 1: feedDate '2026-09-05' is not a published feed day",
        ),
        (
            "phone_number,status,feed_date,observed_at\n" + f"{N},unbound,,\n\n{N},unbound,,\n",
            True,
            "line 3: phone_number is missing",
        ),
        (
            "phone_number,status,feed_date,observed_at\n" + f"{N},unbound,,\n{N},unbound,,,\n",
            True,
            "line 3: expected 4 fields",
        ),
        (
            b"phone_number,status,feed_date,observed_at\n+8613800000002,unbound,,\n+86138\xff,unbound,,\n",
            True,
            "line 3: not UTF-8",
        ),
        ("phone_number,status,feed_date,observed_at\n", True, "holds no acknowledgements"),
    ],
)
def test_bad_uploads_name_the_item_and_the_problem(
    body: str | bytes | dict[str, object], csv: bool, expected: str
) -> None:
    message = invalid(body, csv)
    assert expected in message, message
    assert N not in message


def test_every_bad_item_is_counted_and_the_first_described() -> None:
    items = [{"phoneNumber": N, "status": "unbound"}] * 5 + [{"phoneNumber": "+0", "status": "gone"}] * 3
    message = invalid({"acknowledgements": items})
    assert message.startswith("item 6: phoneNumber must be E.164")
    assert "status 'gone' is not one of" in message and "3 item(s) in all are invalid" in message


def test_observed_at_may_run_a_little_ahead_of_the_server_clock() -> None:
    ok = acks(
        {"acknowledgements": [{"phoneNumber": N, "status": "unbound", "observedAt": "2026-09-10T12:04:59Z"}]}
    )
    assert ok.num_rows == 1


def test_upload_names_items_as_the_uploader_counts() -> None:
    rows = pa.table(
        {c: pa.array([], pa.string()) for c in ("phone_number", "status", "feed_date", "observed_at")}
    )
    assert AckUpload(rows, "json").where(0) == "item 1" and AckUpload(rows, "csv").where(0) == "line 2"


# ------------------------------------------------------------------ the store


def test_store_keeps_one_row_per_platform_number_status_and_feed_day(store: AckStore) -> None:
    first = acks(
        {
            "acknowledgements": [
                {
                    "phoneNumber": N,
                    "status": "unbound",
                    "feedDate": "2026-09-03",
                    "observedAt": "2026-09-04T00:00:00Z",
                },
                {
                    "phoneNumber": N,
                    "status": "unbound",
                    "feedDate": "2026-09-03",
                    "observedAt": "2026-09-05T00:00:00Z",
                },
                {"phoneNumber": N, "status": "unbound"},  # no feed day: a different acknowledgement
            ]
        }
    )
    r1 = store.add("p_new", first, at(5), "api")
    assert (r1.accepted, r1.stored) == (3, 2)
    r2 = store.add("p_new", first, at(6), "import:p_new.csv")
    assert (r2.accepted, r2.stored, r2.batch_id) == (3, 0, r1.batch_id + 1)
    assert r2.to_dict() == {"accepted": 3, "alreadyStored": 3, "receivedAt": "2026-09-06T10:00:00.000000Z"}
    r3 = store.add("p_old", first.slice(0, 1), at(6), "api")  # another platform: its own row
    assert r3.stored == 1
    rows = store.for_number(N)
    assert [
        (r["platform"], r["feed_date"], r["observed_at"], r["received_at"], r["source"]) for r in rows
    ] == [
        ("p_new", None, None, "2026-09-05T10:00:00.000000Z", "api"),
        ("p_new", "2026-09-03", "2026-09-04T00:00:00.000000Z", "2026-09-05T10:00:00.000000Z", "api"),
        ("p_old", "2026-09-03", "2026-09-04T00:00:00.000000Z", "2026-09-06T10:00:00.000000Z", "api"),
    ]  # the first observed_at and received_at are kept
    assert store.for_number(M) == []


def test_a_failing_upload_leaves_nothing_behind(store: AckStore) -> None:
    bad = pa.table(
        {
            "msisdn": [N, None],
            "status": ["unbound", "unbound"],
            "feed_date": pa.array([None, None], pa.string()),
            "observed_at": pa.array([None, None], pa.string()),
        }
    )
    with pytest.raises(Exception, match="NOT NULL"):
        store.add("p_new", bad, at(5), "api")
    assert store.count() == 0
    good = acks({"acknowledgements": [{"phoneNumber": N, "status": "unbound"}]})
    assert store.add("p_new", good, at(5), "api").batch_id == 1  # the failed batch row was rolled back too


# ------------------------------------------------------------------ evidence and the holder's view


def write_history(settings: Settings, store: AckStore) -> None:
    """Downloads in the audit log and acknowledgements in the store (see the module docstring)."""
    when = [at(1)]
    audit = AuditLog.open(settings.data_dir, clock=lambda: when[0])
    snap2, snap4 = snapshot_sha(settings, 2), snapshot_sha(settings, 4)

    def download(
        n: int, hour: int, platform: str | None, path: str, status: int = 200, sha: str | None = "0" * 64
    ) -> None:
        when[0] = at(n, hour)
        fields = {} if sha is None else {"sha256": sha}
        audit.record(platform, "download", path=path, status=status, **fields)

    download(1, 20, "p_old", f"/feeds/daily/{day(1)}/recycled.parquet")
    download(2, 20, "p_stale", "/feeds/snapshot/recycled.parquet", sha=snap2)  # holds days 1-2
    download(3, 20, "p_new", f"/feeds/daily/{day(3)}/recycled.parquet", status=404)
    download(4, 9, "p_new", f"/feeds/daily/{day(3)}/manifest.json")  # lists no number
    download(4, 10, "p_new", f"/feeds/daily/{day(3)}/recycled.csv")
    download(4, 11, "p_snap", "/feeds/snapshot/recycled.parquet", sha=snap4)  # holds days 1-4
    download(4, 12, "p_old", "/feeds/snapshot/recycled.parquet", sha=None)  # logged before SHA-256s
    download(4, 13, None, f"/feeds/daily/{day(4)}/recycled.parquet", status=401)
    download(6, 10, "p_new", f"/feeds/daily/{day(4)}/recycled.parquet", status=304)
    audit.close()
    with open(settings.data_dir / "server" / "audit" / "feed-downloads" / f"{day(6)}.jsonl", "a") as fh:
        fh.write('{"action":"download","at":"2026-09-06T1')  # the server is half-way through a line

    def add(platform: str, received: dt.datetime, *items: dict[str, str]) -> None:
        store.add(platform, acks({"acknowledgements": list(items)}), received, "api")

    add("p_old", at(1, 22), {"phoneNumber": N, "status": "unbound", "feedDate": str(day(1))})
    add("p_new", at(4, 11), {"phoneNumber": N, "status": "unbound", "feedDate": str(day(3))})
    add(
        "p_snap",
        at(5),
        {"phoneNumber": N, "status": "no_account"},
        {"phoneNumber": N, "status": "unbound", "feedDate": str(day(1))},
    )  # about the first recycling
    add(
        "p_ack_only",
        at(5),
        {"phoneNumber": N, "status": "step_up_enabled"},
        {"phoneNumber": M, "status": "unbound"},
    )


def test_notification_evidence_ties_downloads_to_feed_days(settings: Settings, store: AckStore) -> None:
    write_history(settings, store)
    ev = notification_evidence(settings, N)
    assert [(r["feed_date"], r["event"], r["disconnected_on"]) for r in ev["listings"]] == [
        ("2026-09-01", "released", "2026-06-01"),
        ("2026-09-02", "reissued", "2026-06-01"),
        ("2026-09-03", "released", "2026-09-03"),
        ("2026-09-04", "reissued", "2026-09-03"),
    ]
    by = {p["platform"]: p for p in ev["platforms"]}
    assert list(by) == ["p_ack_only", "p_new", "p_old", "p_snap", "p_stale"]

    def notified(name: str) -> list[tuple[str, str]]:
        return [(n["feed_date"], n["first_at"][:13]) for n in by[name]["notified"]]

    assert notified("p_old") == [("2026-09-01", "2026-09-01T20")]  # its SHA-less snapshot proves nothing
    assert notified("p_stale") == [("2026-09-01", "2026-09-02T20"), ("2026-09-02", "2026-09-02T20")]
    assert notified("p_snap") == [(f"2026-09-0{i}", "2026-09-04T11") for i in (1, 2, 3, 4)]
    assert notified("p_new") == [("2026-09-03", "2026-09-04T10"), ("2026-09-04", "2026-09-06T10")]
    assert [(d["path"].rsplit("/", 1)[1], d["status"]) for d in by["p_new"]["downloads"]] == [
        ("recycled.csv", 200),
        ("recycled.parquet", 304),
    ]  # not the 404, not the manifest
    assert by["p_snap"]["downloads"][0]["snapshot_of"] == "2026-09-04"
    assert by["p_ack_only"]["downloads"] == [] and by["p_ack_only"]["notified"] == []
    assert [a["status"] for a in by["p_snap"]["acknowledgements"]] == ["no_account", "unbound"]
    assert notification_evidence(settings, N) == ev
    assert json.loads(json.dumps(ev)) == ev

    other = notification_evidence(settings, M)
    assert [r["feed_date"] for r in other["listings"]] == ["2026-09-02"]
    assert [p["platform"] for p in other["platforms"]] == ["p_ack_only", "p_snap", "p_stale"]
    nothing = notification_evidence(settings, HELD)
    assert nothing == {"msisdn": HELD, "listings": [], "platforms": []}


def test_new_owner_counts_only_the_current_tenure(settings: Settings, store: AckStore) -> None:
    write_history(settings, store)
    view = new_owner_view(settings, N, day(6))
    assert view == {
        "number": "138****0002",
        "as_of": "2026-09-06",
        "holder_since": "2026-09-04",
        "recycled": True,
        "platforms_notified": 2,  # p_new and p_snap; p_old and p_stale only saw the first recycling
        "platforms_acknowledged": 3,  # p_new, p_snap (no_account) and p_ack_only
        "unbound": 1,
        "no_account": 1,
        "step_up_enabled": 1,
        "named": [],  # no platform agreed to be named
        "others": {"platforms": 3, "unbound": 1, "no_account": 1, "step_up_enabled": 1, "not_answered": 0},
    }
    text = json.dumps(view)
    for leak in (*PRIOR_DATES, *PLATFORMS, N, N[3:]):
        assert leak not in text, leak
    on_day_4 = new_owner_view(settings, N, day(4))  # p_snap and p_ack_only answered on day 5
    assert (on_day_4["platforms_notified"], on_day_4["platforms_acknowledged"], on_day_4["unbound"]) == (
        2,
        1,
        1,
    )
    assert on_day_4["others"]["not_answered"] == 1  # p_snap: notified on day 4, answered on day 5


def test_new_owner_names_only_platforms_that_agreed(settings: Settings, store: AckStore) -> None:
    write_history(settings, store)
    tokens = TokenStore.open(settings.data_dir)
    tokens.set_named("p_new", True)
    tokens.set_named("p_old", True)  # agreed, but told only of the first recycling: not listed
    tokens.close()
    view = new_owner_view(settings, N, day(6))
    assert view["named"] == [{"platform": "p_new", "answers": ["unbound"]}]
    assert view["others"] == {
        "platforms": 2,  # p_snap and p_ack_only, counted, never named
        "unbound": 0,
        "no_account": 1,
        "step_up_enabled": 1,
        "not_answered": 0,
    }
    assert view["unbound"] == 1 and view["platforms_acknowledged"] == 3  # totals unchanged
    text = json.dumps(view)
    for leak in (*PRIOR_DATES, "p_snap", "p_ack_only", "p_old", "p_stale", N):
        assert leak not in text, leak


def test_new_owner_view_of_numbers_not_recycled_or_not_held(settings: Settings) -> None:
    held = new_owner_view(settings, HELD, day(6))
    assert held["recycled"] is False and held["holder_since"] == "2021-03-01"
    assert held["platforms_notified"] == held["unbound"] == 0
    with pytest.raises(TerminalError, match="no holder"):
        new_owner_view(settings, FROZEN, day(6))
    with pytest.raises(TerminalError, match="no holder"):
        new_owner_view(settings, N, day(3))  # between holders B and C
    with pytest.raises(TerminalError, match=r"E\.164"):
        new_owner_view(settings, "13800000002", day(6))
    shutil.rmtree(Layout(settings.data_dir).snapshot_dir)
    with pytest.raises(TerminalError, match="no query snapshot"):
        new_owner_view(settings, N, day(6))


# ------------------------------------------------------------------ CLI


def run(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, [*args, "--data", str(settings.data_dir)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(result.output.split())  # rich wraps at the runner's width


def test_cli_acks_import_is_all_or_nothing(settings: Settings, tmp_path: Path) -> None:
    good = tmp_path / "p_new.csv"
    good.write_text(f"phone_number,status,feed_date,observed_at\n{N},unbound,{day(3)},\n{M},no_account,,\n")
    code, out = run(settings, "acks", "import", "--platform", "p_new", str(good))
    assert code == 0 and "imported 2 acknowledgement(s) from p_new: 2 new" in out
    code, out = run(settings, "acks", "import", "--platform", "p_new", str(good))
    assert code == 0 and "0 new, 2 already stored" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(f"phone_number,status,feed_date,observed_at\n{HELD},unbound,,\n{HELD},maybe,,\n")
    code, out = run(settings, "acks", "import", "--platform", "p_new", str(bad))
    assert code == 1 and "line 3: status 'maybe'" in out
    code, out = run(settings, "acks", "import", "--platform", "nobody", str(good))
    assert code != 0 and "no platform named" in out
    s = AckStore.open(settings.data_dir)
    try:
        assert s.count() == 2 and s.for_number(HELD) == []
        assert s.for_number(N)[0]["source"] == "import:p_new.csv"
    finally:
        s.close()


def test_cli_notifications_and_new_owner_mask_the_number(settings: Settings, store: AckStore) -> None:
    write_history(settings, store)
    for args in (("notifications", "13800000002"), ("notifications", N, "--json")):
        code, out = run(settings, *args)
        assert code == 0 and "138****0002" in out and N not in out and "13800000002" not in out
        assert "p_snap" in out
    code, out = run(settings, "notifications", N, "--json")
    assert len(json.loads(out)["platforms"]) == 5
    code, out = run(settings, "new-owner", N, "--as-of", str(day(6)), "--json")
    assert code == 0 and json.loads(out)["platforms_notified"] == 2 and N not in out
    code, out = run(settings, "new-owner", N, "--as-of", str(day(6)))
    assert code == 0 and "2 platform(s) notified, 1 confirmed unbinding" in out
    assert not any(p in out for p in PLATFORMS) and "2026-09-03" not in out and N not in out


def test_cli_root_rotate_and_platform_scopes(settings: Settings) -> None:
    before = load_root(settings)
    assert before is not None
    code, out = run(settings, "root", "rotate")
    after = load_root(settings)
    assert code == 0 and after is not None and after.signed.version == before.signed.version + 1
    assert f"version {after.signed.version}" in out
    assert after.signed.expires.date() == day(4) + dt.timedelta(days=365)  # from the newest feed day
    code, _ = run(settings, "root", "rotate", "--date", "2026-09-08", "--keep-online-key")
    again = load_root(settings)
    assert code == 0 and again is not None and again.signed.version == after.signed.version + 1
    assert again.signed.roles["manifest"] == after.signed.roles["manifest"]

    code, _ = run(settings, "platform", "scopes", "p_old", "--scope", "check")
    tokens = TokenStore.open(settings.data_dir)
    try:
        assert {p.name: p.scopes for p in tokens.list()}["p_old"] == frozenset({"check"})
    finally:
        tokens.close()
    with pytest.raises(Exception, match="scopes must be"):
        run(settings, "platform", "scopes", "p_old", "--scope", "admin")


def test_audit_copies_feed_downloads_and_evidence_reads_older_days_whole(settings: Settings) -> None:
    audit_dir = settings.data_dir / "server" / "audit"
    when = [at(4)]
    log = AuditLog.open(settings.data_dir, clock=lambda: when[0])
    log.record("p_new", "check", number=N, status=200)
    log.record(
        "p_new", "download", path=f"/feeds/daily/{day(4)}/recycled.parquet", status=200, sha256="1" * 64
    )
    log.record("p_new", "download", path=f"/feeds/daily/{day(4)}/recycled.parquet", status=404)
    log.record("p_new", "download", path="/feeds/timestamp.json", status=200, sha256="2" * 64)
    log.close()
    copied = (audit_dir / "feed-downloads" / f"{day(4)}.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in copied] == [200]
    assert len((audit_dir / f"{day(4)}.jsonl").read_text().splitlines()) == 4

    # a day logged before the copy existed is read whole, and gets no partial copy later
    legacy = {
        "action": "download",
        "at": "2026-09-05T08:00:00.000+00:00",
        "path": f"/feeds/daily/{day(3)}/recycled.csv",
        "platform": "p_old",
        "status": 200,
    }
    (audit_dir / f"{day(5)}.jsonl").write_text(json.dumps(legacy) + "\n")
    when[0] = at(5, 9)
    log = AuditLog.open(settings.data_dir, clock=lambda: when[0])
    log.record("p_snap", "download", path=f"/feeds/daily/{day(4)}/recycled.csv", status=200, sha256="3" * 64)
    log.close()
    assert not (audit_dir / "feed-downloads" / f"{day(5)}.jsonl").exists()
    by = {p["platform"]: p for p in notification_evidence(settings, N)["platforms"]}
    assert [n["first_at"] for n in by["p_old"]["notified"]] == ["2026-09-05T08:00:00.000000Z"]
    assert [n["feed_date"] for n in by["p_snap"]["notified"]] == ["2026-09-04"]
    assert [n["feed_date"] for n in by["p_new"]["notified"]] == ["2026-09-04"]
