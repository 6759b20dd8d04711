"""Evidence bundles as a whole (``ledger/evidence.py``: ``verify_bundle``): an empty, truncated or
edited bundle fails naming what is missing; a complete one verifies every proof it lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from ledger_testkit import ORIGIN, LedgerEnv, tenure_entries

from pipelines.errors import EvidenceBundleError, VerificationError
from pipelines.ledger.evidence import INDEX_FILE, verify_bundle


@pytest.fixture
def bundle(env: LedgerEnv, tmp_path: Path) -> Path:
    """A bundle of one tenure's four entries (closed, two effective reminders, released)."""
    with env.open() as ledger:
        ledger.append(tenure_entries(3))
        ledger.publish_checkpoint()
        indices = [ledger.index_of(f"t1:{k}") for k in ("closed", "eff0", "eff1", "released")]
        ledger.write_evidence([i for i in indices if i is not None], tmp_path / "bundle")
    return tmp_path / "bundle"


def _index(folder: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((folder / INDEX_FILE).read_text())
    return doc


def _rewrite(folder: Path, doc: Any) -> None:
    (folder / INDEX_FILE).write_text(json.dumps(doc))


def test_a_complete_bundle_verifies_every_listed_proof(bundle: Path, env: LedgerEnv) -> None:
    report = verify_bundle(bundle, env.signer.vkey, ORIGIN)
    assert [v.entry.entry_type.label for v in report.verified] == [
        "tenure_closed",
        "reminder_effective",
        "reminder_effective",
        "released",
    ]
    assert report.erased == 0 and report.checkpoint.size == 12


@pytest.mark.parametrize(
    "doc",
    [[], {}, "x", {"format": "number-recycling/evidence/v1", "entries": []}],
    ids=["empty-list", "empty-object", "string", "no-entries"],
)
def test_an_empty_index_proves_nothing(bundle: Path, env: LedgerEnv, doc: Any) -> None:
    if isinstance(doc, dict) and "entries" in doc:
        doc = _index(bundle) | {"entries": []}
    _rewrite(bundle, doc)
    with pytest.raises(EvidenceBundleError, match=r"proves nothing|not a number-recycling/evidence/v1"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_a_truncated_index_json_fails(bundle: Path, env: LedgerEnv) -> None:
    data = (bundle / INDEX_FILE).read_bytes()
    (bundle / INDEX_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(EvidenceBundleError, match="is not JSON"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_a_listed_proof_that_is_missing_fails_naming_it(bundle: Path, env: LedgerEnv) -> None:
    name = _index(bundle)["entries"][2]["file"]
    (bundle / name).unlink()
    with pytest.raises(EvidenceBundleError, match=f"{name} is missing: the bundle is truncated"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_a_proof_left_out_of_the_index_fails_naming_it(bundle: Path, env: LedgerEnv) -> None:
    doc = _index(bundle)
    dropped = doc["entries"].pop()
    _rewrite(bundle, doc)
    with pytest.raises(EvidenceBundleError, match=f"does not list {dropped['file']}"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_all_erased_proves_nothing(bundle: Path, env: LedgerEnv) -> None:
    doc = _index(bundle)
    for item in doc["entries"]:
        (bundle / item["file"]).unlink()
        item.update(erased=True, file=None, value=None)
    _rewrite(bundle, doc)
    with pytest.raises(EvidenceBundleError, match="all 4 entries are erased"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_one_erased_entry_is_counted(bundle: Path, env: LedgerEnv) -> None:
    doc = _index(bundle)
    (bundle / doc["entries"][1]["file"]).unlink()
    doc["entries"][1].update(erased=True, file=None, value=None)
    _rewrite(bundle, doc)
    report = verify_bundle(bundle, env.signer.vkey, ORIGIN)
    assert (len(report.verified), report.erased) == (3, 1)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("value", {"msisdn": "+8613800000009"}, "says value"),
        ("type", "released_with_exception", "says type"),
        ("tenure_ref", "00" * 16, "says tenure_ref"),
        ("file", "../../vkey", "must name its proof file"),
        ("index", -1, "non-negative integer index"),
        ("index", True, "non-negative integer index"),
    ],
)
def test_what_index_json_states_must_be_what_the_proofs_prove(
    bundle: Path, env: LedgerEnv, field: str, value: Any, match: str
) -> None:
    doc = _index(bundle)
    doc["entries"][0][field] = value
    _rewrite(bundle, doc)
    with pytest.raises(EvidenceBundleError, match=match):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_the_stated_checkpoint_must_be_the_proofs(bundle: Path, env: LedgerEnv) -> None:
    doc = _index(bundle)
    doc["checkpoint"]["size"] += 1
    _rewrite(bundle, doc)
    with pytest.raises(EvidenceBundleError, match="not the one every proof is verified against"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_a_proof_of_another_index_under_a_listed_name_fails(bundle: Path, env: LedgerEnv) -> None:
    files = [item["file"] for item in _index(bundle)["entries"]]
    shutil.copyfile(bundle / files[1], bundle / files[0])
    with pytest.raises(EvidenceBundleError, match="says index"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


def test_an_oversized_proof_is_refused_before_reading(bundle: Path, env: LedgerEnv) -> None:
    name = _index(bundle)["entries"][0]["file"]
    with (bundle / name).open("r+b") as f:
        f.truncate(2 << 20)
    with pytest.raises(VerificationError, match="larger than any tlog-proof"):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"vkey": "other.example+00000000+AQ=="}, "names the key"),
        (
            {"wkey": "x"},
            "not a number-recycling/evidence/v1 index",
        ),  # found by the fuzzer: an unchecked field
        ({"origin": "elsewhere.example/log"}, "origin"),
    ],
)
def test_every_field_of_index_json_is_checked(
    bundle: Path, env: LedgerEnv, edit: dict[str, str], match: str
) -> None:
    _rewrite(bundle, _index(bundle) | edit)
    with pytest.raises(EvidenceBundleError, match=match):
        verify_bundle(bundle, env.signer.vkey, ORIGIN)
