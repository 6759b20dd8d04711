"""`recycle pull` against a real server (uvicorn on 127.0.0.1): it stores a verified feed, and
rejects tampered, rolled-back, frozen, reordered and gapped feeds with nothing stored; it
follows a root rotation; and its local answers equal the server's bulk answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from number_recycling_client.store import STATE_DB
from number_recycling_client.wire import ROLE_TIMESTAMP, Envelope, Manifest, Root, Timestamp, sha256_hex

from pipelines.client import HttpFetcher, LocalFeed, check_local, pull
from pipelines.config import Settings, load_settings
from pipelines.db import open_state
from pipelines.errors import (
    ExpiredMetadataError,
    FeedGapError,
    FeedOrderError,
    FormatError,
    ProofError,
    RollbackError,
    SignatureError,
    TamperedFileError,
    VerificationError,
)
from pipelines.feeds import publish
from pipelines.feeds.publish import publish_feed, rotate_root
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.layout import Layout
from pipelines.ledger.ledger import Ledger
from pipelines.ledger.openings import OpeningsStore
from pipelines.ledger.signer import load_or_create_signer
from pipelines.server import TokenStore, create_app

from .test_server_http import tenure

D1 = dt.date(2026, 9, 1)


def day(n: int) -> dt.date:
    return D1 + dt.timedelta(days=n - 1)


def at(n: int, hours: float = 12) -> Callable[[], dt.datetime]:
    moment = dt.datetime(day(n).year, day(n).month, day(n).day, tzinfo=dt.UTC) + dt.timedelta(hours=hours)
    return lambda: moment


# ------------------------------------------------------------------ a publishing carrier


def release(
    con: duckdb.DuckDBPyConnection, msisdn: str, tid: str, disconnected: dt.date, on: dt.date
) -> None:
    con.execute(
        "INSERT INTO releases VALUES (?, ?, ?, ?, 2, false, ?, 'GD')", [msisdn, tid, disconnected, on, on]
    )


def reissue(
    con: duckdb.DuckDBPyConnection,
    msisdn: str,
    prior: str,
    new: str,
    on: dt.date,
    disconnected: dt.date,
    released: dt.date | None,
) -> None:
    con.execute(
        "INSERT INTO reissues VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'GD', 'f', 1)",
        [msisdn, prior, new, on, disconnected, released, released is None, on],
    )


@dataclass
class Carrier:
    settings: Settings

    def publish(self, *days: int) -> None:
        layout = Layout(self.settings.data_dir)
        signer = load_or_create_signer(layout.keys_dir, self.settings.ledger.key_name)
        with (
            OpeningsStore.open(self.settings.data_dir / "private" / "openings", layout.keys_dir) as store,
            open_state(layout.state_db) as con,
        ):
            ledger = Ledger.open(layout.ledger_dir, signer, self.settings.ledger.origin, store)
            try:
                for n in days:
                    publish_feed(self.settings, day(n), con, ledger)
                publish_snapshot(self.settings, day(days[-1]), con)
            finally:
                ledger.close()

    @property
    def feeds(self) -> Path:
        return Layout(self.settings.data_dir).feeds_dir

    def token(self) -> str:
        ts = TokenStore.open(self.settings.data_dir)
        try:
            return ts.add("bank", ["feeds", "bulk", "check"], rate=10_000, burst=10_000)
        finally:
            ts.close()


def seed_history(con: duckdb.DuckDBPyConnection) -> None:
    for i in range(1, 9):  # eight numbers cancelled in August, released on days 1..4, two a day
        msisdn = f"+86138000001{i:02d}"
        tenure(con, f"T{i}", msisdn, dt.date(2020, 1, i), dt.date(2026, 8, i), "cancel")
        release(con, msisdn, f"T{i}", dt.date(2026, 8, i), day((i + 1) // 2))
    tenure(con, "T1b", "+8613800000101", day(3), opened_by="reissue")
    reissue(con, "+8613800000101", "T1", "T1b", day(3), dt.date(2026, 8, 1), day(1))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A carrier that published days 1 and 2; every test gets its own copy."""
    base = tmp_path_factory.mktemp("carrier")
    carrier = Carrier(load_settings(env={}, data_dir=base / "data"))
    with open_state(Layout(carrier.settings.data_dir).state_db) as con:
        seed_history(con)
    carrier.publish(1, 2)
    token = carrier.token()
    shutil.copy(carrier.feeds / "roots" / "1.root.json", base / "pinned-root.json")
    return base, token


