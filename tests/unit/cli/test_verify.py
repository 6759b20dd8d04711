"""`recycle verify` on evidence bundles and ledger folders: an empty or truncated bundle fails
(it proved "OK: 0 proofs"), files beyond the signed checkpoint are named with a warning."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli.app import app
from pipelines.ledger import (
    CanonicalValue,
    EntryType,
    Ledger,
    OpeningsStore,
    PreparedEntry,
    load_or_create_signer,
)

ORIGIN = "carrier.example/number-recycling/ledger"


def _entries(n: int, prefix: str) -> list[PreparedEntry]:
    base = {
        "msisdn": "+8613800000001",
        "tenure_start": dt.date(2020, 1, 1),
        "tenure_end": dt.date(2025, 1, 2),
    }
    return [
        PreparedEntry(f"{prefix}{i}", EntryType.TENURE_CLOSED, CanonicalValue.build(base, region=f"R{i}"))
        for i in range(n)
    ]


def _ledger(root: Path, *, unsigned: int = 0) -> Path:
    """A ledger of 3 signed entries (a bundle of them in root/bundle), then ``unsigned`` more
    appended and never signed: a night stopped between its append and its checkpoint."""
    keys = root / "keys"
    store = OpeningsStore.open(root / "private" / "openings", keys)
    try:
        with Ledger.open(
            root / "ledger", load_or_create_signer(keys, "carrier.example"), ORIGIN, store
        ) as led:
            led.append(_entries(3, "a"))
            led.publish_checkpoint()
            led.write_evidence(range(3), root / "bundle")
            (root / "bundle" / "vkey").write_text(led.vkey + "\n")
            if unsigned:
                led.append(_entries(unsigned, "b"))
    finally:
        store.close()
    return root / "ledger"


def _verify(path: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["verify", str(path)])
    return result.exit_code, result.stdout, result.stderr


def test_a_complete_bundle_verifies(tmp_path: Path) -> None:
    _ledger(tmp_path)
    rc, out, _ = _verify(tmp_path / "bundle")
    assert rc == 0 and "OK: 3 proofs verified (0 erased) against the checkpoint of size 3" in out


@pytest.mark.parametrize("index", ["[]", '{"entries": []}', "{"], ids=["empty-list", "no-entries", "cut"])
def test_an_empty_or_cut_bundle_fails_and_says_why(tmp_path: Path, index: str) -> None:
    _ledger(tmp_path)
    (tmp_path / "bundle" / "index.json").write_text(index)
    rc, out, err = _verify(tmp_path / "bundle")
    assert rc == 1 and "OK" not in out, out
    assert "FAILED:" in err and ("proves nothing" in err or "not JSON" in err or "is not a" in err)


def test_a_bundle_missing_a_listed_proof_fails_naming_it(tmp_path: Path) -> None:
    _ledger(tmp_path)
    (tmp_path / "bundle" / "1.tlog-proof").unlink()
    rc, _, err = _verify(tmp_path / "bundle")
    assert rc == 1 and "1.tlog-proof is missing: the bundle is truncated" in " ".join(err.split())


def test_a_bundle_whose_index_left_out_a_proof_fails_naming_it(tmp_path: Path) -> None:
    _ledger(tmp_path)
    index = tmp_path / "bundle" / "index.json"
    doc = json.loads(index.read_text())
    doc["entries"] = doc["entries"][:2]
    index.write_text(json.dumps(doc))
    rc, _, err = _verify(tmp_path / "bundle")
    assert rc == 1 and "does not list 2.tlog-proof" in err


def test_files_beyond_the_checkpoint_are_named_with_the_checkpoint_size(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, unsigned=2)
    rc, out, err = _verify(ledger)
    assert rc == 0 and "OK: ledger of 3 entries" in out  # the signed prefix verified: a warning
    text = " ".join(err.split())
    assert "WARNING: 2 tile file(s) beyond the signed checkpoint of size 3" in text
    assert "tile/0/000.p/5" in text and "tile/entries/000.p/5" in text
    assert "recycle run --date D" in text  # the pending marker: an interrupted night


def test_a_clean_ledger_has_no_warning(tmp_path: Path) -> None:
    rc, _, err = _verify(_ledger(tmp_path))
    assert rc == 0 and "WARNING" not in err


def test_a_vkey_too_long_for_a_file_name_is_taken_as_a_key(tmp_path: Path) -> None:
    """`--vkey` names a key file or is the key itself; a string longer than a file name may be
    (ENAMETOOLONG) is a key that does not match, never a traceback."""
    _ledger(tmp_path)
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "bundle"), "--vkey", "k" * 5000])
    assert result.exit_code == 1, result.stderr
    assert "FAILED" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
