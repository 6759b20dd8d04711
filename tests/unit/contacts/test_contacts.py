"""Contacts at rest: sealed in the state file, opened only with the keystore, erased by deleting a key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.config import load_settings
from pipelines.contacts import ContactVault
from pipelines.contacts.retention import purge_clear_copies, reseal_released, retire_contacts
from pipelines.contacts.vault import HEADER_SIZE
from pipelines.db import connect
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, run_day, step_contacts

DAY = dt.date(2026, 3, 2)
EMAIL = "leak.alpha@example.cn"
PHONE_DIGITS = "13912345678"
SUBSCRIBERS = (
    "msisdn,tenure_start,region,subscriber_ref,contact_email,contact_phone,language\n"
    f"13800138000,2020-01-01,GD,S-1,{EMAIL},{PHONE_DIGITS},zh-CN\n"
)
LIFECYCLE = (
    "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n"
)


def _raw(data: Path) -> bytes:
    state = Layout(data).state_db
    return b"".join(p.read_bytes() for p in (state, state.with_name(state.name + ".wal")) if p.exists())


def test_a_night_leaves_no_contact_in_clear_in_the_state_file(tmp_path: Path) -> None:
    inbox = Layout(tmp_path).inbox(DAY)
    inbox.mkdir(parents=True)
    (inbox / "subscribers_0001.csv").write_text(SUBSCRIBERS)
    (inbox / "lifecycle_0001.csv").write_text(LIFECYCLE)
    (inbox / "reissue_0001.csv").write_text("msisdn,reissue_date,region,subscriber_ref\n")
    settings = load_settings(env={}, data_dir=tmp_path)
    run_day(settings, DAY, RunContext(simulate_gateways=True, alerts_mode="record"))
    raw = _raw(tmp_path)
    assert EMAIL.encode() not in raw and PHONE_DIGITS.encode() not in raw
    with connect(Layout(tmp_path).state_db, read_only=True) as con:  # the keystore opens them
        assert con.execute(
            "SELECT contact_open(contact_email), contact_open(contact_phone) FROM tenures"
        ).fetchall() == [(EMAIL, "+86" + PHONE_DIGITS)]


def _released_tenure(data: Path, released_on: dt.date) -> None:
    with connect(Layout(data).state_db) as con:
        con.execute(
            "INSERT INTO tenures VALUES ('T1', '+8613800138000', DATE '2020-01-01', DATE '2026-01-01', 'cancel',"
            " 'S-1', 'GD', contact_seal($e), contact_seal($p), 'zh-CN', 'snapshot', DATE '2020-01-01')",
            {"e": EMAIL, "p": "+86" + PHONE_DIGITS},
        )
        con.execute(
            "INSERT INTO tenures VALUES ('T2', '+8613800138001', DATE '2020-01-01', NULL, NULL,"
            " 'S-2', 'GD', contact_seal('live.beta@example.cn'), NULL, 'zh-CN', 'snapshot', DATE '2020-01-01')"
        )
        con.execute(
            "INSERT INTO releases VALUES ('+8613800138000', 'T1', DATE '2026-01-01', $r, 2, false, $r, 'GD')",
            {"r": released_on},
        )
        reseal_released(con, released_on, "SELECT 'T1'")
        con.execute("CHECKPOINT")


def _recoverable(data: Path, value: str) -> bool:
    """Try every remaining key of the keystore at every sealed-value header in the raw state file."""
    raw, vault = _raw(data), ContactVault.for_state(Layout(data).state_db)
    size = HEADER_SIZE + len(value.encode()) + 16
    for epoch in vault.epochs():
        header = vault.seal([""], epoch)[0].as_py()[:HEADER_SIZE]
        at = raw.find(header)
        while at >= 0:
            try:
                if vault.open([raw[at : at + size]])[0].as_py() == value:
                    return True
            except Exception:
                pass
            at = raw.find(header, at + 1)
    return False


@pytest.mark.parametrize("retention", [30, 180])
def test_contacts_are_shredded_retention_days_after_release(tmp_path: Path, retention: int) -> None:
    released = dt.date(2026, 3, 1)
    _released_tenure(tmp_path, released)
    vault = ContactVault.for_state(Layout(tmp_path).state_db)
    with connect(Layout(tmp_path).state_db) as con:
        retire_contacts(con, vault, released, retention)  # the live generation is first seen
        day_before = retire_contacts(con, vault, released + dt.timedelta(days=retention - 1), retention)
        assert day_before.erased == () and _recoverable(tmp_path, EMAIL)
        report = retire_contacts(con, vault, released + dt.timedelta(days=retention), retention)
        assert report.erased_tenures == 1 and "released-2026-03-01" in report.erased
        assert report.retired == "live-2" and "live-1" in report.erased  # the pre-release copies' key
        rows = con.execute("SELECT contact_open(contact_email) FROM tenures ORDER BY tenure_id").fetchall()
        assert rows == [(None,), ("live.beta@example.cn",)]  # erased; the live tenure's survives
        record = con.execute(
            "SELECT epoch, erased_logical, tenures FROM contact_keys WHERE epoch LIKE 'released-%'"
        ).fetchall()
        assert record == [("released-2026-03-01", released + dt.timedelta(days=retention), 1)]
        again = retire_contacts(con, vault, released + dt.timedelta(days=retention), retention)
        assert again.erased == ()  # idempotent
        con.execute("CHECKPOINT")
    assert not vault.key_path("released-2026-03-01").exists()
    assert not _recoverable(tmp_path, EMAIL) and not _recoverable(tmp_path, "+86" + PHONE_DIGITS)
    assert _recoverable(tmp_path, "live.beta@example.cn")  # the scan does find what is not erased


def test_an_erased_address_is_never_sent(tmp_path: Path) -> None:
    from pipelines.reminders.send import _find_pending

    with connect(Layout(tmp_path).state_db) as con:
        con.execute(
            "INSERT INTO outbox VALUES ('R1', 'R1', 'email', contact_reseal(contact_seal($e), 'released-2026-03-01'),"
            " 'zh-CN', 's', 't', NULL, $d, 'pending', 0, NULL, NULL, $d)",
            {"e": EMAIL, "d": DAY},
        )
        ContactVault.for_state(Layout(tmp_path).state_db).erase("released-2026-03-01")
        _find_pending(con, DAY)
        assert con.execute("SELECT count(*) FROM _send").fetchone() == (0,)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    from pipelines.errors import ConfigError

    vault = ContactVault(tmp_path / "keys")
    sealed = vault.seal([EMAIL])
    vault.key_path("live-1").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ContactVault(tmp_path / "keys").open(sealed.to_pylist())


def _clear_copies(data: Path, night: dt.date) -> list[Path]:
    """A night's copies holding contacts in clear, as ingest, GX and the letters channel leave them."""
    copies = [
        data / "inbox" / night.isoformat() / f"subscribers_{night.isoformat()}.csv",
        data / "runs" / night.isoformat() / "gx" / "subscribers.json",
        data / "outbox" / "letters" / f"letters_{night.isoformat()}.csv",
    ]
    for path in copies:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{EMAIL}\n")
    return copies


