"""The new holder's notice at sale (issue 15, deliverable 1), over a real state file, real feed
files, a real audit log, token store and acknowledgement store.

A is cancelled on day 1 by an owner whose contact phone is A itself; two receipts make the
release on day 11, whose feed lists A. Three platforms hear of it: ``bank-named`` (agreed to be
named) confirms unbinding, ``anon-ack`` reports no account, ``anon-quiet`` downloads the feed and
says nothing. A is sold again on day 12: that night one SMS goes to A itself, naming only
``bank-named`` and counting the two others, and ``recycle new-owner`` shows the same.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lifecycle_testkit import SETTINGS, A, World, day, open_db
from typer.testing import CliRunner

from pipelines.cli.app import app as cli_app
from pipelines.compliance.notifications import (
    AckStore,
    new_owner_view,
    read_acknowledgements,
    validate_acknowledgements,
)
from pipelines.feeds.publish import publish_feed
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.reminders.holder_notice import holder_language, holder_notice_id
from pipelines.reminders.templates import HolderNoticeContext, render_holder_notice
from pipelines.server.platforms import AuditLog, TokenStore

PRIOR_EMAIL = "prior@example.cn"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    (tmp_path / "data").mkdir()
    con = open_db(tmp_path / "data" / "state.duckdb")  # where `recycle` looks for it
    w = World(con)
    w.settings = replace(SETTINGS, data_dir=tmp_path / "data")
    yield w
    con.close()


def _platforms_hear_of_the_release(world: World) -> None:
    data = world.settings.data_dir
    tokens = TokenStore.open(data)
    tokens.add("bank-named", ["feeds", "ack"], named=True)
    tokens.add("anon-ack", ["feeds", "ack"])
    tokens.add("anon-quiet", ["feeds"])
    tokens.close()
    when = dt.datetime(2026, 3, 12, 2, tzinfo=dt.UTC)  # day 11 (2026-03-12), 10:00 in Beijing
    audit = AuditLog.open(data, clock=lambda: when)
    for p in ("bank-named", "anon-ack", "anon-quiet"):
        audit.record(
            p, "download", path=f"/feeds/daily/{day(11)}/recycled.parquet", status=200, sha256="0" * 64
        )
    audit.close()
    store = AckStore.open(data)
    for platform, status in (("bank-named", "unbound"), ("anon-ack", "no_account")):
        body = json.dumps({"acknowledgements": [{"phoneNumber": A, "status": status}]}).encode()
        acks = validate_acknowledgements(
            read_acknowledgements(body, "application/json"), published=[day(11)], now=when
        )
        store.add(platform, acks, when + dt.timedelta(hours=3), "api")
    store.close()


def released_and_sold(world: World) -> dict[str, object]:
    world.subscriber(day(0), A, email=PRIOR_EMAIL, phone=A)  # the owner's phone is the number itself
    world.run(day(0))
    world.event(day(1), A, "cancel")
    world.run(day(1))
    world.deliver(day(2), A)
    world.run_days(2, 5)
    world.deliver(day(6), A)
    world.run_days(6, 11)
    assert world.state(A)["state"] == "available"
    publish_feed(world.settings, day(11), world.con)
    _platforms_hear_of_the_release(world)
    world.reissue(day(12), A, ref="NEW")
    return world.run(day(12))


def to_a(world: World) -> list[tuple[str, str]]:
    """(id, text) of every SMS that went to A itself."""
    return [(m.reminder_id, m.text) for m in world.channels["sms"].sent if m.to == A]


def test_a_reissue_night_sends_one_notice_to_the_number_naming_only_agreed_platforms(world: World) -> None:
    report = released_and_sold(world)
    assert report["schedule"].holder_notices == 1
    new_tenure = world.state(A)["tenure_id"]
    [(notice_id, text)] = to_a(world)
    assert notice_id == holder_notice_id(new_tenure) and notice_id.startswith("H")
    assert text.startswith("【Example Mobile】") and "二次放号" in text  # zh-CN: the CN default
    assert "138****0001" in text and A not in text and A[3:] not in text
    assert "截至2026年3月13日" in text  # as of the night's day
    assert "bank-named已确认解绑" in text
    assert "另有2家平台：1家无相关账户、1家尚未答复" in text
    assert "anon" not in text
    # nothing about the prior holder: no dates of the prior tenure, no contact
    for leak in ("2020年5月1日", "2026年3月2日", "2026年3月12日", PRIOR_EMAIL):
        assert leak not in text, leak
    # only the notice went to the new holder, and nothing for it to the prior owner's contacts
    holder_rows = world.rows("SELECT * FROM outbox WHERE reminder_id LIKE 'H%'")
    assert [(r["reminder_id"], r["channel"], r["status"]) for r in holder_rows] == [
        (notice_id, "sms", "sent")
    ]
    assert not [
        m for ch in world.channels.values() for m in ch.sent if m.reminder_id == notice_id and m.to != A
    ]


def test_rerun_sends_nothing_twice_and_the_ledger_has_one_entry(world: World) -> None:
    released_and_sold(world)
    [entry] = world.ledger("holder_notice_sent")
    fields = json.loads(entry["fields"])
    assert fields["as_of"] == "2026-03-13" and fields["channel"] == "sms" and len(fields["text_sha256"]) == 64
    assert fields["notice_id"] == holder_notice_id(world.state(A)["tenure_id"])
    # filed under the recycled tenure, beside its reissued entry
    [reissued] = world.ledger("reissued")
    assert entry["tenure_id"] == reissued["tenure_id"] != world.state(A)["tenure_id"]
    before = (world.dump(), world.rows("SELECT * FROM holder_notices ORDER BY ALL"))
    again = world.run(day(12))
    assert again["schedule"].holder_notices == 0 and len(to_a(world)) == 1
    assert (world.dump(), world.rows("SELECT * FROM holder_notices ORDER BY ALL")) == before
    world.run(day(13))
    assert len(to_a(world)) == 1 and len(world.ledger("holder_notice_sent")) == 1


def test_the_recycled_number_is_still_no_address_for_the_prior_owner(world: World) -> None:
    released_and_sold(world)
    reminders = world.reminders(A)
    assert reminders and all(r["channel"] != "sms" for r in reminders)  # phone = the number itself
    assert {r["address"] for r in reminders if r["channel"] == "email"} == {PRIOR_EMAIL}
    # every SMS A ever received is the holder's notice, sent the night of the sale
    assert [rid[0] for rid, _ in to_a(world)] == ["H"]
    assert world.one("SELECT sent_on FROM holder_notices") == day(12)


def test_new_owner_shows_the_same_platforms_and_counts(world: World) -> None:
    released_and_sold(world)
    publish_snapshot(world.settings, day(12), world.con)
    view = new_owner_view(world.settings, A, day(12))
    noticed = json.loads(world.one("SELECT outcomes FROM holder_notices"))
    assert view["named"] == noticed["named"] == [{"platform": "bank-named", "answers": ["unbound"]}]
    assert view["others"] == noticed["others"]
    assert noticed["others"] == {
        "platforms": 2,
        "unbound": 0,
        "no_account": 1,
        "step_up_enabled": 0,
        "not_answered": 1,
    }
    result = CliRunner().invoke(
        cli_app, ["new-owner", A, "--as-of", str(day(12)), "--data", str(world.settings.data_dir)]
    )
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    assert "bank-named: confirmed unbinding" in out and "anon" not in out and A not in out
    assert "2 other platform(s): 1 no account, 1 not answered yet" in out


def test_the_notice_in_english_and_when_names_do_not_fit() -> None:
    assert holder_language(SETTINGS) == "zh-CN"
    assert holder_language(replace(SETTINGS, default_region="US")) == "en"
    outcomes = {
        "as_of": "2026-03-13",
        "named": [{"platform": "bank-named", "answers": ["unbound", "step_up_enabled"]}],
        "others": {"platforms": 1, "unbound": 0, "no_account": 0, "step_up_enabled": 0, "not_answered": 1},
    }
    en = render_holder_notice(HolderNoticeContext("Hx", A, "en", outcomes, "Example Mobile")).text
    assert en.startswith("Example Mobile: your number 138****0001 is recycled")
    assert "As of 13 March 2026" in en and "bank-named: confirmed unbinding, step-up enabled" in en
    assert "1 other platform(s): 1 not answered yet" in en
    many = {**outcomes, "named": [{"platform": f"platform-{i:02d}", "answers": []} for i in range(40)]}
    folded = render_holder_notice(HolderNoticeContext("Hx", A, "zh-CN", many, "Example Mobile")).text
    assert "platform-" not in folded and "41家平台：41家尚未答复" in folded and len(folded) <= 335