@contextmanager
def serving(app: Any, *, lifespan: Literal["on", "off"] = "off") -> Iterator[str]:
    """uvicorn on loopback, its URL; ``lifespan="on"`` as `recycle serve` runs it (the app's
    background tasks, e.g. event delivery, run too)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan=lifespan
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Setup:
    carrier: Carrier
    url: str
    token: str
    pinned: Path
    state: Path

    def pull(self, when: int = 4, root: bool = True, **kw: Any) -> Any:
        return pull(self.url, self.token, self.state, self.pinned if root else None, clock=at(when), **kw)


@pytest.fixture
def setup(template: tuple[Path, str], tmp_path: Path) -> Iterator[Setup]:
    base, token = template
    shutil.copytree(base / "data", tmp_path / "data")
    carrier = Carrier(load_settings(env={}, data_dir=tmp_path / "data"))
    with serving(create_app(carrier.settings, snapshot_check_s=0.05)) as url:
        yield Setup(carrier, url, token, base / "pinned-root.json", tmp_path / "client")


def stored(state: Path) -> tuple[list[tuple[Any, ...]], dict[str, bytes]]:
    """Everything a client has stored (rows and state), to prove a failed pull changed nothing."""
    if not (state / STATE_DB).exists():
        return [], {}
    con = sqlite3.connect(state / STATE_DB)
    try:
        rows = con.execute("SELECT seq, * FROM feed_rows ORDER BY seq").fetchall()
        kv = {k: bytes(v) for k, v in con.execute("SELECT key, value FROM client_state").fetchall()}
    finally:
        con.close()
    return rows, kv


def rejected(s: Setup, error: type[VerificationError], match: str | None = None, **kw: Any) -> None:
    before = stored(s.state)
    with pytest.raises(error, match=match):
        s.pull(**kw)
    assert stored(s.state) == before, "a failed pull must store nothing"


# ------------------------------------------------------------------ the happy path


def test_pull_verifies_then_stores_and_answers_locally(setup: Setup) -> None:
    first = setup.pull(when=2)
    assert (first.from_seq, first.to_seq, first.rows, first.root_version) == (0, 2, 4, 1)
    assert first.checkpoint_size == 2
    assert setup.pull(when=2).up_to_date

    setup.carrier.publish(3, 4)
    second = setup.pull(when=4)
    assert (second.from_seq, second.to_seq, second.rows, second.checkpoint_size) == (2, 4, 5, 4)
    rows, kv = stored(setup.state)
    assert [r[0] for r in rows] == list(range(1, 10)) and kv["seq"] == b"4"

    yes = check_local(setup.state, "+8613800000101", dt.date(2026, 7, 1))
    assert yes.recycled and yes.row is not None and yes.row["disconnected_on"] == dt.date(2026, 8, 1)
    assert yes.row["event"] == "released" and yes.covered_from == day(1)
    # in the freeze gap, reissued since: yes, and the reissue is the row that says why
    gap = check_local(setup.state, "+8613800000101", dt.date(2026, 8, 2))
    assert gap.recycled and gap.row is not None and gap.row["event"] == "reissued"
    assert not check_local(setup.state, "+8613800000101", day(4)).recycled  # the new holder's
    assert not check_local(setup.state, "+8613999999999", dt.date(2026, 1, 1)).recycled


def test_first_pull_needs_a_pinned_root(setup: Setup, tmp_path: Path) -> None:
    rejected(setup, SignatureError, "--root", root=False)
    other = Carrier(load_settings(env={}, data_dir=tmp_path / "other"))
    with open_state(Layout(other.settings.data_dir).state_db) as con:
        seed_history(con)
    other.publish(1)
    setup.pinned = other.feeds / "root.json"  # another carrier's root does not verify this feed
    rejected(setup, SignatureError)
    assert not stored(setup.state)[1]


# ------------------------------------------------------------------ attacks, each rejected with nothing stored


def test_tampered_file_is_rejected(setup: Setup) -> None:
    setup.pull(when=2)
    setup.carrier.publish(3, 4)
    path = setup.carrier.feeds / "daily" / day(3).isoformat() / "recycled.csv"  # what the client reads
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    rejected(setup, TamperedFileError, "SHA-256")


def test_rolled_back_timestamp_is_rejected(setup: Setup) -> None:
    setup.carrier.publish(3)
    old = (setup.carrier.feeds / "timestamp.json").read_bytes()
    setup.carrier.publish(4)
    setup.pull(when=4)
    (setup.carrier.feeds / "timestamp.json").write_bytes(old)
    rejected(setup, RollbackError, "rollback")


def test_frozen_feed_is_rejected(setup: Setup) -> None:
    # the carrier stops publishing after day 2: three days later the timestamp has expired
    rejected(setup, ExpiredMetadataError, "expired", when=5)


def test_reordered_manifests_are_rejected(setup: Setup) -> None:
    setup.pull(when=2)
    setup.carrier.publish(3, 4)
    m3, m4 = (setup.carrier.feeds / "manifests" / f"{n}.json" for n in (3, 4))
    a, b = m3.read_bytes(), m4.read_bytes()
    m3.write_bytes(b)
    m4.write_bytes(a)
    rejected(setup, FeedOrderError, "reordered")


def test_gap_in_the_feed_is_rejected(setup: Setup) -> None:
    setup.carrier.publish(3, 4)
    (setup.carrier.feeds / "manifests" / "3.json").unlink()
    rejected(setup, FeedGapError, "manifest seq 3")


def test_timestamp_signed_by_a_stranger_is_rejected(setup: Setup, tmp_path: Path) -> None:
    path = setup.carrier.feeds / "timestamp.json"
    stamp = Envelope.from_bytes(path.read_bytes(), Timestamp)
    rogue = load_or_create_signer(tmp_path / "rogue", "rogue/online")
    path.write_bytes(Envelope.create(stamp.signed, [rogue]).to_bytes())
    rejected(setup, SignatureError, "timestamp")


def test_tampered_ledger_tile_is_rejected(setup: Setup) -> None:
    setup.pull(when=2)
    setup.carrier.publish(3, 4)
    tile = Layout(setup.carrier.settings.data_dir).ledger_dir / "tile" / "0" / "000.p" / "4"
    data = bytearray(tile.read_bytes())
    data[0] ^= 0x80  # the hash of entry 0, a sibling on the inclusion path of entries 2 and 3
    tile.write_bytes(bytes(data))
    rejected(setup, ProofError)


def test_pull_waits_out_the_rate_limit(setup: Setup) -> None:
    ts = TokenStore.open(setup.carrier.settings.data_dir)
    token = ts.add("throttled", ["feeds"], rate=50, burst=2)
    ts.close()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(0.05)  # at 50 requests/s the bucket has refilled

    fetcher = HttpFetcher(setup.url, token, sleep=sleep)
    try:
        report = pull(setup.url, token, setup.state, setup.pinned, clock=at(2), fetcher=fetcher)
    finally:
        fetcher.close()
    assert report.to_seq == 2 and waits and all(w >= 1 for w in waits)


# ------------------------------------------------------------------ root rotation


def test_client_follows_a_root_rotation(setup: Setup, tmp_path: Path) -> None:
    setup.pull(when=2)
    rotate_root(setup.carrier.settings, day(3))
    setup.carrier.publish(3)
    report = setup.pull(when=3)
    assert (report.root_version, report.to_seq) == (2, 3)
    stored_root = Envelope.from_bytes(stored(setup.state)[1]["root"], Root)
    assert stored_root.signed.version == 2

    # a root v3 signed only by a new key (not by v2's root key) is refused
    rogue = load_or_create_signer(tmp_path / "rogue", "rogue/root")
    doc = Root(
        3,
        stored_root.signed.expires,
        stored_root.signed.keys,
        stored_root.signed.roles,
        stored_root.signed.ledger,
    )
    (setup.carrier.feeds / "roots" / "3.root.json").write_bytes(Envelope.create(doc, [rogue]).to_bytes())
    rejected(setup, SignatureError, "root v3", when=3)


# ------------------------------------------------------------------ a publisher of a later 1.x version

LATER = {"x_later": {"note": "added by 1.7"}}  # an unknown top-level field in every document
NESTED = {"x_nested": 7}  # and one inside an object this version knows (a role, a file, the pin)


@dataclass(frozen=True)
class Later:
    """Mixed in before a wire type: the defaults of that type as a 1.7 publisher builds it."""

    spec_version: str = "1.7"
    unrecognized_fields: Mapping[str, Any] = field(default_factory=lambda: LATER)


@dataclass(frozen=True)
class LaterRoot(Later, Root):
    def __post_init__(self) -> None:
        super().__post_init__()
        roles = {name: dataclasses.replace(r, unrecognized_fields=NESTED) for name, r in self.roles.items()}
        object.__setattr__(self, "roles", roles)


@dataclass(frozen=True)
class LaterManifest(Later, Manifest):
    def __post_init__(self) -> None:
        super().__post_init__()
        files = tuple(dataclasses.replace(f, unrecognized_fields=NESTED) for f in self.files)
        object.__setattr__(self, "files", files)


@dataclass(frozen=True)
class LaterTimestamp(Later, Timestamp):
    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", dataclasses.replace(self.manifest, unrecognized_fields=NESTED))


def test_pull_accepts_a_feed_from_a_later_minor_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The publisher builds its documents with the wire types of a later 1.x: every root,
    # manifest and timestamp carries fields this version does not know, signed and (for the
    # manifest core) committed to the ledger by that publisher.
    monkeypatch.setattr(publish, "Root", LaterRoot)
    monkeypatch.setattr(publish, "Manifest", LaterManifest)
    monkeypatch.setattr(publish, "Timestamp", LaterTimestamp)
    carrier = Carrier(load_settings(env={}, data_dir=tmp_path / "data"))
    with open_state(Layout(carrier.settings.data_dir).state_db) as con:
        seed_history(con)
    carrier.publish(1, 2)
    monkeypatch.undo()
    for path in ("roots/1.root.json", "manifests/2.json", "timestamp.json"):
        data = (carrier.feeds / path).read_bytes()
        assert b'"spec_version":"1.7"' in data and b"x_later" in data and b"x_nested" in data, path

    token = carrier.token()
    with serving(create_app(carrier.settings)) as url:
        report = pull(url, token, tmp_path / "client", carrier.feeds / "roots" / "1.root.json", clock=at(2))
    assert (report.to_seq, report.rows, report.checkpoint_size) == (2, 4, 2)
    rows, kv = stored(tmp_path / "client")
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    # what the client keeps re-serialises to the very bytes the publisher signed
    assert kv["root"] == (carrier.feeds / "roots" / "1.root.json").read_bytes()
    assert kv["manifest_sha256"].decode() == sha256_hex((carrier.feeds / "manifests" / "2.json").read_bytes())
    assert check_local(tmp_path / "client", "+8613800000101", dt.date(2026, 7, 1)).recycled


def test_pull_refuses_a_feed_of_another_major_version(setup: Setup) -> None:
    path = setup.carrier.feeds / "timestamp.json"
    stamp = Envelope.from_bytes(path.read_bytes(), Timestamp)
    root = Envelope.from_bytes((setup.carrier.feeds / "root.json").read_bytes(), Root).signed
    online = publish.role_signers(setup.carrier.settings, root, ROLE_TIMESTAMP)
    path.write_bytes(
        Envelope.create(dataclasses.replace(stamp.signed, spec_version="2.0"), online).to_bytes()
    )
    rejected(setup, FormatError, "upgrade number-recycling", when=2)


# ------------------------------------------------------------------ property: client == server


class Switch:
    """One uvicorn for every generated history: requests go to the current history's app."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def switch() -> Iterator[tuple[Switch, str]]:
    sw = Switch()
    with serving(sw) as url:
        yield sw, url


