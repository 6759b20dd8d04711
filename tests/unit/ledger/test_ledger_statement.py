"""Signed tenure statements: issued from three real nights, verified offline from the file and the
published key alone; altered, misissued and impossible statements fail with their reason."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from number_recycling_client.ledger.note import b64, sign_note
from number_recycling_client.ledger.proof import TlogProof
from statement_testkit import (
    CANCELLED,
    LIVE,
    LIVE_START,
    NEVER,
    PRIOR_START,
    RECYCLED,
    REISSUED,
    build_nights,
)

from pipelines.config import Settings
from pipelines.db import open_state
from pipelines.errors import (
    CommitmentError,
    FormatError,
    OpeningErasedError,
    ProofError,
    SignatureError,
    StatementError,
)
from pipelines.layout import Layout
from pipelines.ledger import verify_statement
from pipelines.ledger.evidence import erase_number
from pipelines.ledger.nightly import open_ledger
from pipelines.ledger.signer import load_or_create_signer
from pipelines.ledger.statement import split_statement
from pipelines.ledger.statement_issue import IssuedStatement, issue_statement
from pipelines.numbers import mask

ISSUED_AT = dt.datetime(2026, 1, 8, 2, 30, 5, tzinfo=dt.UTC)  # 10:30:05 in Shanghai


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_nights(tmp_path_factory.mktemp("statement-nights"))


@pytest.fixture
def own_nights(nights: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A copy of the nights a test may change for good (erasure)."""
    data = tmp_path / "data"
    shutil.copytree(nights.data_dir, data)
    yield Settings(data_dir=data)


def issue(settings: Settings, number: str, **kw: object) -> IssuedStatement:
    layout = Layout(settings.data_dir)
    with open_state(layout.state_db) as con, open_ledger(settings) as ledger:
        return issue_statement(
            con,
            ledger,
            number,
            issued_at=ISSUED_AT,
            zone=ZoneInfo("Asia/Shanghai"),
            **kw,  # type: ignore[arg-type]
        )


def vkey(settings: Settings) -> str:
    return (Layout(settings.data_dir).ledger_dir / "vkey").read_text().strip()


def test_prior_owner_and_new_holder_statements_verify_offline(nights: Settings, tmp_path: Path) -> None:
    prior = issue(nights, RECYCLED, tenure=PRIOR_START.isoformat())
    new = issue(nights, RECYCLED, at=REISSUED)
    key = vkey(nights)
    # Offline: only the bytes and the published key string; no state, no ledger directory.
    (tmp_path / "prior.txt").write_bytes(prior.data)
    p = verify_statement((tmp_path / "prior.txt").read_bytes(), key).facts
    assert (p["subscriber_ref"], p["msisdn"], p["status"]) == ("SUB-A", RECYCLED, "ended")
    assert (p["tenure_start"], p["tenure_end"], p["end_reason"]) == (
        str(PRIOR_START),
        str(CANCELLED),
        "cancel",
    )
    n = verify_statement(new.data, key)
    assert (n.facts["subscriber_ref"], n.facts["opened_by"], n.facts["tenure_start"]) == (
        "SUB-B",
        "reissue",
        str(REISSUED),
    )
    assert n.current and "tenure_end" not in n.facts and n.facts["as_of"] == str(REISSUED)
    assert n.facts["issued_local"] == "2026-01-08T10:30:05+08:00" and n.facts["timezone"] == "Asia/Shanghai"
    assert n.index == prior.index + 1 and n.checkpoint.size == n.index + 1
    assert prior.facts.tenure_id != new.facts.tenure_id


def test_a_live_tenure_is_current_as_of_the_last_night(nights: Settings) -> None:
    stated = verify_statement(issue(nights, LIVE).data, vkey(nights))
    assert stated.facts["status"] == "current" and stated.facts["tenure_start"] == str(LIVE_START)
    assert "since 2021-05-05, current as of 2026-01-07" in stated.describe()
    assert LIVE not in stated.describe() and mask(LIVE) in stated.describe()


def _swap(data: bytes, old: str, new: str) -> bytes:
    assert old.encode() in data
    return data.replace(old.encode(), new.encode(), 1)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: _swap(d, f"msisdn {RECYCLED}", "msisdn +8613800138001"), SignatureError),
        (lambda d: _swap(d, f"tenure_start {PRIOR_START}", "tenure_start 2019-03-01"), SignatureError),
        (lambda d: _swap(d, "subscriber_ref SUB-A", "subscriber_ref SUB-X"), SignatureError),
    ],
    ids=["number", "start-date", "subscriber"],
)
def test_altered_facts_fail_the_signature(nights: Settings, change: object, error: type) -> None:
    data = issue(nights, RECYCLED, tenure=str(PRIOR_START)).data
    assert verify_statement(data, vkey(nights)).facts["msisdn"] == RECYCLED
    with pytest.raises(error, match="invalid signature"):
        verify_statement(change(data), vkey(nights))  # type: ignore[operator]


