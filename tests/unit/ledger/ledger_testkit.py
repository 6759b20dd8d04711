"""Helpers for the ledger tests: vectors, a reference in-memory tree, a ledger on disk."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from number_recycling_client.ledger.merkle import leaf_hash, perfect_root

from pipelines.ledger import (
    CanonicalValue,
    EntryType,
    FileSigner,
    Ledger,
    OpeningsStore,
    PreparedEntry,
)

VECTORS = Path(__file__).parent / "vectors"
ORIGIN = "carrier.example/number-recycling/ledger"
KEY_NAME = "carrier.example/number-recycling"


def load_vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


class MemoryTree:
    """Reference tree over leaf hashes held in memory (a test oracle, not the code under test)."""

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.leaves = [leaf_hash(e) for e in entries]

    def node(self, height: int, index: int) -> bytes:
        return perfect_root(self.leaves[index << height : (index + 1) << height])


@dataclass
class LedgerEnv:
    root: Path
    ledger_dir: Path
    keys_dir: Path
    store_dir: Path
    signer: FileSigner
    store: OpeningsStore

    def open(self) -> Ledger:
        return Ledger.open(self.ledger_dir, self.signer, ORIGIN, self.store, lock_timeout_s=0.2)


def tenure_entries(
    n: int, reminders: int = 2, released: bool = True, prefix: str = "t", sent: bool = False
) -> list[PreparedEntry]:
    """``n`` tenures: closed, ``reminders`` effective reminders each (each after its
    ``reminder_sent`` entry with ``sent``, as the nightly run logs them), then released."""
    out: list[PreparedEntry] = []
    for i in range(n):
        key = f"{prefix}{i}"
        msisdn = f"+86138{i:08d}"
        base = {
            "msisdn": msisdn,
            "tenure_start": dt.date(2020, 1, 1),
            "tenure_end": dt.date(2025, 1, 2),
        }
        out.append(
            PreparedEntry(f"{key}:closed", EntryType.TENURE_CLOSED, CanonicalValue.build(base, region="GD"))
        )
        for r in range(reminders):
            if sent:
                value = CanonicalValue.build(base, reminder_id=f"{key}-r{r}", channel="sms")
                out.append(
                    PreparedEntry(
                        f"{key}:sent{r}", EntryType.REMINDER_SENT, value, tenure_key=f"{key}:closed"
                    )
                )
            value = CanonicalValue.build(
                base,
                reminder_id=f"{key}-r{r}",
                channel="sms",
                delivered_at=dt.datetime(2025, 1, 2 + r, 8, 0, tzinfo=dt.UTC),
            )
            out.append(
                PreparedEntry(
                    f"{key}:eff{r}", EntryType.REMINDER_EFFECTIVE, value, tenure_key=f"{key}:closed"
                )
            )
        if released:
            value = CanonicalValue.build(base, released_on=dt.date(2025, 4, 2), effective_reminders=reminders)
            out.append(
                PreparedEntry(f"{key}:released", EntryType.RELEASED, value, tenure_key=f"{key}:closed")
            )
    return out