ACTIONS = ("none", "cancel", "release", "reissue", "violation", "restore", "port_out", "port_in")
FEED_DAYS = 5


def play(con: duckdb.DuckDBPyConnection, k: int, start: int, actions: list[str]) -> str:
    """Write the lifecycle rows one number's life produces, day by day (one action a day);
    return the number's state at the end."""
    msisdn = f"+861390000{k:04d}"
    gen = 0
    tid = f"N{k}.{gen}"
    tenure(con, tid, msisdn, D1 + dt.timedelta(days=start))
    state, end, released = "active", None, None
    for n, action in enumerate(actions, start=1):
        d = day(n)
        if action == "cancel" and state == "active":
            con.execute(
                "UPDATE tenures SET tenure_end = ?, end_reason = 'cancel' WHERE tenure_id = ?", [d, tid]
            )
            state, end = "frozen", d
        elif action == "restore" and state == "frozen":
            con.execute("UPDATE tenures SET tenure_end = NULL, end_reason = NULL WHERE tenure_id = ?", [tid])
            state, end = "active", None
        elif action == "release" and state == "frozen":
            assert end is not None
            release(con, msisdn, tid, end, d)
            state, released = "available", d
        elif (action == "reissue" and state == "available") or (action == "violation" and state == "frozen"):
            assert end is not None
            gen += 1
            new = f"N{k}.{gen}"
            tenure(con, new, msisdn, d, opened_by="reissue")
            reissue(con, msisdn, tid, new, d, end, released if state == "available" else None)
            tid, state, end, released = new, "active", None, None
        elif action == "port_out" and state == "active":
            con.execute(
                "UPDATE tenures SET tenure_end = ?, end_reason = 'port_out' WHERE tenure_id = ?", [d, tid]
            )
            state = "gone"
        elif action == "port_in" and state == "gone":
            gen += 1
            tid = f"N{k}.{gen}"
            tenure(con, tid, msisdn, d, opened_by="port_in")
            state = "active"
    return state


