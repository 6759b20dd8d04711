"""Fuzzing what a stranger can hand the ledger's readers: signed notes and checkpoints, verifier
keys, tile paths, entry bundles, tlog-proof files and evidence proofs (``note.py``, ``tiles.py``,
``proof.py``, ``verify.py``). Each answers with a verdict or a package error, never another
exception; sizes read from the input are capped. Hostile examples: ``vectors/hostile/``."""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fuzz_testkit import FAST, MEDIUM, corpus, json_values, mutated, refuses_cleanly
from hypothesis import given, settings
from hypothesis import strategies as st
from number_recycling_client.ledger.entries import Entry, commitment, tenure_ref_for
from number_recycling_client.ledger.merkle import leaf_hash
from number_recycling_client.ledger.note import (
    MAX_TREE_SIZE,
    Checkpoint,
    b64,
    format_verifier_key,
    key_id,
    open_checkpoint,
    open_note,
    parse_signer_key,
    sign_note,
)
from number_recycling_client.ledger.proof import TlogProof
from number_recycling_client.ledger.tiles import TILE_WIDTH, Tile, decode_bundle, encode_bundle

from pipelines.errors import FormatError
from pipelines.ledger import CanonicalValue, EntryType, Verifier
from pipelines.ledger.evidence import BUNDLE_FORMAT, verify_bundle
from pipelines.ledger.verify import evidence_extra, verify_proof_file

HOSTILE = Path(__file__).parent / "vectors" / "hostile"
ORIGIN = "fuzz.example/log"
_SEED = bytes(range(32))


