"""``nrc``'s store and command line on a real sqlite3 store (a verified pull from the trust
tests' in-memory publisher), no server: check answers, errors are one line, no full number."""

from __future__ import annotations

from pathlib import Path

import pytest
from number_recycling_client.cli import main
from number_recycling_client.store import connect, load_last_pull, store_pull
from test_trust import Publisher, no_tiles, through_rows, trusting


def _stored(tmp_path: Path) -> Path:
    repo = Publisher(tmp_path)
    repo.publish(2)
    repo.publish(3)
    trust = through_rows(trusting(repo), repo)
    trust.verify_ledger(no_tiles)
    state = tmp_path / "state"
    con = connect(state)
    store_pull(con, trust.verified())
    assert load_last_pull(con).last_row_seq == trust.last_row_seq
    con.close()
    return state


def test_check_answers_from_the_store_and_hides_the_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _stored(tmp_path)
    assert main(["check", "+8613800000001", "--since", "2026-07-01", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("yes") and "13800000001" not in out
    assert main(["check", "+8613899999999", "--since", "2026-07-01", "--state", str(state)]) == 0
    assert capsys.readouterr().out.strip() == "no"


def test_errors_are_one_line_with_the_next_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "+8613800000001", "--since", "2026-07-01", "--state", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "nrc pull" in err and err.count("\n") == 1 and "13800000001" not in err
    assert main(["check", "13800000001", "--since", "2026-07-01", "--state", str(_stored(tmp_path))]) == 2
    assert "E.164" in capsys.readouterr().err
