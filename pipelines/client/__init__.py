"""The platform side of ``recycle pull`` / ``recycle check``: the light client's distribution
(``clients/python``, import ``number_recycling_client``) does all of it — the trust state
machine, the fetcher, the sqlite3 store, the one answer rule — and this package adds only what
needs the carrier's dependencies: a number given in national form is normalised with
``phonenumbers`` (the light client takes E.164 only).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from number_recycling_client import HttpFetcher, LocalAnswer, LocalFeed, PullReport, pull
from number_recycling_client import check_local as check_e164
from number_recycling_client.check import E164
from number_recycling_client.errors import TerminalError

from pipelines.numbers import mask, normalise

__all__ = ["HttpFetcher", "LocalAnswer", "LocalFeed", "PullReport", "check_local", "pull"]


def check_local(state_dir: Path, number: str, since: dt.date, default_region: str = "CN") -> LocalAnswer:
    """One local check of ``number`` (E.164, or national in ``default_region``)."""
    e164 = number if E164.fullmatch(number) else normalise(number, default_region)
    if e164 is None:
        raise TerminalError(f"{mask(number)} is not a valid phone number; give it in E.164 (+86...)")
    return check_e164(state_dir, e164, since)