def test_clear_copies_go_when_their_night_is_retention_days_old(tmp_path: Path) -> None:
    """The drops, GX results and letters of a night hold contacts in clear: sealing the state is
    worth nothing while they stay, so they go when the night is contact_retention_days old."""
    old, recent = dt.date(2026, 1, 1), dt.date(2026, 6, 1)
    old_copies, recent_copies = _clear_copies(tmp_path, old), _clear_copies(tmp_path, recent)
    steps = tmp_path / "runs" / old.isoformat() / "steps" / "ingest.json"  # which nights ran: kept
    steps.parent.mkdir(parents=True)
    steps.write_text("{}")
    on_time = purge_clear_copies(tmp_path, old + dt.timedelta(days=179), 180)
    assert on_time.deleted == () and all(p.exists() for p in old_copies)
    report = purge_clear_copies(tmp_path, old + dt.timedelta(days=180), 180)
    assert not any(p.exists() for p in old_copies) and not (tmp_path / "inbox" / old.isoformat()).exists()
    assert all(p.exists() for p in recent_copies) and steps.exists()
    assert sorted(report.deleted) == sorted(
        ["inbox/2026-01-01", "runs/2026-01-01/gx", "outbox/letters/letters_2026-01-01.csv"]
    )
    assert purge_clear_copies(tmp_path, old + dt.timedelta(days=180), 180).deleted == ()  # idempotent


def test_the_nightly_step_deletes_the_clear_copies_of_old_nights(tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=tmp_path, contact_retention_days=30)
    _released_tenure(tmp_path, dt.date(2026, 3, 1))
    copies = _clear_copies(tmp_path, dt.date(2026, 1, 1))
    report = step_contacts(settings, dt.date(2026, 3, 1), RunContext())
    assert "inbox/2026-01-01" in report["clear_copies"]["deleted"]
    assert not any(p.exists() for p in copies)


def test_a_fresh_vault_sealed_from_many_threads_at_once_makes_one_whole_key(tmp_path: Path) -> None:
    """DuckDB seals from several threads: the first use of a fresh vault must give every thread the
    same whole key (a key file created empty and written after was read empty by the others; a
    race, so five fresh vaults)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    for attempt in range(5):
        keys = tmp_path / f"keys-{attempt}"
        barrier = Barrier(16)
        vaults = [ContactVault(keys) for _ in range(16)]  # as separate processes would

        def seal(vault: ContactVault, barrier: Barrier = barrier) -> bytes:
            barrier.wait()
            return vault.seal([EMAIL]).to_pylist()[0]

        with ThreadPoolExecutor(16) as pool:
            sealed = list(pool.map(seal, vaults))
        assert [p.name for p in (keys / "contacts").iterdir()] == ["live-1.key"]
        assert ContactVault(keys).open(sealed).to_pylist() == [EMAIL] * 16
