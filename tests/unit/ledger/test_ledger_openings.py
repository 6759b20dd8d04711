"""The encrypted openings store: round trip, encryption at rest, lookups, crypto-shredding."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from number_recycling_client.ledger.entries import CanonicalValue, EntryType

from pipelines.errors import OpeningErasedError, TerminalError, VerificationError
from pipelines.ledger.openings import NewOpening, OpeningsStore

NUMBER = "+8613812345678"


def _rows(store: OpeningsStore, n: int, start: int = 0) -> list[NewOpening]:
    return [
        NewOpening(
            start + i,
            store.key_tag(f"key-{start + i}"),
            EntryType.REMINDER_SENT,
            bytes([i % 256]) * 16,
            os.urandom(32),
            CanonicalValue.build(msisdn=NUMBER, channel="email", seq=start + i).to_bytes(),
        )
        for i in range(n)
    ]


def test_round_trip_lookup_and_encryption_at_rest(tmp_path: Path) -> None:
    with OpeningsStore.open(tmp_path / "store", tmp_path / "keys") as store:
        rows = _rows(store, 50)
        store.put(rows)
        got = store.get(7)
        assert got.opening == rows[7].opening and got.value.get("msisdn") == NUMBER
        assert got.entry_type == EntryType.REMINDER_SENT and got.tenure_ref == rows[7].tenure_ref
        assert store.index_of("key-42") == 42 and store.index_of("nope") is None
        assert store.lookup(["key-3", "nope", "key-9"]) == {
            "key-3": (3, rows[3].tenure_ref),
            "key-9": (9, rows[9].tenure_ref),
        }
        assert NUMBER not in repr(got)
        with pytest.raises(TerminalError, match="collide"):
            store.put(_rows(store, 1, start=10))  # index and key already taken
    raw = (tmp_path / "store" / "openings.duckdb").read_bytes()
    assert NUMBER.encode() not in raw and b"key-42" not in raw and rows[7].opening not in raw
    assert stat.S_IMODE((tmp_path / "keys" / "openings.key").stat().st_mode) == 0o600


def test_wrong_master_key_cannot_decrypt(tmp_path: Path) -> None:
    with OpeningsStore.open(tmp_path / "store", tmp_path / "keys") as store:
        store.put(_rows(store, 2))
    with (
        OpeningsStore.open(tmp_path / "store", tmp_path / "other-keys") as store,
        pytest.raises(VerificationError),
    ):
        store.get(1)


def test_erase_shreds_one_entry_and_keeps_the_rest(tmp_path: Path) -> None:
    with OpeningsStore.open(tmp_path / "store", tmp_path / "keys") as store:
        rows = _rows(store, 20)
        store.put(rows)
        store.compact()
        keys_file = tmp_path / "store" / "openings-keys.duckdb"
        [(wrapped,)] = store._con.execute("SELECT wrapped_key FROM dk.data_keys WHERE idx = 5").fetchall()
        assert bytes(wrapped) in keys_file.read_bytes()
        store.erase(5)
        with pytest.raises(OpeningErasedError):
            store.get(5)
        assert store.get(6).opening == rows[6].opening
        assert store.index_of("key-5") == 5  # a rerun still sees the fact was logged
        assert store.erase_many([5, 6], compact=False) == 1
        with pytest.raises(TerminalError):
            store.erase(99)
        # The destroyed data key is gone from the keys file, not just unlinked from a row.
        assert bytes(wrapped) not in keys_file.read_bytes()


def test_a_lost_keys_file_is_not_mistaken_for_erasure(tmp_path: Path) -> None:
    with OpeningsStore.open(tmp_path / "store", tmp_path / "keys") as store:
        store.put(_rows(store, 3))
    (tmp_path / "store" / "openings-keys.duckdb").unlink()
    with (
        OpeningsStore.open(tmp_path / "store", tmp_path / "keys") as store,
        pytest.raises(VerificationError, match="missing"),
    ):
        store.get(1)


def test_truncate_drops_openings_beyond_a_size(tmp_path: Path) -> None:
    with OpeningsStore.open(tmp_path / "store", tmp_path / "keys") as store:
        store.put(_rows(store, 10))
        assert store.truncate(6) == 4
        assert store.count() == 6 and store.index_of("key-7") is None


def test_the_store_keeps_to_the_memory_limit_it_is_given(tmp_path: Path) -> None:
    """The ledger step bounds the store's DuckDB (a third of the night's limit); a compaction,
    which reconnects, keeps the bound."""
    import duckdb

    def limit(store: OpeningsStore) -> str:
        return str(store._con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])

    reference = duckdb.connect()
    reference.execute("SET memory_limit = '256MiB'")
    expected = str(reference.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    with OpeningsStore.open(tmp_path / "store", tmp_path / "keys", memory_limit="256MiB") as store:
        assert limit(store) == expected
        store.compact()
        assert limit(store) == expected
    with OpeningsStore.open(tmp_path / "store", tmp_path / "keys") as store:
        assert limit(store) != expected  # DuckDB's default when none is given
