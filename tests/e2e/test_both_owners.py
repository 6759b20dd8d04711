"""Both owners, one story through real parts (issue 15, "Done when").

Real nights (``run_day``), real loopback SMTP and SMS gateways living in this process
(:class:`GatewaySimulator`: the test reads exactly what reached them), the feed server on
loopback (real uvicorn, delivering events in the background as ``recycle serve`` does), two
platforms with light clients and real receiving sinks, and the ``recycle`` CLI.

cancel → reminders → held, reminded on every channel at the cadence → no receipt ever comes
back, so released with an exception → an urgent notice to the prior owner on every channel, and
the night fails until ops acknowledge it (alerts "raise"; ``recycle alerts ack``, then the night
is run again) → reissue → one SMS to the number itself naming the platform that agreed to be
named and counting the other → one-click unbind with the carrier's token → both platforms get a
verified event and answer → the holder's view (HTTP and ``recycle new-owner``) shows every
answer → both owners' tenure statements verify offline, and a tampered one fails.

The story's days end yesterday in the carrier's zone: a night runs only after its day ended
(preflight), and the one-click part runs today on the real clock (tokens, deadlines and event
signatures are wall-clock things). While the nights run, the server's clock is the story's
evening, so the platforms' downloads are audited on the day they happen in the story.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from number_recycling_client import pull, stored_root, trusted_event_keys
from number_recycling_client.events import UNBIND_REQUESTED
from typer.testing import CliRunner

from pipelines.cli import app as cli
from pipelines.config import Policy, load_settings
from pipelines.dev.event_sink import EventSink
from pipelines.dev.simulators import GatewaySimulator, ReceivedMessage
from pipelines.errors import ComplianceViolationError, SignatureError
from pipelines.events.config import EventsConfig
from pipelines.layout import Layout
from pipelines.ledger import verify_statement
from pipelines.nightly.steps import RunContext, run_day
from pipelines.numbers import mask
from pipelines.reminders.holder_notice import holder_notice_id
from pipelines.server import TokenStore, create_app

from .test_events_push import received, serving

API = "/number-recycling/v0.2"
A = "+8613800000301"  # the number
OWN_PHONE = "+8613911113333"  # the prior owner's own phone
EMAIL = "prior.owner@example.cn"
# Reminders on the day of the cancel and the next; a 2-day freeze, then held at most 3 days,
# reminded on every channel each of them; 2 effective reminders needed, none will be.
POLICY = Policy(
    freeze_days=2,
    suspend_days=2,
    reminder_offsets=(0, 1),
    min_effective_reminders=2,
    max_hold_days=3,
    hold_reminder_every_days=1,
    max_hold_reminders=3,
    min_notice_days=2,
)
CANCEL, RELEASE, REISSUE = 1, 6, 7  # story days


class StoryClock:
    """The server's clock: the story's evening while the nights run, then the wall clock."""

    def __init__(self) -> None:
        self.at: dt.datetime | None = None

    def __call__(self) -> dt.datetime:
        return self.at or dt.datetime.now(dt.UTC)


def zh_date(d: dt.date) -> str:
    return f"{d.year}年{d.month}月{d.day}日"


@pytest.fixture
def gateway() -> Iterator[GatewaySimulator]:
    with GatewaySimulator() as gw:
        yield gw


@pytest.mark.slow
def test_both_owners_end_to_end(
    tmp_path: Path, gateway: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECYCLE_PROFILE", "development")  # sinks on http://127.0.0.1
    data = tmp_path / "data"
    settings = dataclasses.replace(
        load_settings(env={}, data_dir=data),
        policies={"default": POLICY},
        smtp=gateway.smtp_settings(),
        sms=gateway.sms_settings(),
    )
    today = settings.carrier_day(dt.datetime.now(dt.UTC))
    d0 = today - dt.timedelta(days=REISSUE + 1)  # the reissue night is yesterday's

    def day(n: int) -> dt.date:
        return d0 + dt.timedelta(days=n)

    def evening(n: int) -> dt.datetime:
        return dt.datetime.combine(day(n), dt.time(21), tzinfo=settings.zone).astimezone(dt.UTC)

    def drop(n: int, kind: str, header: str, *lines: str) -> None:
        inbox = Layout(data).inbox(day(n))
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / f"{kind}_{day(n)}.csv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")

    drop(
        0,
        "subscribers",
        "msisdn,tenure_start,region,subscriber_ref,contact_email,contact_phone,language",
        f"{A},2020-01-01,GD,S1,{EMAIL},{OWN_PHONE},zh-CN",
    )
    drop(
        CANCEL,
        "lifecycle",
        "msisdn,event,effective_date,region,subscriber_ref,tenure_start",
        f"{A},cancel,{day(CANCEL)},GD,S1,2020-01-01",
    )
    drop(REISSUE, "reissue", "msisdn,reissue_date,region,subscriber_ref", f"{A},{day(REISSUE)},GD,N2")

    tokens = TokenStore.open(data)
    scopes = ["feeds", "subscriptions", "ack"]
    platform = {
        "bank": tokens.add("bank", scopes, rate=1000, burst=1000, named=True),
        "shop": tokens.add("shop", scopes, rate=1000, burst=1000),
    }
    tokens.close()

    clock = StoryClock()
    config = dataclasses.replace(EventsConfig.from_env(), poll_s=0.2, timeout_s=2.0)
    app = create_app(settings, clock=clock, snapshot_check_s=0.05, events_config=config, deliver_events=True)
    ctx = RunContext(alerts_mode="raise", empty_night=True)  # the real gateways above, no simulation
    runner = CliRunner()
    sent: dict[int, tuple[ReceivedMessage, ...]] = {}

    def recycle(*args: str) -> Any:
        done = runner.invoke(cli, [*args, "--data", str(data)])
        assert done.exit_code == 0, done.output
        return done

    with (
        EventSink() as bank_sink,
        EventSink() as shop_sink,
        serving(app) as url,
        httpx.Client(base_url=url) as api,
    ):

        def night(n: int) -> None:
            run_day(settings, day(n), ctx)

        def after(n: int) -> None:
            sent[n] = gateway.drain()
            clock.at = evening(n)
            for name in platform:
                root = data / "feeds" / "roots" / "1.root.json"
                pull(url, platform[name], tmp_path / name, root, clock=lambda: evening(n))

        for n in range(RELEASE):
            night(n)
            after(n)
        # -- the prior owner, night by night: what reached the gateways (sms to their own phone,
        # e-mail), and the letters. Never anything to the number itself while it is theirs.
        assert [len(sent[n]) for n in range(RELEASE)] == [0, 1, 1, 2, 2, 2]
        reminders = _reminders(data)
        assert [(m.channel, m.to, reminders[m.reminder_id]) for m in sent[CANCEL] + sent[CANCEL + 1]] == [
            ("sms", OWN_PHONE, ("offset:0", "sms", day(CANCEL))),
            ("sms", OWN_PHONE, ("offset:1", "sms", day(CANCEL + 1))),
        ]
        # No receipt ever comes back: the freeze ends on day 3 with no effective reminder, so held.
        assert _state(data, A) == ("held", day(CANCEL + POLICY.freeze_days), None)
        for k, slot in enumerate(("hold", "hold:1", "hold:2")):  # escalating, every channel, daily
            n = CANCEL + POLICY.freeze_days + k
            got = sorted((m.channel, m.to, reminders[m.reminder_id]) for m in sent[n])
            assert got == [
                ("email", EMAIL, (slot, "email", day(n))),
                ("sms", OWN_PHONE, (slot, "sms", day(n))),
            ]
            earliest = zh_date(day(n + 1))
            for m in sent[n]:
                assert "紧急" in m.text and f"最早将于{earliest}起重新放号" in m.text, m.text
                assert mask(A) in m.text and A not in m.text
            assert _letters(data, day(n)) == {(slot, "S1")}  # and by post

        # -- max_hold_days later, still no receipt: released with an exception; the urgent notice
        # goes out on every channel left and the night fails until ops acknowledge it.
        with pytest.raises(
            ComplianceViolationError, match=r"1 number\(s\) were released with a compliance exception"
        ):
            night(RELEASE)
        sent[RELEASE] = gateway.drain()
        assert _state(data, A) == ("available", day(3), day(RELEASE))  # max_hold_days after the hold
        reminders = _reminders(data)
        urgent = sorted((m.channel, m.to, reminders[m.reminder_id]) for m in sent[RELEASE])
        assert urgent == [
            ("email", EMAIL, ("urgent:exception", "email", day(RELEASE))),
            ("sms", OWN_PHONE, ("urgent:exception", "sms", day(RELEASE))),
        ]
        assert _letters(data, day(RELEASE)) == {("urgent:exception", "S1")}
        email = next(m for m in sent[RELEASE] if m.channel == "email")
        assert (
            email.subject.startswith("【Example Mobile】紧急通知")
            and f"已于{zh_date(day(RELEASE))}放号" in email.subject
        )
        sms = next(m for m in sent[RELEASE] if m.channel == "sms")
        assert f"紧急：您的原号码{mask(A)}已于{zh_date(day(RELEASE))}放号" in sms.text
        acked = recycle("alerts", "ack", "--number", A, "--date", str(day(RELEASE)),
                        "--reason", "owner unreachable on every channel; urgent notice sent", "--by", "ops.li")  # fmt: skip
        assert f"acknowledged release_exception of {mask(A)} on {day(RELEASE)} by ops.li" in acked.output
        night(RELEASE)  # the same night again: it passes now, and sends nothing twice
        assert gateway.drain() == ()
        after(RELEASE)

        # -- the reissue night: one SMS to the number itself, for its new holder.
        night(REISSUE)
        after(REISSUE)
        [notice] = sent[REISSUE]
        new_tenure = _tenure(data, A)
        assert (notice.channel, notice.to, notice.reminder_id) == ("sms", A, holder_notice_id(new_tenure))
        assert notice.text.startswith(f"【Example Mobile】您好，您的号码{mask(A)}为二次放号号码")
        platforms = f"截至{zh_date(day(REISSUE))}，已通知的平台答复：bank尚未答复；另有1家平台：1家尚未答复。"
        assert platforms in notice.text and "shop" not in notice.text
        assert _ledger_notices(data) == [("holder_notice_sent", notice.reminder_id)]  # logged, once

        # -- one-click unbinding, today, on the wall clock.
        clock.at = None
        for name, sink in (("bank", bank_sink), ("shop", shop_sink)):
            made = api.post(
                f"{API}/subscriptions",
                json={"protocol": "HTTP", "sink": sink.url, "types": [UNBIND_REQUESTED], "config": {}},
                headers={"Authorization": f"Bearer {platform[name]}"},
            )
            assert made.status_code == 201, made.text
        token = recycle("unbind-token", "--number", A).stdout.strip()
        holder = {"Authorization": f"Bearer {token}"}
        made = api.post(f"{API}/unbind-requests", json={"phoneNumber": A}, headers=holder)
        assert made.status_code == 201, made.text
        rid = made.json()["id"]
        assert made.json()["platformsRequested"] == 2
        for name, sink in (("bank", bank_sink), ("shop", shop_sink)):
            # what this platform trusts: the root its own light client verified and stored
            keys = trusted_event_keys(stored_root(tmp_path / name))
            [got] = _wait(sink, keys)
            assert got["type"] == UNBIND_REQUESTED and got["id"] == f"unbind-requested-{rid}"
            assert {
                k: got["data"][k] for k in ("phoneNumber", "requestId", "since", "disconnectedOn", "reminder")
            } == {
                "phoneNumber": A,
                "requestId": rid,
                "since": str(day(REISSUE)),
                "disconnectedOn": str(day(CANCEL)),
                "reminder": False,
            }
        view = api.get(f"{API}/unbind-requests/{rid}", headers=holder).json()
        assert view["outcomes"]["named"] == [{"platform": "bank", "answers": []}]
        assert view["outcomes"]["others"]["not_answered"] == 1

        # -- both platforms answer; the holder's view shows every answer, bank by name.
        for name, status in (("bank", "unbound"), ("shop", "no_account")):
            ack = api.post(
                f"{API}/acknowledgements",
                json={"acknowledgements": [{"phoneNumber": A, "status": status}]},
                headers={"Authorization": f"Bearer {platform[name]}"},
            )
            assert ack.status_code == 200, ack.text
        view = api.get(f"{API}/unbind-requests/{rid}", headers=holder).json()
        assert (view["id"], view["since"], view["platformsRequested"]) == (rid, str(day(REISSUE)), 2)
        assert view["outcomes"]["named"] == [{"platform": "bank", "answers": ["unbound"]}]
        assert view["outcomes"]["others"] == {
            "platforms": 1, "unbound": 0, "no_account": 1, "step_up_enabled": 0, "not_answered": 0
        }  # fmt: skip
        assert view["late"] == {"named": [], "others": 0} and "shop" not in str(view)
        app.state.audit.flush()
    shown = " ".join(recycle("new-owner", A).stdout.split())
    assert f"{mask(A)}, held since {day(REISSUE)}" in shown and A not in shown
    assert "2 platform(s) notified, 1 confirmed unbinding, 1 had no account" in shown
    assert "bank: confirmed unbinding" in shown and "1 other platform(s): 1 no account" in shown
    assert "sent to 2 platform(s)" in shown and "shop" not in shown

    # -- both owners' tenure statements, verified offline with only the file and the key.
    vkey = (Layout(data).ledger_dir / "vkey").read_text().strip()
    prior, new = tmp_path / "prior-owner.txt", tmp_path / "new-holder.txt"
    recycle("statement", "--number", A, "--tenure", "2020-01-01", "--out", str(prior))
    recycle("statement", "--number", A, "--at", str(day(REISSUE)), "--out", str(new))
    ok = runner.invoke(cli, ["verify", str(prior), "--vkey", vkey])
    assert ok.exit_code == 0, ok.output
    assert f"OK: subscriber S1 held {mask(A)} from 2020-01-01 to {day(CANCEL)} (ended: cancel)" in ok.output
    ok = runner.invoke(cli, ["verify", str(new), "--vkey", vkey])
    assert ok.exit_code == 0, ok.output
    assert f"OK: subscriber N2 held {mask(A)} since {day(REISSUE)}, current as of {day(REISSUE)}" in ok.output
    facts = verify_statement(prior.read_bytes(), vkey).facts
    assert (facts["msisdn"], facts["tenure_end"], facts["status"]) == (A, str(day(CANCEL)), "ended")
    tampered = tmp_path / "tampered.txt"
    body = prior.read_bytes()
    assert f"tenure_end {day(CANCEL)}".encode() in body
    tampered.write_bytes(
        body.replace(f"tenure_end {day(CANCEL)}".encode(), f"tenure_end {day(REISSUE)}".encode())
    )
    bad = runner.invoke(cli, ["verify", str(tampered), "--vkey", vkey])
    assert bad.exit_code == 1 and "FAILED" in bad.output and "invalid signature" in bad.output, bad.output
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_statement(tampered.read_bytes(), vkey)


def _reminders(data: Path) -> dict[str, tuple[str, str, dt.date]]:
    """reminder id -> (slot, channel, due day), from the state file."""
    con = duckdb.connect(str(Layout(data).state_db), read_only=True)
    try:
        rows = con.execute("SELECT reminder_id, slot, channel, due_on FROM reminders").fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _state(data: Path, msisdn: str) -> tuple[Any, ...]:
    """(state, hold_started, released_on) of the number."""
    con = duckdb.connect(str(Layout(data).state_db), read_only=True)
    try:
        row = con.execute(
            "SELECT state, hold_started, released_on FROM number_state WHERE msisdn = ?", [msisdn]
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return tuple(row)


def _tenure(data: Path, msisdn: str) -> str:
    con = duckdb.connect(str(Layout(data).state_db), read_only=True)
    try:
        row = con.execute("SELECT tenure_id FROM number_state WHERE msisdn = ?", [msisdn]).fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0])


def _ledger_notices(data: Path) -> list[tuple[str, str]]:
    """(type, notice id) of the ledger's holder-notice facts."""
    con = duckdb.connect(str(Layout(data).state_db), read_only=True)
    try:
        rows = con.execute(
            "SELECT type, json_extract_string(fields, '$.notice_id') FROM ledger_events "
            "WHERE type = 'holder_notice_sent' AND appended"
        ).fetchall()
    finally:
        con.close()
    return [(str(t), str(n)) for t, n in rows]


def _letters(data: Path, d: dt.date) -> set[tuple[str, str]]:
    """(slot, addressee) of the letters in the print house batch of day ``d``."""
    reminders = _reminders(data)
    path = data / "outbox" / "letters" / f"letters_{d}.csv"
    with path.open(encoding="utf-8", newline="") as f:
        return {(reminders[r["reminder_id"]][0], r["to"]) for r in csv.DictReader(f)}


def _wait(sink: EventSink, keys: list[Any], timeout: float = 20) -> list[dict[str, Any]]:
    """The sink's verified events, once there is one (and a few delivery passes more)."""
    deadline = time.monotonic() + timeout
    while not sink.accepted():
        assert time.monotonic() < deadline, "no event reached the sink"
        time.sleep(0.1)
    time.sleep(0.5)
    return received(sink, keys)
