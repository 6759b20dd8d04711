"""RFC 6962 hashing, proof construction and verification against published vectors."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from ledger_testkit import VECTORS, MemoryTree, load_vector
from number_recycling_client.ledger.merkle import (
    EMPTY_ROOT,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    root_of,
    verify_consistency,
    verify_inclusion,
)

from pipelines.errors import InconsistentCheckpointError, ProofError

V = load_vector("rfc6962_verify_test_vectors.json")
LEAVES = [bytes.fromhex(x) for x in V["leaves"]]
ROOTS = [bytes.fromhex(x) for x in V["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_hasher_known_answers() -> None:
    h = load_vector("rfc6962_hasher_vectors.json")
    assert EMPTY_ROOT.hex() == h["empty_root"]
    assert leaf_hash(b"").hex() == h["empty_leaf"]
    assert leaf_hash(h["leaf"]["data_ascii"].encode()).hex() == h["leaf"]["hash"]
    node = h["node"]
    assert node_hash(node["left_ascii"].encode(), node["right_ascii"].encode()).hex() == node["hash"]


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_standard_tree_sizes_0_to_8(size: int) -> None:
    expected = EMPTY_ROOT if size == 0 else ROOTS[size - 1]
    assert root_of([leaf_hash(x) for x in LEAVES[:size]]) == expected


@pytest.mark.parametrize("vec", V["inclusion"], ids=lambda v: f"{v['leaf']}-of-{v['size']}")
def test_inclusion_vectors_are_built_and_verified(vec: dict[str, object]) -> None:
    index, size = int(vec["leaf"]) - 1, int(vec["size"])  # type: ignore[call-overload]
    proof = [bytes.fromhex(x) for x in vec["proof"]]  # type: ignore[attr-defined]
    tree = MemoryTree(LEAVES[:size])
    assert inclusion_path(tree, index, size) == proof
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize("vec", V["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_consistency_vectors_are_built_and_verified(vec: dict[str, int | list[str]]) -> None:
    s1, s2 = int(vec["size1"]), int(vec["size2"])  # type: ignore[arg-type]
    proof = [bytes.fromhex(x) for x in vec["proof"]]  # type: ignore[union-attr]
    tree = MemoryTree(LEAVES[:s2])
    assert consistency_path(tree, s1, s2) == proof
    verify_consistency(s1, s2, proof, ROOTS[s1 - 1], ROOTS[s2 - 1])


def _corrupt_inclusion(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes) -> list[tuple]:
    """The probes of Go's corruptInclusionProof (verify_test.go)."""
    probes = [
        (index - 1, size, root, leaf, proof),
        (index + 1, size, root, leaf, proof),
        (index ^ 2, size, root, leaf, proof),
        (index, size * 2, root, leaf, proof),
        (index, size // 2, root, leaf, proof),
        (index, size, root, b"WrongLeaf", proof),
        (index, size, EMPTY_ROOT, leaf, proof),
        (index, size, SOME_HASH, leaf, proof),
        (index, size, root, leaf, [*proof, b""]),
        (index, size, root, leaf, [*proof, root]),
        (index, size, root, leaf, [b"", *proof]),
        (index, size, root, leaf, [root, *proof]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        probes.append((index, size, root, leaf, bad))
    if proof:
        probes.append((index, size, root, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append((index, size, root, leaf, [proof[0], SOME_HASH, *proof[1:]]))
    return probes


@pytest.mark.parametrize("vec", V["inclusion"][1:], ids=lambda v: f"{v['leaf']}-of-{v['size']}")
def test_corrupted_inclusion_proofs_are_rejected(vec: dict[str, object]) -> None:
    index, size = int(vec["leaf"]) - 1, int(vec["size"])  # type: ignore[call-overload]
    proof = [bytes.fromhex(x) for x in vec["proof"]]  # type: ignore[attr-defined]
    for probe in _corrupt_inclusion(index, size, proof, ROOTS[size - 1], leaf_hash(LEAVES[index])):
        i, s, root, leaf, p = probe
        with pytest.raises(ProofError):
            verify_inclusion(leaf, i, s, p, root)


@pytest.mark.parametrize("vec", V["consistency"][1:], ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_corrupted_consistency_proofs_are_rejected(vec: dict[str, int | list[str]]) -> None:
    s1, s2 = int(vec["size1"]), int(vec["size2"])  # type: ignore[arg-type]
    proof = [bytes.fromhex(x) for x in vec["proof"]]  # type: ignore[union-attr]
    r1, r2 = ROOTS[s1 - 1], ROOTS[s2 - 1]
    probes = [
        (s1 - 1, s2, r1, r2, proof),
        (s1 + 1, s2, r1, r2, proof),
        (s1 ^ 2, s2, r1, r2, proof),
        (s1, s2 * 2, r1, r2, proof),
        (s1, s2 // 2, r1, r2, proof),
        (s1, s2, b"WrongRoot", r2, proof),
        (s1, s2, r1, b"WrongRoot", proof),
        (s1, s2, r2, r1, proof),
        (s1, s2, r1, r2, []),
        (s1, s2, r1, r2, [*proof, b""]),
        (s1, s2, r1, r2, [*proof, r1]),
        (s1, s2, r1, r2, [*proof, r2]),
        (s1, s2, r1, r2, [b"", *proof]),
        (s1, s2, r1, r2, [r1, *proof]),
        (s1, s2, r1, r2, [r2, *proof]),
        (s1, s2, r1, r2, [proof[0], *proof]),
        (s1, s2, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((s1, s2, r1, r2, bad))
    for a, b, ra, rb, p in probes:
        with pytest.raises(InconsistentCheckpointError):
            verify_consistency(a, b, p, ra, rb)


def test_consistency_edge_cases_follow_go() -> None:
    r1, r2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
    verify_consistency(0, 0, [], r1, r1)
    verify_consistency(0, 1, [], r1, r2)  # the empty tree is a prefix of every tree
    verify_consistency(1, 1, [], r2, r2)
    for args in [
        (0, 0, [], r1, r2),
        (1, 1, [], r1, r2),
        (1, 0, [], r1, r2),
        (2, 1, [], r1, r2),
        (1, 2, [], r1, r2),
        (0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
        (1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
    ]:
        with pytest.raises(InconsistentCheckpointError):
            verify_consistency(*args)  # type: ignore[arg-type]


def test_inclusion_rejects_out_of_range_and_single_entry_mistakes() -> None:
    h = leaf_hash(b"data")
    verify_inclusion(h, 0, 1, [], h)
    for index, size in [(0, 0), (1, 0), (2, 1)]:
        with pytest.raises(ProofError):
            verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    with pytest.raises(ProofError):
        verify_inclusion(h, 0, 1, [], b"")


def _b64(x: str) -> bytes:
    return base64.b64decode(x)


@pytest.mark.parametrize(
    "path",
    sorted((VECTORS / "transparency-dev-merkle").rglob("*.json")),
    ids=lambda p: p.parent.parent.name + "/" + p.parent.name + "/" + p.name,
)
def test_transparency_dev_testdata_files(path) -> None:  # type: ignore[no-untyped-def]
    vec = json.loads(path.read_text())
    if "leafIdx" in vec:

        def check() -> None:
            verify_inclusion(
                _b64(vec["leafHash"]),
                vec["leafIdx"],
                vec["treeSize"],
                [_b64(p) for p in vec["proof"]],
                _b64(vec["root"]),
            )

        err: type[Exception] = ProofError
    else:

        def check() -> None:
            verify_consistency(
                vec["size1"],
                vec["size2"],
                [_b64(p) for p in vec["proof"]],
                _b64(vec["root1"]),
                _b64(vec["root2"]),
            )

        err = InconsistentCheckpointError
    if vec["wantErr"]:
        with pytest.raises(err):
            check()
    else:
        check()


def test_generated_proofs_verify_for_every_pair_up_to_70() -> None:
    entries = [i.to_bytes(4, "big") for i in range(70)]
    tree = MemoryTree(entries)
    roots = [root_of(tree.leaves[:n]) for n in range(71)]
    for size in range(1, 71):
        for index in range(size):
            proof = inclusion_path(tree, index, size)
            assert root_from_inclusion(tree.leaves[index], index, size, proof) == roots[size]
        for old in range(0, size + 1):
            verify_consistency(old, size, consistency_path(tree, old, size), roots[old], roots[size])