lives = st.lists(
    st.tuples(
        st.integers(min_value=-40, max_value=0),
        st.lists(st.sampled_from(ACTIONS), min_size=FEED_DAYS, max_size=FEED_DAYS),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lives=lives)
def test_client_answers_equal_server_answers(
    switch: tuple[Switch, str], tmp_path_factory: pytest.TempPathFactory, lives: list[tuple[int, list[str]]]
) -> None:
    base = tmp_path_factory.mktemp("life")
    carrier = Carrier(load_settings(env={}, data_dir=base / "data"))
    with open_state(Layout(carrier.settings.data_dir).state_db) as con:
        final = [play(con, k, start, actions) for k, (start, actions) in enumerate(lives)]
    carrier.publish(*range(1, FEED_DAYS + 1))
    token = carrier.token()
    sw, url = switch
    sw.app = create_app(carrier.settings, clock=at(FEED_DAYS))
    pull(url, token, base / "client", carrier.feeds / "roots" / "1.root.json", clock=at(FEED_DAYS))

    numbers = [f"+861390000{k:04d}" for k in range(len(lives))] + ["+8613999999999"]
    dates = [D1 + dt.timedelta(days=i) for i in range(-41, FEED_DAYS, 3)]
    pairs = [(n, d) for n in numbers for d in dates]
    r = httpx.post(
        url + "/number-recycling/v0.2/bulk-check",
        json={"queries": [{"phoneNumber": n, "specifiedDate": d.isoformat()} for n, d in pairs]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    # One rule (pipelines.feeds.answer) on both sides. The feed lists a disconnection once the
    # number is released or reissued, so only a number still frozen (cancelled, not yet
    # released) may be "yes" at the server and not yet at the client.
    with LocalFeed(base / "client") as feed:
        for (number, since), server in zip(pairs, r.json()["results"], strict=True):
            local = feed.check(number, since)
            k = int(number[-4:])
            pending = k < len(final) and final[k] == "frozen"
            if local.recycled or not pending:
                assert local.recycled == (server == "yes"), (number[-4:], since, server, local)
    shutil.rmtree(base, ignore_errors=True)
