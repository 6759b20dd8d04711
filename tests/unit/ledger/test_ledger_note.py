"""Signed notes and checkpoints: known answers from Go's note package, Go Open semantics."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_testkit import load_vector
from number_recycling_client.ledger.merkle import leaf_hash
from number_recycling_client.ledger.note import (
    Checkpoint,
    Verifier,
    format_signer_key,
    format_verifier_key,
    key_id,
    open_checkpoint,
    open_note,
    parse_signer_key,
    sign_note,
)

from pipelines.errors import FormatError, SignatureError

G = load_vector("go_note_vectors.json")
TEXT = G["text"].encode()


@dataclass(frozen=True)
class SeedSigner:
    name: str
    seed: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(
            self.name,
            Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw(),
        )

    def sign(self, msg: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(msg)


def peter() -> SeedSigner:
    return SeedSigner(*parse_signer_key(G["peter_skey"]))


def test_sign_matches_go_byte_for_byte() -> None:
    assert sign_note(TEXT, [peter()]).decode() == G["signed_by_peter"]


def test_key_strings_round_trip_to_the_go_test_keys() -> None:
    p = peter()
    assert format_signer_key(p.name, p.seed) == G["peter_skey"]
    v = Verifier.from_vkey(G["peter_vkey"])
    assert v.key_id == bytes.fromhex("c74f20a3") == p.key_id
    assert format_verifier_key(v.name, v.public_key) == G["peter_vkey"]
    assert Verifier.from_vkey(G["enoch_vkey"]).key_id.hex() == "af0cfe78"


def test_mangled_verifier_keys_are_rejected() -> None:
    vkey = G["peter_vkey"]
    bad = [
        vkey[i:j]
        for i in range(len(vkey) + 1)
        for j in range(i + 1, len(vkey) + 1)
        if (i, j) != (0, len(vkey))
    ]
    bad += [vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :] for i in range(len(vkey))]
    bad += G["bad_vkeys"]
    for k in bad:
        with pytest.raises(FormatError):
            Verifier.from_vkey(k)


def test_mangled_signer_keys_are_rejected() -> None:
    skey = G["peter_skey"]
    for i in range(len(skey)):
        with pytest.raises(FormatError):
            parse_signer_key(skey[:i] + chr(ord(skey[i]) + 1) + skey[i + 1 :])
    for i in range(1, len(skey)):
        with pytest.raises(FormatError):
            parse_signer_key(skey[:i])


def test_open_with_one_known_key_keeps_the_other_unverified() -> None:
    msg = (G["text"] + "\n" + G["peter_sig_line"] + G["enoch_sig_line"]).encode()
    peter_v, enoch_v = Verifier.from_vkey(G["peter_vkey"]), Verifier.from_vkey(G["enoch_vkey"])
    note = open_note(msg, [peter_v])
    assert note.text == TEXT
    assert [s.name for s in note.signatures] == ["PeterNeumann"]
    assert [s.name for s in note.unverified] == ["EnochRoot"]
    both = open_note(msg, [peter_v, enoch_v])
    assert [s.name for s in both.signatures] == [
        "PeterNeumann",
        "EnochRoot",
    ] and not both.unverified
    with pytest.raises(SignatureError, match="no verifiable signatures"):
        open_note(msg, [])
    with pytest.raises(SignatureError, match="ambiguous key EnochRoot"):
        open_note((G["text"] + "\n" + G["enoch_sig_line"]).encode(), [enoch_v, peter_v, enoch_v])
    open_note((G["text"] + "\n" + G["peter_sig_line"]).encode(), [enoch_v, peter_v, enoch_v])


def test_bad_signature_from_a_known_key_rejects_the_note() -> None:
    sig = G["peter_sig_line"]
    msg = (G["text"] + "\n" + sig[:60] + "ABCD" + sig[60:]).encode()
    with pytest.raises(SignatureError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        open_note(msg, [Verifier.from_vkey(G["peter_vkey"])])


def test_duplicates_are_dropped_and_too_many_signatures_refused() -> None:
    p, e = G["peter_sig_line"], G["enoch_sig_line"]
    e_bad = e[:60] + "ABCD" + e[60:]
    note = open_note(
        (G["text"] + "\n" + p + p + e + e + e_bad).encode(), [Verifier.from_vkey(G["peter_vkey"])]
    )
    assert len(note.signatures) == 1 and len(note.unverified) == 2
    for verifiers in ([Verifier.from_vkey(G["peter_vkey"])], []):
        with pytest.raises(FormatError):
            open_note((G["text"] + "\n" + p * 101).encode(), verifiers)


@pytest.mark.parametrize(
    "msg",
    [
        G["text"],
        G["text"] + "\n",
        G["text"] + "\n" + G["peter_sig_line"][:-1],
        "\x01" + G["text"] + "\n" + G["peter_sig_line"],
        G["text"]
        + "\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        G["text"] + "\n" + G["peter_sig_line"] + "Unexpected line.\n",
    ],
)
def test_malformed_notes(msg: str) -> None:
    with pytest.raises(FormatError):
        open_note(msg.encode(), [Verifier.from_vkey(G["peter_vkey"])])


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(FormatError):
        open_note(
            b"\xff" + (G["text"] + "\n" + G["peter_sig_line"]).encode(),
            [Verifier.from_vkey(G["peter_vkey"])],
        )


def test_checkpoint_body_matches_go_format_tree() -> None:
    t = G["tlog_format_tree"]
    cp = Checkpoint(t["origin"], t["size"], leaf_hash(t["leaf_data"].encode()))
    assert cp.to_bytes().decode() == t["body"]
    assert Checkpoint.from_bytes(t["body"].encode()) == cp
    for bad in t["bad_bodies"][1:]:
        with pytest.raises(FormatError):
            Checkpoint.from_bytes(bad.encode())


@pytest.mark.parametrize(
    "body",
    [
        b"o\n012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",  # leading zero
        b"o\n-1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        b"o\n+1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        b"o\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBQ==\n",  # 31 bytes
        b"o\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb1=\n",  # non-canonical base64 tail
        b"o\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=",  # no final newline
        b"o\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\next\n",  # extension line
        b"\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",  # empty origin
    ],
)
def test_checkpoint_strictness(body: bytes) -> None:
    with pytest.raises(FormatError):
        Checkpoint.from_bytes(body)


def test_open_checkpoint_checks_signature_and_origin() -> None:
    p = peter()
    cp = Checkpoint("example.com/log", 5, leaf_hash(b"x"))
    note = sign_note(cp.to_bytes(), [p])
    assert open_checkpoint(note, G["peter_vkey"], "example.com/log") == cp
    with pytest.raises(SignatureError, match="another ledger"):
        open_checkpoint(note, G["peter_vkey"], "example.com/other")
    with pytest.raises(SignatureError):
        open_checkpoint(note, G["enoch_vkey"])
    tampered = note.replace(b"\n5\n", b"\n6\n")
    with pytest.raises(SignatureError, match="invalid signature"):
        open_checkpoint(tampered, G["peter_vkey"])
