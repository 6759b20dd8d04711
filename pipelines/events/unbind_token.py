"""The new holder's unbind token: the one credential of one-click unbinding (issue 15, item 2).

The carrier's own channels (its app, its service desk: ``recycle unbind-token --number N``)
hand it to the holder they identified; the holder presents it as ``Authorization: Bearer
<token>`` to ``POST /number-recycling/v0.2/unbind-requests`` and to read the request's progress.
A phone number alone is never enough.

What it binds: the purpose (``unbind``: a token for anything else later is refused here), the
number, the new tenure's start (a token outlives nothing: once the number changes hands again
the tenure no longer matches) and an expiry (``EventsConfig.unbind_token_ttl_s``, 24 h).

Why Fernet (AES-128-CBC + HMAC-SHA256, a 32-byte secret in ``<data>/keys/unbind-token.key``,
0600) and not an Ed25519 signature with a carrier key: the carrier both issues and verifies,
nobody else ever needs to check a token, so a public key buys nothing; and Fernet also
*encrypts*, so the number inside is not readable by whoever sees the token (a proxy log, a
screenshot) — a signed token carries its payload in clear. The cost is length (184
characters, measured): too long for the SMS notice at sale, which therefore carries no link
(``docs/events.md``, "One-click unbinding").
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from pipelines.errors import ConfigError, TerminalError
from pipelines.layout import Layout, check_private, private_dir, write_private

PURPOSE = "unbind"
KEY_FILE = "unbind-token.key"


class UnbindTokenError(TerminalError):
    """A holder's token refused: ``status`` 401 (not a valid credential: forged, garbled,
    expired, another purpose) or 403 (valid, but not for this number or tenure)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class HolderToken:
    """What a verified token says: who may ask (the holder of ``msisdn`` since ``since``)."""

    msisdn: str
    since: dt.date  # the new tenure's start
    expires_at: dt.datetime


def key_path(data_dir: Path) -> Path:
    return Layout(data_dir).keys_dir / KEY_FILE


def token_key(data_dir: Path) -> Fernet:
    """The secret, made on first use (0600 in the 0700 key store); refused if others can read it."""
    path = key_path(data_dir)
    if not path.exists():
        private_dir(path.parent)
        write_private(path, base64.urlsafe_b64encode(os.urandom(32)) + b"\n")
    check_private(path)
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError:
        raise ConfigError(f"{path} is not an unbind token key; move it away and issue new tokens") from None


def issue_token(data_dir: Path, msisdn: str, since: dt.date, now: dt.datetime, ttl_s: float) -> str:
    """A token for the holder of ``msisdn`` since ``since``, valid ``ttl_s`` from ``now``."""
    expires = int(now.timestamp() + ttl_s)
    payload = {"p": PURPOSE, "n": msisdn, "s": since.isoformat(), "e": expires}
    return token_key(data_dir).encrypt_at_time(json.dumps(payload).encode(), int(now.timestamp())).decode()


def _unauthenticated(why: str) -> UnbindTokenError:
    return UnbindTokenError(
        401,
        "UNAUTHENTICATED",
        f"Request not authenticated due to missing, invalid, or expired credentials: {why}; "
        "ask the carrier's app or service desk for a new unbind token",
    )


def verify_token(data_dir: Path, token: str | None, now: dt.datetime) -> HolderToken:
    """The one check of a holder's token: authentic (the carrier's key), for unbinding, not
    expired. Raises :class:`UnbindTokenError` (401). Which number and tenure it is good for is
    the caller's check against the request and the snapshot (403)."""
    if not token:
        raise _unauthenticated("send Authorization: Bearer <unbind token>")
    try:
        payload = json.loads(token_key(data_dir).decrypt(token.encode("ascii")))
    except (InvalidToken, UnicodeEncodeError, ValueError):
        raise _unauthenticated("the unbind token is not one the carrier issued") from None
    if not isinstance(payload, dict) or payload.get("p") != PURPOSE:
        raise _unauthenticated("the token is not an unbind token")
    expires = dt.datetime.fromtimestamp(int(payload["e"]), dt.UTC)
    if now >= expires:
        raise _unauthenticated("the unbind token has expired")
    return HolderToken(str(payload["n"]), dt.date.fromisoformat(payload["s"]), expires)
