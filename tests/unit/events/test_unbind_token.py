"""The holder's unbind token (pipelines.events.unbind_token): one verifier refuses forged,
expired, other-purpose and other-key tokens; the key is 0600; the number is not readable."""

from __future__ import annotations

import base64
import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from pipelines.events.unbind_token import UnbindTokenError, issue_token, key_path, verify_token

N = "+8613800000001"
SINCE = dt.date(2026, 12, 1)
T0 = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)


def test_a_token_verifies_until_it_expires(tmp_path: Path) -> None:
    token = issue_token(tmp_path, N, SINCE, T0, 3600)
    holder = verify_token(tmp_path, token, T0 + dt.timedelta(seconds=3599))
    assert (holder.msisdn, holder.since) == (N, SINCE)
    with pytest.raises(UnbindTokenError, match="expired") as exc:
        verify_token(tmp_path, token, T0 + dt.timedelta(seconds=3600))
    assert exc.value.status == 401
    assert stat.S_IMODE(key_path(tmp_path).stat().st_mode) == 0o600
    assert N not in token and N[1:] not in base64.urlsafe_b64decode(token + "==").decode("latin-1")


@pytest.mark.parametrize("how", ["flipped", "other_key", "empty", "garbage"])
def test_forged_tokens_are_refused(tmp_path: Path, how: str) -> None:
    token = issue_token(tmp_path, N, SINCE, T0, 3600)
    forged = {
        "flipped": token[:20] + ("A" if token[20] != "A" else "B") + token[21:],
        "other_key": Fernet(Fernet.generate_key())
        .encrypt(json.dumps({"p": "unbind", "n": N, "s": str(SINCE), "e": 2**40}).encode())
        .decode(),
        "empty": "",
        "garbage": "é not a token",
    }[how]
    with pytest.raises(UnbindTokenError) as exc:
        verify_token(tmp_path, forged, T0)
    assert exc.value.status == 401 and exc.value.code == "UNAUTHENTICATED"


def test_a_token_for_another_purpose_is_refused(tmp_path: Path) -> None:
    issue_token(tmp_path, N, SINCE, T0, 3600)  # makes the key
    key = Fernet(key_path(tmp_path).read_bytes().strip())
    other = key.encrypt(json.dumps({"p": "statement", "n": N, "s": str(SINCE), "e": 2**40}).encode()).decode()
    with pytest.raises(UnbindTokenError, match="not an unbind token"):
        verify_token(tmp_path, other, T0)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    issue_token(tmp_path, N, SINCE, T0, 3600)
    key_path(tmp_path).chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        issue_token(tmp_path, N, SINCE, T0, 3600)
