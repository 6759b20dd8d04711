"""Per-number evidence and erasure: the bridge from a phone number to its ledger entries
(tenure statements: :mod:`pipelines.ledger.statement_issue`).

The public log holds commitments only; which entries belong to a number is known from the
state file's ``ledger_events`` queue (idempotency keys) and the openings store. Operators run
these; an auditor needs only the bundle and the carrier's verifier key (``recycle verify``,
which checks a bundle with :func:`verify_bundle`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from number_recycling_client.ledger.note import Checkpoint, Verifier, b64
from number_recycling_client.ledger.proof import MAX_PROOF_BYTES

from pipelines.errors import EvidenceBundleError
from pipelines.ledger import Ledger
from pipelines.ledger.verify import VerifiedEntry, verify_proof_file
from pipelines.numbers import mask

BUNDLE_FORMAT = "number-recycling/evidence/v1"
INDEX_FILE = "index.json"
# index.json lists one small object per entry of one number (tens of entries); 16 MiB is far
# beyond any real bundle and keeps a hostile one from being read into memory whole.
MAX_INDEX_BYTES = 16 << 20
# index.json is read by people (it holds the values in clear): every field it has is checked
# against the proofs, so a field this version does not know is refused, not shown unchecked.
_INDEX_FIELDS = {"format", "origin", "vkey", "checkpoint", "entries"}
_ITEM_FIELDS = {"index", "type", "tenure_ref", "erased", "file", "value"}


def ledger_indices(con: duckdb.DuckDBPyConnection, ledger: Ledger, msisdn: str) -> list[int]:
    """Log indices of every appended entry about ``msisdn`` (E.164), in log order."""
    keys = con.execute(
        "SELECT idempotency_key FROM ledger_events WHERE msisdn = ? AND appended ORDER BY seq",
        [msisdn],
    ).fetchall()
    indices = [ledger.index_of(k) for (k,) in keys]
    return sorted(i for i in indices if i is not None)


def write_number_evidence(
    con: duckdb.DuckDBPyConnection, ledger: Ledger, msisdn: str, out_dir: Path
) -> tuple[Path, int]:
    """Write the evidence bundle of ``msisdn``: one ``tlog-proof`` per entry, ``index.json``,
    and the ledger's verifier key (``vkey``) so the bundle verifies offline.

    Returns (index.json path, number of entries). Raises ``LookupError`` when the ledger holds
    nothing about the number.
    """
    indices = ledger_indices(con, ledger, msisdn)
    if not indices:
        raise LookupError(
            f"the ledger holds no entry for {mask(msisdn)}: it was never disconnected, or the "
            "nightly ledger step has not run since"
        )
    index_path = ledger.write_evidence(indices, out_dir)
    shutil.copyfile(ledger.dir / "vkey", out_dir / "vkey")
    return index_path, len(indices)


def erase_number(con: duckdb.DuckDBPyConnection, ledger: Ledger, msisdn: str) -> int:
    """Crypto-shred every opening about ``msisdn``: the log stays intact and verifiable, but
    no entry about the number can be opened any more. Returns how many entries were erased."""
    indices = ledger_indices(con, ledger, msisdn)
    for index in indices:
        ledger.erase(index)
    return len(indices)


@dataclass(frozen=True)
class BundleReport:
    """What :func:`verify_bundle` established: every listed proof verified, none missing."""

    checkpoint: Checkpoint
    verified: tuple[VerifiedEntry, ...]
    erased: int  # entries listed as erased (crypto-shredded): in the log, no longer openable


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """``path``'s bytes, refused (not read) when larger than ``limit``: sizes come from the input."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise EvidenceBundleError(f"{path}: {size} bytes is larger than any {what} ({limit} bytes)")
        return path.read_bytes()
    except FileNotFoundError:
        raise EvidenceBundleError(
            f"{path} is missing: the bundle is truncated; ask the carrier for it again "
            "(recycle evidence --number N --out DIR)"
        ) from None
    except OSError as exc:
        raise EvidenceBundleError(f"{path} cannot be read ({exc.strerror})") from None