@dataclass(frozen=True)
class _Signer:
    name: str = "fuzz.example"

    @property
    def public(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(_SEED).public_key().public_bytes_raw()

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def sign(self, msg: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(_SEED).sign(msg)


SIGNER = _Signer()
VKEY = format_verifier_key(SIGNER.name, SIGNER.public)
VERIFIER = Verifier.from_vkey(VKEY)


def _one_entry_proof() -> bytes:
    """A valid evidence proof: a log of one tenure_closed entry, its checkpoint and opening."""
    value = CanonicalValue.build({"msisdn": "+8613800000001", "region": "GD"})
    opening = bytes(32)
    c = commitment(opening, EntryType.TENURE_CLOSED, value.to_bytes())
    entry = Entry(EntryType.TENURE_CLOSED, tenure_ref_for(c), c)
    cp = Checkpoint(ORIGIN, 1, leaf_hash(entry.to_bytes()))
    note = sign_note(cp.to_bytes(), [SIGNER])
    return TlogProof(0, (), note, evidence_extra(entry, opening, value)).to_bytes()


CHECKPOINT = sign_note(Checkpoint(ORIGIN, 1234, bytes(32)).to_bytes(), [SIGNER])
PROOF = _one_entry_proof()


def test_the_seeds_are_valid() -> None:
    assert open_checkpoint(CHECKPOINT, VKEY, ORIGIN).size == 1234
    assert verify_proof_file(PROOF, VKEY, ORIGIN).index == 0


# --------------------------------------------------------------------------- notes and checkpoints


@settings(**FAST)
@given(mutated(CHECKPOINT))
def test_a_mutated_signed_checkpoint_is_refused_or_unchanged(data: bytes) -> None:
    cp = refuses_cleanly(lambda: open_checkpoint(data, VERIFIER, ORIGIN))
    assert cp is None or cp == Checkpoint.from_bytes(CHECKPOINT[: CHECKPOINT.index(b"\n\n") + 1])


@settings(**FAST)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_as_a_note_a_checkpoint_or_a_key(data: bytes) -> None:
    refuses_cleanly(lambda: open_note(data, [VERIFIER]))
    cp = refuses_cleanly(lambda: Checkpoint.from_bytes(data))
    assert cp is None or 0 <= cp.size <= MAX_TREE_SIZE  # a size read from the input is capped
    text = data.decode("utf-8", "replace")
    refuses_cleanly(lambda: Verifier.from_vkey(text))
    refuses_cleanly(lambda: parse_signer_key(text))


@settings(**FAST)
@given(
    st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=30),
    st.text("0123456789", min_size=1, max_size=5000),
)
def test_checkpoint_bodies_with_any_origin_and_size(origin: str, size: str) -> None:
    body = f"{origin}\n{size}\n{'A' * 43}=\n".encode()
    cp = refuses_cleanly(lambda: Checkpoint.from_bytes(body))
    assert cp is None or (cp.size <= MAX_TREE_SIZE and str(cp.size) == size)


@pytest.mark.parametrize("data", corpus(HOSTILE, "checkpoint"))
def test_hostile_checkpoint_bodies_are_format_errors(data: bytes) -> None:
    # On main a 5000-digit size raised Python's ValueError (int digit limit), and 2**64 parsed.
    with pytest.raises(FormatError, match=r"tree size|size must be"):
        Checkpoint.from_bytes(data)


# --------------------------------------------------------------------------- tiles and bundles


@settings(**FAST)
@given(
    st.text("tile/entries0123456789x.p", max_size=40)
    | st.lists(
        st.sampled_from(
            ["tile", "0", "63", "64", "entries", "x001", "x000", "000", "001.p", "255", "256", "07"]
        ),
        max_size=6,
    ).map("/".join)
)
def test_any_tile_path_parses_to_its_canonical_self_or_is_refused(path: str) -> None:
    tile = refuses_cleanly(lambda: Tile.parse(path))
    assert tile is None or tile.path == path


@settings(**FAST)
@given(st.binary(max_size=600), st.integers(0, TILE_WIDTH))
def test_any_bytes_as_an_entry_bundle(data: bytes, count: int) -> None:
    entries = refuses_cleanly(lambda: decode_bundle(data, count))
    # a count read from the input never makes more entries than the bytes can hold
    assert entries is None or (len(entries) == count and encode_bundle(entries) == data)


# --------------------------------------------------------------------------- tlog-proof files


@settings(**FAST)
@given(mutated(PROOF))
def test_a_mutated_evidence_proof_is_refused_or_unchanged(data: bytes) -> None:
    got = refuses_cleanly(lambda: verify_proof_file(data, VKEY, ORIGIN))
    assert got is None or data == PROOF


@settings(**MEDIUM)
@given(
    st.integers(0, 10**21),
    st.lists(st.binary(min_size=32, max_size=32), max_size=70),
    st.binary(max_size=200),
)
def test_structured_proofs_with_hostile_fields(index: int, hashes: list[bytes], extra: bytes) -> None:
    lines = [b"c2sp.org/tlog-proof@v1", b"extra " + base64.b64encode(extra), b"index %d" % index]
    lines += [base64.b64encode(h) for h in hashes]
    data = b"\n".join(lines) + b"\n\n" + CHECKPOINT
    refuses_cleanly(lambda: verify_proof_file(data, VKEY, ORIGIN))
    proof = refuses_cleanly(lambda: TlogProof.from_bytes(data))
    assert proof is None or len(proof.hashes) <= 64  # the proof length read from the input is capped


# --------------------------------------------------------------------------- evidence bundles


def _index_json() -> bytes:
    got = verify_proof_file(PROOF, VKEY, ORIGIN)
    item = {
        "index": 0,
        "type": got.entry.entry_type.label,
        "tenure_ref": got.entry.tenure_ref.hex(),
        "erased": False,
        "file": "0.tlog-proof",
        "value": got.value.as_dict(),
    }
    doc = {
        "format": BUNDLE_FORMAT,
        "origin": ORIGIN,
        "vkey": VKEY,
        "checkpoint": {"size": 1, "root": b64(got.checkpoint.root)},
        "entries": [item],
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


INDEX = _index_json()


def _bundle(index: bytes) -> object:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "0.tlog-proof").write_bytes(PROOF)
        (Path(folder) / "index.json").write_bytes(index)
        return refuses_cleanly(lambda: verify_bundle(Path(folder), VKEY, ORIGIN))


def test_the_seed_bundle_verifies() -> None:
    assert _bundle(INDEX) is not None


@settings(**MEDIUM)
@given(mutated(INDEX))
def test_a_mutated_index_json_is_refused_or_says_the_same(data: bytes) -> None:
    report = _bundle(data)
    assert report is None or json.loads(data) == json.loads(INDEX)


@settings(**MEDIUM)
@given(
    json_values | st.dictionaries(st.sampled_from(["format", "entries", "checkpoint", "origin"]), json_values)
)
def test_any_json_as_index_json(doc: object) -> None:
    _bundle(json.dumps(doc).encode())
