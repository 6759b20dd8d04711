"""One-click unbinding end to end, through real HTTP (issue 15, item 2): drop files through the
real nightly run, the server on loopback delivering in the background as `recycle serve`
does, two platforms subscribed to unbind-requested with real receiving sinks.

reissue → the new holder's token → forged / expired / other-number tokens refused → one-click
unbind → both platforms get the event (verified) → one answers → the view shows it named and
the other counted, pending → after the deadline the silent one, and only it, gets a reminder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from number_recycling_client.events import UNBIND_REQUESTED

from pipelines.config import load_settings
from pipelines.dev.event_sink import EventSink
from pipelines.events import keys_from_root
from pipelines.events.config import EventsConfig
from pipelines.events.unbind_token import issue_token
from pipelines.nightly.steps import RunContext, run_day
from pipelines.server import TokenStore, create_app

from .test_events_push import received, serving
from .test_pending_notices import POLICY, A, B, day, drop, event

API = "/number-recycling/v0.2"
DEADLINE_S = 4.0


def _platforms(data: Path) -> dict[str, str]:
    tokens = TokenStore.open(data)
    scopes = ["feeds", "subscriptions", "ack"]
    made = {
        "bank": tokens.add("bank", scopes, rate=1000, burst=1000, named=True),
        "shop": tokens.add("shop", scopes, rate=1000, burst=1000),
    }
    tokens.close()
    return made


def _wait(sink: EventSink, keys: list[Any], pred: Any, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = [e for e in received(sink, keys) if pred(e)]
        if got:
            return got
        assert time.monotonic() < deadline, "the event never came"
        time.sleep(0.1)


def _refusals(api: httpx.Client, data: Path, now: dt.datetime) -> None:
    def post(token: str, **body: Any) -> httpx.Response:
        return api.post(
            f"{API}/unbind-requests", json=body or None, headers={"Authorization": f"Bearer {token}"}
        )

    good = issue_token(data, B, day(5), now, 3600)
    forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    assert (post(forged).status_code, post(forged).json()["code"]) == (401, "UNAUTHENTICATED")
    expired = issue_token(data, B, day(5), now - dt.timedelta(days=2), 3600)
    assert post(expired).status_code == 401 and "expired" in post(expired).json()["message"]
    assert api.post(f"{API}/unbind-requests").status_code == 401  # no token at all
    other = post(good, phoneNumber=A)
    assert (other.status_code, other.json()["code"]) == (403, "INVALID_TOKEN_CONTEXT")
    stale = post(issue_token(data, B, day(4), now, 3600))  # not the number's current tenure
    assert (stale.status_code, stale.json()["code"]) == (403, "PERMISSION_DENIED")
    not_recycled = post(issue_token(data, A, day(0), now, 3600))  # A was never recycled
    assert not_recycled.status_code == 403


@pytest.mark.slow
def test_one_click_unbind_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECYCLE_PROFILE", "development")
    data = tmp_path / "data"
    settings = dataclasses.replace(load_settings(env={}, data_dir=data), policies={"default": POLICY})
    ctx = RunContext(simulate_gateways=True, alerts_mode="record", empty_night=True)
    drop(
        data,
        0,
        "subscribers",
        "msisdn,tenure_start,region,subscriber_ref",
        f"{A},2020-01-01,GD,S1",
        f"{B},2020-01-01,GD,S1",
    )
    event(data, 1, (B, "cancel"))
    drop(data, 5, "reissue", "msisdn,reissue_date,region,subscriber_ref", f"{B},{day(5)},GD,N1")
    tokens = _platforms(data)
    config = dataclasses.replace(
        EventsConfig.from_env(), poll_s=0.2, timeout_s=2.0, unbind_deadline_s=DEADLINE_S
    )
    app = create_app(settings, snapshot_check_s=0.05, events_config=config, deliver_events=True)
    with (
        EventSink() as bank_sink,
        EventSink() as shop_sink,
        serving(app) as url,
        httpx.Client(base_url=url) as api,
    ):
        for n in range(6):
            run_day(settings, day(n), ctx)
        for name, sink in (("bank", bank_sink), ("shop", shop_sink)):
            made = api.post(
                f"{API}/subscriptions",
                json={"protocol": "HTTP", "sink": sink.url, "types": [UNBIND_REQUESTED], "config": {}},
                headers={"Authorization": f"Bearer {tokens[name]}"},
            )
            assert made.status_code == 201, made.text
        keys = keys_from_root(
            api.get("/feeds/root.json", headers={"Authorization": f"Bearer {tokens['bank']}"}).json()
        )
        now = dt.datetime.now(dt.UTC)
        _refusals(api, data, now)

        holder = {"Authorization": f"Bearer {issue_token(data, B, day(5), now, 3600)}"}
        made = api.post(f"{API}/unbind-requests", json={"phoneNumber": B}, headers=holder)
        assert made.status_code == 201, made.text
        rid = made.json()["id"]
        again = api.post(f"{API}/unbind-requests", headers=holder)
        assert (again.status_code, again.json()["id"]) == (200, rid)  # pressing twice sends nothing new
        presses = [api.post(f"{API}/unbind-requests", headers=holder).status_code for _ in range(3)]
        assert presses[-1] == 429  # per number: a few presses a minute

        first = {}
        for name, sink in (("bank", bank_sink), ("shop", shop_sink)):
            got = _wait(sink, keys, lambda e: e["type"] == UNBIND_REQUESTED)
            assert len(got) == 1 and got[0]["data"]["requestId"] == rid and got[0]["data"]["phoneNumber"] == B
            assert got[0]["data"]["since"] == str(day(5)) and got[0]["data"]["disconnectedOn"] == str(day(1))
            assert got[0]["data"]["reminder"] is False
            first[name] = got[0]

        ack = api.post(
            f"{API}/acknowledgements",
            json={"acknowledgements": [{"phoneNumber": B, "status": "unbound"}]},
            headers={"Authorization": f"Bearer {tokens['bank']}"},
        )
        assert ack.status_code == 200, ack.text
        view = api.get(f"{API}/unbind-requests/{rid}", headers=holder).json()
        assert view["platformsRequested"] == 2
        assert view["outcomes"]["named"] == [{"platform": "bank", "answers": ["unbound"]}]
        assert (
            view["outcomes"]["others"]["platforms"] == 1 and view["outcomes"]["others"]["not_answered"] == 1
        )
        assert "shop" not in str(view)  # counted, never named
        assert view["late"] == {"named": [], "others": 0}  # before the deadline

        reminder = _wait(
            shop_sink, keys, lambda e: e["data"].get("reminder") is True, timeout=DEADLINE_S + 20
        )
        assert reminder[0]["data"]["requestId"] == rid and reminder[0]["id"] != first["shop"]["id"]
        time.sleep(1.0)  # a few more delivery passes
        assert not [e for e in received(bank_sink, keys) if e["data"].get("reminder")]  # bank answered
        late = api.get(f"{API}/unbind-requests/{rid}", headers=holder).json()
        assert late["late"] == {"named": [], "others": 1} and late["reminded"] is True
        other_holder = {"Authorization": f"Bearer {issue_token(data, B, day(4), now, 3600)}"}
        assert api.get(f"{API}/unbind-requests/{rid}", headers=other_holder).status_code == 404
