"""Push end to end: drop files through the real nightly run, the server on loopback (real
uvicorn, delivering in the background as `recycle serve` does), a platform subscribed over
HTTP, and a real receiving HTTP server (pipelines.dev.event_sink) that verifies every event
with verify_event and the keys of the feed's root.json.

cancel → pending → restore → withdrawn → cancel again (the receiver is down that night and the
next: nothing is lost, delivered when it is back) → no release before min_notice_days →
released (with its risk grade) → reissued; B's reissue inside its notice is a reissued event
graded high.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from number_recycling_client import pull, stored_root, trusted_event_keys, verify_event

from pipelines.config import load_settings
from pipelines.dev.event_sink import EventSink
from pipelines.events import EVENT_TYPES, keys_from_root
from pipelines.events.config import EventsConfig
from pipelines.events.outbox import open_store
from pipelines.nightly.steps import RunContext, run_day
from pipelines.server import TokenStore, create_app

from .test_client_pull import serving as client_pull_serving
from .test_pending_notices import POLICY, A, B, day, drop, event

RETRY = ",".join(["1s"] * 600)  # every second for 10 minutes: the default stretches over days


def serving(app: Any) -> AbstractContextManager[str]:
    """uvicorn on loopback with the app's lifespan on, as `recycle serve` runs it: the delivery
    loop runs in the background."""
    return client_pull_serving(app, lifespan="on")


@contextmanager
def _store(settings: Any) -> Iterator[Any]:
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


def received(sink: EventSink, keys: list[Any]) -> list[dict[str, Any]]:
    """Every event the sink accepted, each verified (signature, timestamp, CloudEvent)."""
    now = dt.datetime.now(dt.UTC)
    return [verify_event(r.headers, r.body, keys, now) for r in sink.accepted()]


def wait_for(
    sink: EventSink, keys: list[Any], ids: set[str], timeout: float = 30
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = {e["id"]: e for e in received(sink, keys)}
        if ids <= got.keys():
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not delivered: {sorted(ids - got.keys())}")
        time.sleep(0.1)


@pytest.mark.slow
def test_events_pushed_verified_and_nothing_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECYCLE_EVENTS_RETRY", RETRY)
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
    event(data, 1, (A, "cancel"), (B, "cancel"))
    event(data, 2, (A, "restore"))
    event(data, 3, (A, "cancel"))
    drop(data, 5, "reissue", "msisdn,reissue_date,region,subscriber_ref", f"{B},{day(5)},GD,N1")
    drop(data, 9, "reissue", "msisdn,reissue_date,region,subscriber_ref", f"{A},{day(9)},GD,N2")
    tokens = TokenStore.open(data)
    token = tokens.add("bank", ["feeds", "subscriptions"], rate=10_000, burst=10_000)
    tokens.close()
    config = dataclasses.replace(EventsConfig.from_env(), poll_s=0.2, timeout_s=2.0)
    app = create_app(settings, snapshot_check_s=0.05, events_config=config, deliver_events=True)
    auth = {"Authorization": f"Bearer {token}"}
    with EventSink() as sink, serving(app) as url, httpx.Client(base_url=url, headers=auth) as api:
        run_day(settings, day(0), ctx)
        made = api.post(
            "/number-recycling/v0.2/subscriptions",
            json={"protocol": "HTTP", "sink": sink.url, "types": list(EVENT_TYPES), "config": {}},
        )
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "ACTIVE"
        # What the platform trusts: the root its light client verified and stored on a pull.
        evening = dt.datetime.combine(day(0), dt.time(23), tzinfo=dt.UTC)  # the feed's own time
        pull(url, token, tmp_path / "client", data / "feeds" / "roots" / "1.root.json", clock=lambda: evening)
        keys = trusted_event_keys(stored_root(tmp_path / "client"))
        assert keys == keys_from_root(api.get("/feeds/root.json").json())

        run_day(settings, day(1), ctx)
        got = wait_for(sink, keys, {"pending-000000000001", "pending-000000000002"})
        assert got["pending-000000000001"]["data"] == {
            "phoneNumber": A,
            "disconnectedOn": str(day(1)),
            "earliestReleaseOn": str(day(6)),
            "cause": "cancel",
        }
        assert got["pending-000000000001"]["source"].endswith("/number-recycling/v0.2")

        run_day(settings, day(2), ctx)
        got = wait_for(sink, keys, {"withdrawn-000000000003"})
        assert got["withdrawn-000000000003"]["data"] == {
            "phoneNumber": A,
            "disconnectedOn": str(day(1)),
            "withdrawnOn": str(day(2)),
        }

        sink.down()  # the receiver is down for the night of day 3 and the next
        run_day(settings, day(3), ctx)
        run_day(settings, day(4), ctx)
        time.sleep(1.0)  # the background loop keeps retrying meanwhile
        with _store(settings) as store:
            failures = [r for r in store.delivery_log("bank") if r[1] == "pending-000000000004"]
        assert failures and all(r[3] is None for r in failures)  # refused connections, logged
        sink.up()
        got = wait_for(sink, keys, {"pending-000000000004"})  # the server's background loop
        assert got["pending-000000000004"]["data"]["disconnectedOn"] == str(day(3))

        for n in range(5, 8):  # A's notice period runs to day 8: no release before
            run_day(settings, day(n), ctx)
        time.sleep(1.0)
        types_so_far = [(e["type"].rsplit(".", 1)[1], e["data"]["phoneNumber"]) for e in received(sink, keys)]
        assert ("released", A) not in types_so_far
        reissued_b = [
            e
            for e in received(sink, keys)
            if e["type"].endswith("reissued") and e["data"]["phoneNumber"] == B
        ]
        assert (
            reissued_b
            and reissued_b[0]["data"]["risk"]["level"] == "high"
            and reissued_b[0]["data"]["risk"]["violation"]
        )

        run_day(settings, day(8), ctx)
        run_day(settings, day(9), ctx)
        deadline = time.monotonic() + 30
        while not any(
            e["type"].endswith("reissued") and e["data"]["phoneNumber"] == A for e in received(sink, keys)
        ):
            assert time.monotonic() < deadline, "A's reissued event never came"
            time.sleep(0.1)
        events = received(sink, keys)
    app.state.audit.flush()

    by_a = [(e["type"].rsplit(".", 1)[1], e["data"]) for e in events if e["data"].get("phoneNumber") == A]
    kinds = []
    for kind, payload in by_a:
        if kind not in [k for k, _ in kinds]:
            kinds.append((kind, payload))
    assert [k for k, _ in kinds] == ["pending", "withdrawn", "released", "reissued"]
    released = dict(kinds)["released"]
    assert released["releasedOn"] == str(day(8)) and released["priorEnd"] == "cancel"
    assert released["risk"]["level"] == "medium"
    assert dict(kinds)["reissued"]["reissuedOn"] == str(day(9))
    # at-least-once: duplicates only ever repeat an id with identical content
    by_id: dict[str, set[str]] = {}
    for e in events:
        by_id.setdefault(e["id"], set()).add(json.dumps(e, sort_keys=True))
    assert all(len(v) == 1 for v in by_id.values())
    with _store(settings) as store:
        assert store.dead_letters() == [] and store.counts().get("due", 0) == 0
        assert set(by_id) == {
            r[0] for r in store.query("SELECT e.id FROM deliveries d JOIN events e USING (position)")
        }
