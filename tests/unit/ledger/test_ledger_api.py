"""The integrator's Ledger API: idempotent appends, tenure references, checkpoints, evidence."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from ledger_testkit import KEY_NAME, ORIGIN, LedgerEnv, tenure_entries
from number_recycling_client.ledger.merkle import leaf_hash

from pipelines.errors import ConfigError, LogIntegrityError, TerminalError
from pipelines.ledger import (
    CanonicalValue,
    EntryType,
    Ledger,
    OpeningsStore,
    PreparedEntry,
    load_or_create_signer,
    open_checkpoint,
    tenure_ref_for,
    verify_inclusion,
)


def test_rerunning_a_batch_appends_nothing_twice(env: LedgerEnv) -> None:
    batch = tenure_entries(20)
    with env.open() as ledger:
        first = ledger.append(batch)
        assert first == list(range(len(batch)))
        cp1 = ledger.publish_checkpoint()
        note1 = ledger.signed_checkpoint
        again = ledger.append(batch)  # the same day, run again
        assert again == first and ledger.size == len(batch)
        assert ledger.publish_checkpoint() == cp1 and ledger.signed_checkpoint == note1
    with env.open() as ledger:  # and again after a restart
        mixed = ledger.append([*batch[:3], *tenure_entries(1, prefix="new")])
        assert mixed[:3] == first[:3] and mixed[3:] == list(range(len(batch), len(batch) + 4))


def test_entries_of_a_tenure_share_its_public_reference(env: LedgerEnv) -> None:
    with env.open() as ledger:
        idx = ledger.append(tenure_entries(2))
        closed = ledger.entry(idx[0])
        assert closed.entry_type == EntryType.TENURE_CLOSED
        assert closed.tenure_ref == tenure_ref_for(closed.commitment)
        assert {ledger.entry(i).tenure_ref for i in idx[:4]} == {closed.tenure_ref}
        assert ledger.entry(idx[4]).tenure_ref != closed.tenure_ref  # the second tenure
        # A later batch names the tenure by the key of its closing entry.
        value = CanonicalValue.build(msisdn="+8613800000000", reissued_on=dt.date(2025, 5, 1))
        [later] = ledger.append(
            [PreparedEntry("t0:reissued", EntryType.REISSUED, value, tenure_key="t0:closed")]
        )
        assert ledger.entry(later).tenure_ref == closed.tenure_ref
        manifest = CanonicalValue.build(feed_date=dt.date(2025, 5, 1), manifest_sha256=bytes(32))
        [m] = ledger.append([PreparedEntry("feed:2025-05-01", EntryType.FEED_MANIFEST, manifest)])
        assert ledger.entry(m).tenure_ref == bytes(16)
        with pytest.raises(TerminalError, match="not in the ledger"):
            ledger.append([PreparedEntry("x", EntryType.RELEASED, value, tenure_key="never-seen")])
        with pytest.raises(TerminalError, match="twice"):
            ledger.append([PreparedEntry("d", EntryType.FEED_MANIFEST, manifest)] * 2)
        assert ledger.index_of("t1:released") == idx[7] and ledger.index_of("nope") is None


def test_openings_match_the_logged_commitments(env: LedgerEnv) -> None:
    with env.open() as ledger:
        idx = ledger.append(tenure_entries(1))
        opened = ledger.opening(idx[3])
        assert opened.value.get("released_on") == "2025-04-02"
        assert opened.entry_type == EntryType.RELEASED


def test_proofs_and_checkpoints_from_the_api(env: LedgerEnv) -> None:
    with env.open() as ledger:
        ledger.append(tenure_entries(100))  # 400 entries: a full tile and a partial
        cp1 = ledger.publish_checkpoint()
        ledger.append(tenure_entries(50, prefix="u"))
        cp2 = ledger.publish_checkpoint()
        checkpoint = open_checkpoint((env.ledger_dir / "checkpoint").read_bytes(), env.signer.vkey, ORIGIN)
        assert checkpoint == cp2 == ledger.checkpoint
        for index in (0, 255, 256, cp1.size - 1, cp2.size - 1):
            proof = ledger.inclusion_proof(index)
            verify_inclusion(leaf_hash(ledger.entry(index).to_bytes()), index, cp2.size, proof, cp2.root)
        old = ledger.inclusion_proof(5, cp1.size)
        verify_inclusion(leaf_hash(ledger.entry(5).to_bytes()), 5, cp1.size, old, cp1.root)
        with pytest.raises(TerminalError, match="publish_checkpoint"):
            ledger.append(tenure_entries(1, prefix="z"))
            ledger.proof_file(ledger.size - 1)
    assert (env.ledger_dir / "vkey").read_text().strip() == env.signer.vkey


def test_a_ledger_refuses_another_key(env: LedgerEnv, tmp_path: Path) -> None:
    with env.open() as ledger:
        ledger.append(tenure_entries(1))
        ledger.publish_checkpoint()
    stranger = load_or_create_signer(tmp_path / "other-keys", KEY_NAME)
    with pytest.raises(ConfigError, match="wrong keys directory"):
        Ledger.open(env.ledger_dir, stranger, ORIGIN, env.store)


def test_a_wiped_ledger_with_a_signer_that_remembers_is_refused(env: LedgerEnv) -> None:
    with env.open() as ledger:
        ledger.append(tenure_entries(2))
        ledger.publish_checkpoint()
    import shutil

    shutil.rmtree(env.ledger_dir)
    with pytest.raises(LogIntegrityError, match="already signed size 8"):
        env.open()


def test_an_openings_store_out_of_step_with_the_ledger_is_refused(env: LedgerEnv, tmp_path: Path) -> None:
    with env.open() as ledger:
        ledger.append(tenure_entries(2))
        ledger.publish_checkpoint()
    with (
        OpeningsStore.open(tmp_path / "empty-store", env.keys_dir) as empty,
        pytest.raises(TerminalError, match="different backups"),
    ):
        Ledger.open(env.ledger_dir, env.signer, ORIGIN, empty)


def test_an_empty_ledger_can_be_checkpointed_and_verified(env: LedgerEnv) -> None:
    from number_recycling_client.ledger.merkle import EMPTY_ROOT

    from pipelines.ledger import verify_log

    with env.open() as ledger:
        cp = ledger.publish_checkpoint()
        assert (cp.size, cp.root) == (0, EMPTY_ROOT)
        ledger.append(tenure_entries(1))
        ledger.publish_checkpoint()  # from the empty tree: consistent by definition
    assert verify_log(env.ledger_dir, env.signer.vkey, ORIGIN).entries == 4