def _load_index(folder: Path) -> dict[str, Any]:
    data = read_capped(folder / INDEX_FILE, MAX_INDEX_BYTES, INDEX_FILE)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EvidenceBundleError(
            f"{folder / INDEX_FILE} is not JSON: the bundle is damaged or truncated; ask the carrier for it again"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT or set(doc) != _INDEX_FIELDS:
        raise EvidenceBundleError(
            f"{folder / INDEX_FILE} is not a {BUNDLE_FORMAT} index (an object of exactly "
            f"{', '.join(sorted(_INDEX_FIELDS))}); this is not an evidence bundle, or it was rewritten"
        )
    entries = doc.get("entries")
    if not isinstance(entries, list) or not entries:
        raise EvidenceBundleError(
            f"{folder / INDEX_FILE} lists no entries: an empty bundle proves nothing; ask the "
            "carrier for the number's bundle again (recycle evidence --number N --out DIR)"
        )
    return doc


def _item_proof(folder: Path, i: int, item: Any) -> Path | None:
    """The proof file an index item names (None: erased), after checking the item's shape."""
    where = f"{folder / INDEX_FILE} entry {i}"
    if not isinstance(item, dict) or set(item) != _ITEM_FIELDS:
        raise EvidenceBundleError(f"{where}: not an object of exactly {', '.join(sorted(_ITEM_FIELDS))}")
    if type(item["index"]) is not int or item["index"] < 0:
        raise EvidenceBundleError(f"{where}: not an object with a non-negative integer index")
    if item.get("erased") is True and item.get("file") is None and item.get("value") is None:
        return None
    name = item.get("file")
    if item.get("erased") is not False or not isinstance(name, str) or name != f"{item['index']}.tlog-proof":
        raise EvidenceBundleError(
            f"{where}: must name its proof file {item['index']}.tlog-proof (or be erased with no "
            "file and no value)"
        )
    return folder / name


def _check_item(item: dict[str, Any], got: VerifiedEntry, where: str) -> None:
    """What index.json says in clear must be what the proof proves: readers read index.json."""
    claimed = (item["index"], item.get("type"), item.get("tenure_ref"), item.get("value"))
    proven = (got.index, got.entry.entry_type.label, got.entry.tenure_ref.hex(), got.value.as_dict())
    for name, a, b in zip(("index", "type", "tenure_ref", "value"), claimed, proven, strict=True):
        if a != b:
            raise EvidenceBundleError(
                f"{where}: index.json says {name} {a!r:.60} but the proof proves {b!r:.60}; "
                "index.json was altered: rely on the proofs, not on it"
            )


def verify_bundle(folder: Path, vkey: str | Verifier, origin: str | None = None) -> BundleReport:
    """Verify an evidence bundle offline: every proof ``index.json`` lists, and the bundle whole.

    Beyond each proof (:func:`verify_proof_file`) a bundle must prove something and hide
    nothing: ``index.json`` lists at least one entry and at least one that is not erased (an
    empty or all-erased bundle proves nothing, so it fails rather than saying "OK: 0"); every
    listed file exists; no proof file in the folder is left out of the index (a truncated
    index); what the index states in clear (index, type, tenure_ref, value, the checkpoint)
    is what the proofs prove. Raises :class:`EvidenceBundleError` naming what is missing.
    """
    doc = _load_index(folder)
    verified: list[VerifiedEntry] = []
    listed: set[str] = set()
    erased = 0
    for i, item in enumerate(doc["entries"]):
        path = _item_proof(folder, i, item)
        if path is None:
            erased += 1
            continue
        if path.name in listed:
            raise EvidenceBundleError(f"{folder / INDEX_FILE} lists {path.name} twice")
        listed.add(path.name)
        got = verify_proof_file(read_capped(path, MAX_PROOF_BYTES, "tlog-proof"), vkey, origin)
        _check_item(item, got, f"{path}")
        verified.append(got)
    if not verified:
        raise EvidenceBundleError(
            f"{folder}: all {erased} entries are erased (crypto-shredded): the bundle proves nothing "
            "about the number's record; the entries' existence is checked with recycle verify <ledger>"
        )
    _check_whole(folder, doc, verified, listed, vkey if isinstance(vkey, str) else vkey.vkey)
    return BundleReport(verified[0].checkpoint, tuple(verified), erased)


def _check_whole(
    folder: Path, doc: dict[str, Any], verified: list[VerifiedEntry], listed: set[str], vkey: str
) -> None:
    """No proof left out of the index; one checkpoint, key and origin, the ones the index states."""
    unlisted = sorted(p.name for p in folder.iterdir() if p.suffix == ".tlog-proof" and p.name not in listed)
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise EvidenceBundleError(
            f"{folder / INDEX_FILE} does not list {shown}: the index is truncated or was edited; "
            "ask the carrier for the bundle again"
        )
    checkpoints = {v.checkpoint for v in verified}
    stated = doc.get("checkpoint")
    first = verified[0].checkpoint
    if len(checkpoints) > 1 or stated != {"size": first.size, "root": b64(first.root)}:
        raise EvidenceBundleError(
            f"{folder / INDEX_FILE}: its checkpoint {stated!s:.80} is not the one every proof is "
            f"verified against (size {first.size}); index.json was altered or mixes bundles"
        )
    if doc["vkey"] != vkey:
        raise EvidenceBundleError(
            f"{folder / INDEX_FILE}: names the key {doc['vkey']!s:.80}, not {vkey}, which verified "
            "the proofs; index.json was altered or belongs to another bundle"
        )
    if doc.get("origin") != first.origin:
        raise EvidenceBundleError(
            f"{folder / INDEX_FILE}: origin {doc.get('origin')!r:.80} is not the proofs' {first.origin!r}"
        )
