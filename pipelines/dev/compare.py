"""Do two data directories hold the same outcome? (issue 17: embedded vs split by province)

Two runs of the same nights never agree byte for byte on everything, by design: each data
directory has its own development keys (so every signature differs), and every ledger entry
commits to its value with a fresh random opening (hiding: pipelines.ledger), so commitments,
the tree's hashes, checkpoints and what names them (a manifest's ``ledger`` field, the
snapshot's ``checkpoint``) differ too. Everything else must be equal, and is compared here:

- **feeds**: every published data file (``daily/<D>/*`` and ``snapshot/*`` but the signed
  manifests) byte for byte, and each manifest's signed fields but ``ledger``;
- **ledger**: the same size and, entry by entry, the same type and opened canonical value
  (a feed_manifest entry's but its manifest hash, which covers the previous manifest's hash,
  signatures and all), and the same grouping of entries into tenures (the n-th entry names
  the tenure of the same entry);
- **answers**: the query snapshot's tenures and grades files byte for byte, its metadata but
  the checkpoint, and the answer to "changed after D?" for every number on every day from the
  first answerable date to the snapshot's (``SnapshotIndex.answer``, the one rule).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

from pipelines.config import load_settings
from pipelines.feeds.query_snapshot import (
    GRADES_FILE,
    TENURES,
    SnapshotIndex,
    current_snapshot_dir,
    day_number,
)
from pipelines.layout import Layout
from pipelines.ledger.nightly import open_ledger

_SIGNED = {"manifest.json"}


def compare_outcomes(a: Path, b: Path, *, answer_days: int = 40) -> list[str]:
    """The differences between data directories ``a`` and ``b`` (empty: the same outcome)."""
    return [*_compare_feeds(a, b), *_compare_ledgers(a, b), *_compare_answers(a, b, answer_days)]


def _published(root: Path) -> dict[str, Path]:
    feeds = Layout(root).feeds_dir
    files = [*feeds.glob("daily/*/*"), *feeds.glob("snapshot/*")]
    return {str(p.relative_to(feeds)): p for p in files if p.is_file()}


def _compare_feeds(a: Path, b: Path) -> list[str]:
    fa, fb = _published(a), _published(b)
    diffs = [f"feeds: {rel} only in {a if rel in fa else b}" for rel in sorted(set(fa) ^ set(fb))]
    if not fa:
        diffs.append(f"feeds: nothing published in {a}")
    for rel in sorted(set(fa) & set(fb)):
        if Path(rel).name in _SIGNED:
            if _manifest_fields(fa[rel]) != _manifest_fields(fb[rel]):
                diffs.append(f"feeds: {rel} signs other fields")
        elif fa[rel].read_bytes() != fb[rel].read_bytes():
            diffs.append(f"feeds: {rel} differs")
    return diffs


def _manifest_fields(path: Path) -> dict[str, Any]:
    signed: dict[str, Any] = json.loads(path.read_bytes())["signed"]
    # the previous manifest's hash covers its signatures and ledger commitment: not comparable
    return {k: v for k, v in signed.items() if k not in {"ledger", "prev_manifest_sha256"}}


def _ledger_view(root: Path) -> tuple[int, list[tuple[str, bytes, int]]]:
    """(size, per entry: type, opened value, index of the first entry of its tenure)."""
    with open_ledger(load_settings(data_dir=root)) as ledger:
        first_of: dict[bytes, int] = {}
        view = []
        for index in range(ledger.size):
            entry = ledger.entry(index)
            opening = ledger.opening(index)
            tenure = first_of.setdefault(bytes(entry.tenure_ref), index)
            fields = dict(opening.value.fields)
            if entry.entry_type.name == "FEED_MANIFEST":
                fields.pop("manifest_sha256")  # hashes the previous signed manifest: see above
            view.append((entry.entry_type.name, repr(sorted(fields.items())).encode(), tenure))
        return ledger.size, view


def _compare_ledgers(a: Path, b: Path) -> list[str]:
    size_a, view_a = _ledger_view(a)
    size_b, view_b = _ledger_view(b)
    if size_a != size_b:
        return [f"ledger: {size_a} entries in {a}, {size_b} in {b}"]
    diffs = [
        f"ledger: entry {i} differs ({x[0]} / {y[0]})"
        for i, (x, y) in enumerate(zip(view_a, view_b, strict=True))
        if x != y
    ]
    return diffs[:20]


def _compare_answers(a: Path, b: Path, days: int) -> list[str]:
    da = current_snapshot_dir(load_settings(data_dir=a))
    db = current_snapshot_dir(load_settings(data_dir=b))
    if da is None or db is None:
        return [f"answers: no query snapshot in {a if da is None else b}"]
    diffs = [
        f"answers: {name} differs"
        for name in (TENURES, GRADES_FILE)
        if (da / name).read_bytes() != (db / name).read_bytes()
    ]
    ia, ib = SnapshotIndex.load(da), SnapshotIndex.load(db)
    meta_a, meta_b = (dataclasses.replace(i.meta, checkpoint=None) for i in (ia, ib))
    if meta_a != meta_b:
        diffs.append(f"answers: snapshot metadata differs ({meta_a} / {meta_b})")
    keys = np.union1d(_keys(da), _keys(db))
    span = np.arange(day_number(ia.meta.as_of) - days + 1, day_number(ia.meta.as_of) + 1, dtype=np.int32)
    all_keys, all_days = np.repeat(keys, len(span)), np.tile(span, len(keys))
    va, fa = ia.verdicts(all_keys, all_days)
    vb, fb = ib.verdicts(all_keys, all_days)
    wrong = np.flatnonzero((va != vb) | (fa != fb))
    diffs += [
        f"answers: number key ...{str(all_keys[i])[-4:]} on day {int(all_days[i])} differs"
        for i in wrong[:20]
    ]
    return diffs


def _keys(snapshot: Path) -> npt.NDArray[np.int64]:
    column = pq.read_table(snapshot / TENURES, columns=["msisdn_key"]).column("msisdn_key")
    return np.unique(np.asarray(column.to_numpy(), dtype=np.int64))