def test_altered_signature_and_proof_fail_with_their_reason(nights: Settings) -> None:
    data = issue(nights, RECYCLED, tenure=str(PRIOR_START)).data
    note, proof_bytes = split_statement(data)
    sig_line = note.rstrip(b"\n").rsplit(b"\n", 1)[1]
    name, sig64 = sig_line.rsplit(b" ", 1)
    raw = base64.b64decode(sig64)
    flipped = b64(raw[:-1] + bytes([raw[-1] ^ 1])).encode()  # same key ID, one bit of the signature
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_statement(note.replace(sig_line, name + b" " + flipped) + proof_bytes, vkey(nights))
    proof = TlogProof.from_bytes(proof_bytes)
    bad_hash = bytes(32) if proof.hashes[0] != bytes(32) else b"\x01" * 32
    altered = TlogProof(proof.index, (bad_hash, *proof.hashes[1:]), proof.checkpoint, proof.extra)
    with pytest.raises(ProofError):
        verify_statement(note + altered.to_bytes(), vkey(nights))
    other_index = TlogProof(proof.index - 1, proof.hashes, proof.checkpoint, proof.extra)
    with pytest.raises(ProofError):
        verify_statement(note + other_index.to_bytes(), vkey(nights))


def test_signed_facts_that_are_not_the_logged_ones_fail(nights: Settings) -> None:
    """Even the carrier's own key cannot sign facts other than those its ledger entry commits to."""
    data = issue(nights, RECYCLED, tenure=str(PRIOR_START)).data
    note, proof = split_statement(data)
    text = note[: note.rindex(b"\n\n") + 1]
    signer = load_or_create_signer(Layout(nights.data_dir).keys_dir, nights.ledger.key_name)
    resigned = sign_note(text.replace(f"tenure_end {CANCELLED}".encode(), b"tenure_end 2026-01-07"), [signer])
    with pytest.raises(CommitmentError, match="fields: tenure_end"):
        verify_statement(resigned + proof, vkey(nights))


def test_a_proof_of_another_entry_or_another_key_fails(nights: Settings, tmp_path: Path) -> None:
    data = issue(nights, RECYCLED, tenure=str(PRIOR_START)).data
    note, _ = split_statement(data)
    with open_ledger(nights) as ledger:
        closed = ledger.proof_file(0)  # the tenure_closed entry of the first night with a closure
    with pytest.raises(FormatError, match="not a tenure_statement"):
        verify_statement(note + closed, vkey(nights))
    stranger = load_or_create_signer(tmp_path / "keys", nights.ledger.key_name)
    with pytest.raises(SignatureError):
        verify_statement(data, stranger.vkey)


def test_a_number_or_tenure_that_does_not_exist_is_a_clear_error(nights: Settings) -> None:
    with pytest.raises(StatementError, match=r"137\*\*\*\*7000 is not on record"):
        issue(nights, NEVER)
    with pytest.raises(
        StatementError, match=r"no tenure 2019-01-01 \(tenures starting: 2020-03-01, 2026-01-07\)"
    ):
        issue(nights, RECYCLED, tenure="2019-01-01")
    with pytest.raises(StatementError, match="has no tenure covering 2019-01-01"):
        issue(nights, RECYCLED, at=dt.date(2019, 1, 1))


def test_an_erased_tenure_gets_no_statement_and_erasure_covers_statements(own_nights: Settings) -> None:
    issued = issue(own_nights, RECYCLED, tenure=str(PRIOR_START))
    with open_state(Layout(own_nights.data_dir).state_db) as con, open_ledger(own_nights) as ledger:
        assert erase_number(con, ledger, RECYCLED) >= 4  # closure, reminders, reissue, the statement
        with pytest.raises(OpeningErasedError):
            ledger.opening(issued.index)
    for kw in ({"tenure": str(PRIOR_START)}, {"at": REISSUED}):
        with pytest.raises(StatementError, match=r"was erased .* no statement can be issued"):
            issue(own_nights, RECYCLED, **kw)
    assert verify_statement(issue(own_nights, LIVE).data, vkey(own_nights)).facts["subscriber_ref"] == "SUB-C"


def test_the_verifier_imports_without_duckdb_or_pyarrow() -> None:
    code = (
        "import sys; from pipelines.ledger.statement import verify_statement; "
        "bad = [m for m in ('duckdb', 'pyarrow', 'airflow') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_cli_issues_a_private_file_and_verifies_it(own_nights: Settings, tmp_path: Path) -> None:
    def recycle(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pipelines.cli.app", *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, check=False, env=os.environ | {"COLUMNS": "200"}
        )

    out = tmp_path / "mine" / "statement.txt"
    data = str(own_nights.data_dir)
    made = recycle(
        "statement", "--data", data, "--number", "13800138000", "--at", str(REISSUED), "--out", str(out)
    )
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "13800138000" not in made.stdout + made.stderr and mask(RECYCLED) in made.stderr
    key = vkey(own_nights)
    ok = recycle("verify", str(out), "--vkey", key)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert "OK: subscriber SUB-B held 138****8000 since 2026-01-07, current as of 2026-01-07" in ok.stdout
    assert "13800138000" not in ok.stdout + ok.stderr
    out.write_bytes(_swap(out.read_bytes(), "tenure_start 2026-01-07", "tenure_start 2025-01-07"))
    bad = recycle("verify", str(out), "--vkey", key)
    assert bad.returncode == 1 and "FAILED" in bad.stderr and "invalid signature" in bad.stderr
    missing = recycle("statement", "--data", data, "--number", "13700137000")
    assert (
        missing.returncode == 2 and "13700137000" not in missing.stderr and "not on record" in missing.stderr
    )
