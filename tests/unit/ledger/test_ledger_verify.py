"""Auditor-side verification: proof files, whole-log fsck, the release audit, and tampering."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from ledger_testkit import ORIGIN, LedgerEnv, tenure_entries
from number_recycling_client.ledger.proof import TlogProof

from pipelines.errors import (
    CommitmentError,
    FormatError,
    LogIntegrityError,
    OpeningErasedError,
    ProofError,
    SignatureError,
    VerificationError,
)
from pipelines.ledger import (
    CanonicalValue,
    EntryType,
    PreparedEntry,
    audit_log,
    verify_log,
    verify_proof_file,
)
from pipelines.ledger.verify import evidence_extra


@pytest.fixture
def published(env: LedgerEnv) -> LedgerEnv:
    """A ledger of 4 checkpoints (older partial tiles on disk), 600+ entries, two tile levels."""
    with env.open() as ledger:
        for batch in range(4):
            ledger.append(tenure_entries(40 + 15 * batch, prefix=f"b{batch}-", sent=True))
            ledger.publish_checkpoint()
    return env


def _flip(path: Path, pos: int) -> bytes:
    original = path.read_bytes()
    data = bytearray(original)
    data[pos % len(data)] ^= 0x04
    path.write_bytes(bytes(data))
    return original


def test_verify_log_checks_every_tile_and_older_partial(published: LedgerEnv) -> None:
    report = verify_log(published.ledger_dir, published.signer.vkey, ORIGIN)
    assert report.entries == report.checkpoint.size > 512
    assert report.tiles_checked > 5 and report.bundles_checked > 4 and report.ignored_files == ()


def test_any_flipped_byte_in_a_tile_bundle_or_checkpoint_fails_verification(
    published: LedgerEnv,
) -> None:
    d = published.ledger_dir
    targets = [*sorted(p for p in (d / "tile").rglob("*") if p.is_file()), d / "checkpoint"]
    assert len(targets) > 10
    for path in targets:
        size = path.stat().st_size
        for pos in (0, size // 2, size - 1):
            original = _flip(path, pos)
            try:
                with pytest.raises(VerificationError) as info:
                    verify_log(d, published.signer.vkey, ORIGIN)
            finally:
                path.write_bytes(original)
            rel = path.relative_to(d).as_posix()
            if rel.startswith("tile/") and not rel.startswith("tile/entries"):
                assert isinstance(info.value, LogIntegrityError), (rel, pos, info.value)
                assert rel in str(info.value)
            elif rel == "checkpoint":
                assert isinstance(info.value, SignatureError | FormatError)
    verify_log(d, published.signer.vkey, ORIGIN)


def test_missing_tile_is_reported(published: LedgerEnv) -> None:
    (published.ledger_dir / "tile/0/001").unlink()
    with pytest.raises(LogIntegrityError, match="tile/0/001 is missing"):
        verify_log(published.ledger_dir, published.signer.vkey)


def test_evidence_bundle_verifies_offline_and_every_byte_matters(
    published: LedgerEnv, tmp_path: Path
) -> None:
    with published.open() as ledger:
        wanted = [
            ledger.index_of("b0-3:closed"),
            ledger.index_of("b2-7:eff1"),
            ledger.index_of("b3-0:released"),
        ]
        assert None not in wanted
        index_json = ledger.write_evidence([i for i in wanted if i is not None], tmp_path / "evidence")
    doc = json.loads(index_json.read_text())
    assert [e["type"] for e in doc["entries"]] == [
        "tenure_closed",
        "reminder_effective",
        "released",
    ]
    assert doc["entries"][2]["value"]["effective_reminders"] == "2"
    for item in doc["entries"]:
        data = (tmp_path / "evidence" / item["file"]).read_bytes()
        verified = verify_proof_file(data, doc["vkey"], ORIGIN)
        assert verified.index == item["index"] and verified.value.as_dict() == item["value"]
        assert verified.entry.tenure_ref.hex() == item["tenure_ref"]
    # Flip every byte of one proof file: each must fail, with the error for that part.
    data = (tmp_path / "evidence" / doc["entries"][1]["file"]).read_bytes()
    proof = TlogProof.from_bytes(data)
    header_end = data.index(b"\n\n")
    for pos in range(len(data)):
        mutated = bytearray(data)
        mutated[pos] ^= 0x01
        with pytest.raises(VerificationError) as info:
            verify_proof_file(bytes(mutated), published.signer.vkey, ORIGIN)
        if pos > header_end + 1:  # inside the checkpoint note
            assert isinstance(info.value, SignatureError | FormatError), pos
    # Semantic tampering that keeps the format valid gets the precise error.
    assert proof.extra is not None
    value = CanonicalValue.from_bytes(proof.extra[82:])
    forged_value = CanonicalValue.build(value.as_dict(), channel="email")
    forged = TlogProof(
        proof.index, proof.hashes, proof.checkpoint, proof.extra[:82] + forged_value.to_bytes()
    )
    with pytest.raises(CommitmentError):
        verify_proof_file(forged.to_bytes(), published.signer.vkey)
    wrong_index = TlogProof(proof.index + 1, proof.hashes, proof.checkpoint, proof.extra)
    with pytest.raises(ProofError):
        verify_proof_file(wrong_index.to_bytes(), published.signer.vkey)
    with pytest.raises(SignatureError, match="another ledger"):
        verify_proof_file(data, published.signer.vkey, "elsewhere.example/log")


def test_audit_from_the_public_log(env: LedgerEnv) -> None:
    base = {
        "msisdn": "+8613900000001",
        "tenure_start": dt.date(2020, 1, 1),
        "tenure_end": dt.date(2025, 1, 1),
    }
    value = CanonicalValue.build(base)
    entries = [
        *tenure_entries(3, reminders=2, sent=True),  # compliant
        *tenure_entries(1, reminders=1, prefix="thin", sent=True),  # released after one: offending
        PreparedEntry("late:closed", EntryType.TENURE_CLOSED, value),
        PreparedEntry("late:exc", EntryType.RELEASED_WITH_EXCEPTION, value, tenure_key="late:closed"),
        PreparedEntry("orphan:released", EntryType.RELEASED, value, tenure_ref=bytes(range(16))),
        PreparedEntry("viol", EntryType.REISSUE_VIOLATION, value, tenure_key="late:closed"),
        # A reminder logged after the release does not count for it.
        PreparedEntry("thin0:sent-late", EntryType.REMINDER_SENT, value, tenure_key="thin0:closed"),
        PreparedEntry("thin0:eff-late", EntryType.REMINDER_EFFECTIVE, value, tenure_key="thin0:closed"),
    ]
    with env.open() as ledger:
        ledger.append(entries)
        ledger.publish_checkpoint()
        thin_ref = ledger.entry(ledger.index_of("thin0:released") or 0).tenure_ref.hex()
    report = audit_log(env.ledger_dir, env.signer.vkey, min_effective=2, origin=ORIGIN)
    assert not report.passed
    assert report.released == 5 and report.counts["reminder_effective"] == 8
    assert [(f.tenure_ref, f.effective_reminders) for f in report.under_reminded] == [
        (thin_ref, 1),
        (bytes(range(16)).hex(), 0),  # the orphan release had no reminders either
    ]
    assert len(report.exceptions) == 1 and report.exceptions[0].effective_reminders == 0
    assert len(report.violations) == 1
    assert [f.tenure_ref for f in report.released_without_closure] == [bytes(range(16)).hex()]
    relaxed = audit_log(env.ledger_dir, env.signer.vkey, min_effective=1)
    assert [f.tenure_ref for f in relaxed.under_reminded] == [bytes(range(16)).hex()]
    assert report.effective_without_sent == ()


def test_audit_fails_on_an_effective_reminder_never_sent(env: LedgerEnv) -> None:
    # A forged log: the carrier logged a reminder effective that it never logged as sent. The
    # public log shows no reminder ids, so the audit counts per tenure: at every
    # reminder_effective entry, the tenure's reminder_effective entries so far must not
    # outnumber its reminder_sent entries before it.
    base = {"msisdn": "+8613900000001", "tenure_start": dt.date(2020, 1, 1)}
    value = CanonicalValue.build(base, tenure_end=dt.date(2025, 1, 1))

    def entry(key: str, kind: EntryType) -> PreparedEntry:
        return PreparedEntry(f"forged:{key}", kind, value, tenure_key="forged:closed")

    entries = [
        *tenure_entries(2, sent=True),  # honest tenures around it
        PreparedEntry("forged:closed", EntryType.TENURE_CLOSED, value),
        entry("sent0", EntryType.REMINDER_SENT),
        entry("eff0", EntryType.REMINDER_EFFECTIVE),
        entry("eff1", EntryType.REMINDER_EFFECTIVE),  # no second reminder_sent before it
        entry("sent1", EntryType.REMINDER_SENT),  # logged after the fact: does not cure it
        entry("released", EntryType.RELEASED),
    ]
    with env.open() as ledger:
        ledger.append(entries)
        ledger.publish_checkpoint()
        forged = ledger.index_of("forged:eff1")
        ref = ledger.entry(forged or 0).tenure_ref.hex()
    report = audit_log(env.ledger_dir, env.signer.vkey, min_effective=2, origin=ORIGIN)
    assert not report.passed
    assert report.under_reminded == () and report.released == 3  # it has its two effective
    (finding,) = report.effective_without_sent
    assert (finding.index, finding.tenure_ref, finding.effective_reminders) == (forged, ref, 2)
    assert finding.sent_reminders == 1
    assert "reminder_effective" in finding.describe() and "reminder_sent" in finding.describe()


def test_erase_makes_an_entry_unopenable_while_the_log_still_verifies(
    published: LedgerEnv, tmp_path: Path
) -> None:
    with published.open() as ledger:
        index = ledger.index_of("b1-4:eff0")
        assert index is not None
        before = ledger.proof_file(index)
        ledger.erase(index)
        with pytest.raises(OpeningErasedError):
            ledger.opening(index)
        with pytest.raises(OpeningErasedError):
            ledger.proof_file(index)
        doc = json.loads(ledger.write_evidence([index, index + 1], tmp_path / "ev").read_text())
        assert doc["entries"][0] == {
            "index": index,
            "type": "reminder_effective",
            "tenure_ref": ledger.entry(index).tenure_ref.hex(),
            "erased": True,
            "file": None,
            "value": None,
        }
        assert doc["entries"][1]["erased"] is False
        assert ledger.index_of("b1-4:eff0") == index  # reruns will not re-log the erased fact
    verify_log(published.ledger_dir, published.signer.vkey, ORIGIN)
    assert audit_log(published.ledger_dir, published.signer.vkey, 2).passed
    # A proof exported before the erasure still verifies: erasure cannot recall copies given out.
    verify_proof_file(before, published.signer.vkey)


def test_evidence_extra_layout() -> None:
    from number_recycling_client.ledger.entries import Entry

    e = Entry(EntryType.RELEASED, bytes(16), bytes(32))
    v = CanonicalValue.build(channel="sms")
    assert evidence_extra(e, bytes(range(32)), v) == e.to_bytes() + bytes(range(32)) + v.to_bytes()
