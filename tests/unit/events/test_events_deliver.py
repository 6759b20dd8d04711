"""Delivery against a real loopback sink (pipelines.dev.event_sink): it fails (500), times
out, then recovers, and nothing is lost; every delivery verifies; duplicates only with the same
id; the last failure is a dead letter that a replay delivers; subscriptions end as CAMARA says."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from number_recycling_client.events import (
    EVENT_TYPES,
    SUBSCRIPTION_ENDS,
    TYPE_PREFIX,
    event_id,
    keys_from_root,
    verify_event,
)

from pipelines.config import Settings, load_settings
from pipelines.dev.event_sink import EventSink
from pipelines.events.config import EventsConfig, parse_schedule
from pipelines.events.deliver import deliver_once, online_signers, request_for
from pipelines.events.outbox import open_store
from pipelines.events.store import Due, EventStore
from pipelines.events.subscriptions import SubscriptionError, Subscriptions
from pipelines.feeds.publish import ensure_root

T0 = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)
CONFIG = EventsConfig(
    retry_schedule=parse_schedule("5s,5m,1h"), timeout_s=0.3, allow_http_loopback=True, concurrency=8
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def carrier(tmp_path: Path) -> Iterator[tuple[Settings, EventStore]]:
    settings = load_settings(env={}, data_dir=tmp_path / "data")
    ensure_root(settings, T0.date())  # the online key events are signed with
    store = open_store(settings)
    yield settings, store
    store.close()


def subscribe(store: EventStore, sink: str, clock: Clock, **config: Any) -> str:
    body = {"protocol": "HTTP", "sink": sink, "types": [TYPE_PREFIX + "pending"], "config": config}
    return Subscriptions(store).create("bank", body, CONFIG, clock()).id


def pending(store: EventStore, first: int, n: int) -> list[str]:
    ids = [event_id("pending", s) for s in range(first, first + n)]
    store.append_events(
        (i, TYPE_PREFIX + "pending", "2026-12-05T00:00:00Z", {"phoneNumber": "+8613800000001"}) for i in ids
    )
    return ids


def run(settings: Settings, store: EventStore, clock: Clock, config: EventsConfig = CONFIG) -> Any:
    return asyncio.run(deliver_once(settings, store, config, clock=clock))


def trusted(settings: Settings) -> list[Any]:
    return keys_from_root(json.loads((settings.data_dir / "feeds" / "root.json").read_text()))


def test_fails_times_out_recovers_and_nothing_is_lost(carrier: tuple[Settings, EventStore]) -> None:
    settings, store = carrier
    clock = Clock()
    with EventSink(mode="fail", hang_s=0.6) as sink:
        subscribe(store, sink.url, clock)
        ids = pending(store, 1, 5)
        first = run(settings, store, clock)
        assert (first.fanned_out, first.attempted, first.retried, first.delivered) == (5, 5, 5, 0)
        assert run(settings, store, clock).attempted == 0  # not due before the schedule's 5 s
        sink.mode = "hang"
        clock.advance(5)
        second = run(settings, store, clock)
        assert (second.attempted, second.retried) == (5, 5)
        sink.mode = "ok"
        clock.advance(300)
        third = run(settings, store, clock)
        assert (third.attempted, third.delivered) == (5, 5)
        accepted = sink.accepted()
    keys = trusted(settings)
    # every accepted request verifies (at its own attempt's time), and is one of ours
    got = [
        verify_event(
            r.headers, r.body, keys, dt.datetime.fromtimestamp(int(r.headers["webhook-timestamp"]), dt.UTC)
        )
        for r in accepted
    ]
    assert {e["id"] for e in got} == set(ids)
    # duplicates (the hung attempts the sink took after our timeout) carry the same id and data
    by_id: dict[str, list[dict[str, Any]]] = {}
    for e in got:
        by_id.setdefault(e["id"], []).append(e)
    assert all(len({json.dumps(x, sort_keys=True) for x in v}) == 1 for v in by_id.values())
    assert store.counts() == {"delivered": 5}
    log = store.delivery_log("bank")
    assert sorted({(row[2], row[3]) for row in log}) == [(1, 500), (2, None), (3, 204)]
    assert all(row[4] == "timeout after 0.3 s" for row in log if row[2] == 2)


def test_the_last_failure_is_a_dead_letter_and_a_replay_delivers_it(
    carrier: tuple[Settings, EventStore],
) -> None:
    settings, store = carrier
    clock = Clock()
    config = EventsConfig(retry_schedule=parse_schedule("1s,1s"), timeout_s=0.3, allow_http_loopback=True)
    with EventSink(mode="fail") as sink:
        subscribe(store, sink.url, clock)
        pending(store, 1, 2)
        for _ in range(3):
            run(settings, store, clock, config)
            clock.advance(1)
        dead = store.dead_letters()
        assert [(d.event_id, d.attempts, d.last_code) for d in dead] == [
            ("pending-000000000001", 3, 500),
            ("pending-000000000002", 3, 500),
        ]
        assert run(settings, store, clock, config).attempted == 0  # dead letters are not retried
        sink.mode = "ok"
        assert store.replay([dead[0].delivery_id], clock().timestamp()) == 1
        assert run(settings, store, clock, config).delivered == 1
        assert store.replay(None, clock().timestamp()) == 1
        assert run(settings, store, clock, config).delivered == 1
    assert store.dead_letters() == [] and store.counts() == {"delivered": 2}


def test_a_subscription_hears_only_what_follows_it_and_its_types(
    carrier: tuple[Settings, EventStore],
) -> None:
    settings, store = carrier
    clock = Clock()
    with EventSink() as sink:
        pending(store, 1, 3)  # before the subscription: not news to it
        subscribe(store, sink.url, clock)
        store.append_events(
            [("released-000000000001", TYPE_PREFIX + "released", "t", {"phoneNumber": "+8613800000002"})]
        )
        pending(store, 4, 1)
        assert run(settings, store, clock).delivered == 1
        assert [json.loads(r.body)["id"] for r in sink.accepted()] == ["pending-000000000004"]


def test_max_events_then_subscription_ends(carrier: tuple[Settings, EventStore]) -> None:
    settings, store = carrier
    clock = Clock()
    with EventSink() as sink:
        sid = subscribe(store, sink.url, clock, subscriptionMaxEvents=2)
        pending(store, 1, 3)
        assert run(settings, store, clock).delivered == 3  # two events, then subscription-ends
        events = [json.loads(r.body) for r in sink.accepted()]
    assert sorted(e["id"] for e in events[:2]) == ["pending-000000000001", "pending-000000000002"]
    assert events[2]["type"] == SUBSCRIPTION_ENDS
    assert events[2]["data"] == {"subscriptionId": sid, "terminationReason": "MAX_EVENTS_REACHED"}
    assert events[0]["source"].endswith("/number-recycling/v0.2")  # the API, one body for all
    assert Subscriptions(store).get("bank", sid).status == "EXPIRED"  # type: ignore[union-attr]


def test_expiry_and_delete_end_with_subscription_ends(carrier: tuple[Settings, EventStore]) -> None:
    settings, store = carrier
    clock = Clock()
    subs = Subscriptions(store)
    with EventSink() as sink:
        subscribe(store, sink.url, clock, subscriptionExpireTime="2026-12-05T02:01:00Z")
        gone = subscribe(store, sink.url, clock)
        assert subs.delete("other-platform", gone, clock()) is False
        assert subs.delete("bank", gone, clock()) is True
        assert subs.get("bank", gone) is None and subs.delete("bank", gone, clock()) is False
        clock.advance(61)
        pending(store, 1, 1)
        assert run(settings, store, clock).delivered == 2
        reasons = sorted(json.loads(r.body)["data"]["terminationReason"] for r in sink.accepted())
    assert reasons == ["SUBSCRIPTION_DELETED", "SUBSCRIPTION_EXPIRED"]
    assert [s.status for s in subs.list("bank")] == ["EXPIRED"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            {"protocol": "MQTT", "sink": "https://a.example", "types": [TYPE_PREFIX + "pending"]},
            "INVALID_PROTOCOL",
        ),
        (
            {"protocol": "HTTP", "sink": "http://a.example/x", "types": [TYPE_PREFIX + "pending"]},
            "INVALID_SINK",
        ),
        (
            {"protocol": "HTTP", "sink": "ftp://a.example/x", "types": [TYPE_PREFIX + "pending"]},
            "INVALID_SINK",
        ),
        ({"protocol": "HTTP", "sink": "https://a.example", "types": []}, "INVALID_ARGUMENT"),
        ({"protocol": "HTTP", "sink": "https://a.example", "types": ["x.pending"]}, "INVALID_ARGUMENT"),
        ({"protocol": "HTTP", "sink": "https://a.example", "types": [SUBSCRIPTION_ENDS]}, "INVALID_ARGUMENT"),
        (
            {
                "protocol": "HTTP",
                "sink": "https://a.example",
                "types": [TYPE_PREFIX + "pending"],
                "config": {"subscriptionMaxEvents": 0},
            },
            "INVALID_ARGUMENT",
        ),
        (
            {
                "protocol": "HTTP",
                "sink": "https://a.example",
                "types": [TYPE_PREFIX + "pending"],
                "config": {"subscriptionExpireTime": "2020-01-01T00:00:00Z"},
            },
            "INVALID_ARGUMENT",
        ),
        (
            {
                "protocol": "HTTP",
                "sink": "https://a.example",
                "types": [TYPE_PREFIX + "pending"],
                "config": {"subscriptionExpireTime": "tomorrow"},
            },
            "INVALID_ARGUMENT",
        ),
        ([], "INVALID_ARGUMENT"),
    ],
)
def test_camara_refusals(carrier: tuple[Settings, EventStore], body: Any, code: str) -> None:
    _, store = carrier
    with pytest.raises(SubscriptionError) as caught:
        Subscriptions(store).create("bank", body, EventsConfig(), T0)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_loopback_http_only_in_development(carrier: tuple[Settings, EventStore]) -> None:
    _, store = carrier
    body = {
        "protocol": "HTTP",
        "sink": "http://127.0.0.1:9/x",
        "types": [TYPE_PREFIX + "pending"],
        "sinkCredential": {"credentialType": "ACCESSTOKEN"},
    }
    with pytest.raises(SubscriptionError):
        Subscriptions(store).create("bank", body, EventsConfig(), T0)
    sub = Subscriptions(store).create("bank", body, EventsConfig(allow_http_loopback=True), T0)
    assert "sinkCredential" not in sub.to_json() and sub.to_json()["status"] == "ACTIVE"


def test_the_store_file_is_private(carrier: tuple[Settings, EventStore]) -> None:
    _, store = carrier
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.path.parent.stat().st_mode & 0o777 == 0o700


def test_a_fan_out_shares_one_signature_per_event_and_second(carrier: tuple[Settings, EventStore]) -> None:
    """The body is the event's alone, so its deliveries to every subscriber in one second carry
    the same verified signature; another second signs again (a retry is never stale)."""
    settings, _ = carrier
    keys = online_signers(settings)
    due = [
        Due(
            i,
            f"sub-{i}",
            f"p{i}",
            f"http://127.0.0.1/{i}",
            0,
            "pending-000000000007",
            EVENT_TYPES[0],
            "2026-09-01T00:00:00Z",
            {"phoneNumber": "+8613800000001"},
        )
        for i in range(3)
    ]
    now = dt.datetime(2026, 9, 1, 1, tzinfo=dt.UTC).timestamp()
    sent = [request_for(d, CONFIG, keys, now) for d in due]
    assert len({body for body, _ in sent}) == 1
    assert len({h["webhook-signature"] for _, h in sent}) == 1
    for body, headers in sent:
        verify_event(headers, body, trusted(settings), dt.datetime.fromtimestamp(now, dt.UTC))
    later_body, later = request_for(due[0], CONFIG, keys, now + 1)
    assert (
        later["webhook-timestamp"] == str(int(now) + 1)
        and later["webhook-signature"] != sent[0][1]["webhook-signature"]
    )
    verify_event(later, later_body, trusted(settings), dt.datetime.fromtimestamp(now + 1, dt.UTC))
