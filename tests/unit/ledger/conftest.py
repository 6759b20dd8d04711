"""Fixtures for the ledger tests (helpers live in ledger_testkit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_testkit import KEY_NAME, LedgerEnv

from pipelines.ledger import OpeningsStore, load_or_create_signer


@pytest.fixture
def env(tmp_path: Path) -> Iterator[LedgerEnv]:
    keys = tmp_path / "keys"
    signer = load_or_create_signer(keys, KEY_NAME)
    store = OpeningsStore.open(tmp_path / "private" / "openings", keys)
    try:
        yield LedgerEnv(tmp_path, tmp_path / "ledger", keys, tmp_path / "private" / "openings", signer, store)
    finally:
        store.close()
