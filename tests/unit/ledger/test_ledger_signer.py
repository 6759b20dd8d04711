"""The file-backed signer: key files, and its refusal to sign forks or rollbacks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ledger_testkit import KEY_NAME, MemoryTree
from number_recycling_client.ledger.merkle import consistency_path, root_of
from number_recycling_client.ledger.note import Checkpoint, Verifier, open_checkpoint

from pipelines.errors import ConfigError, InconsistentCheckpointError
from pipelines.ledger.signer import CheckpointSigner, Signer, load_or_create_signer

ORIGIN = "example.com/log"


def test_key_files_are_created_once_private_and_in_note_format(tmp_path: Path) -> None:
    s1 = load_or_create_signer(tmp_path / "keys", KEY_NAME)
    key_file = tmp_path / "keys" / "carrier.example_number-recycling.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith(f"PRIVATE+KEY+{KEY_NAME}+{s1.key_id.hex()}+A")
    vkey = (tmp_path / "keys" / "carrier.example_number-recycling.vkey").read_text().strip()
    assert Verifier.from_vkey(vkey).public_key == s1.public_key == Verifier.from_vkey(s1.vkey).public_key
    s2 = load_or_create_signer(tmp_path / "keys", KEY_NAME)
    assert s2.public_key == s1.public_key
    assert isinstance(s1, Signer)
    _: CheckpointSigner = s1  # the ledger's seam


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    load_or_create_signer(tmp_path, KEY_NAME)
    os.chmod(tmp_path / "carrier.example_number-recycling.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_signer(tmp_path, KEY_NAME)


def test_raw_sign_refuses_checkpoint_bodies(tmp_path: Path) -> None:
    s = load_or_create_signer(tmp_path, KEY_NAME)
    assert len(s.sign(b"hello\n")) == 64
    with pytest.raises(InconsistentCheckpointError):
        s.sign(Checkpoint(ORIGIN, 1, bytes(32)).to_bytes())


def _tree(n: int) -> MemoryTree:
    return MemoryTree([i.to_bytes(4, "big") for i in range(n)])


def test_guard_accepts_extensions_and_reruns_and_refuses_forks(tmp_path: Path) -> None:
    s = load_or_create_signer(tmp_path, KEY_NAME)
    tree = _tree(20)

    def cp(n: int) -> Checkpoint:
        return Checkpoint(ORIGIN, n, root_of(tree.leaves[:n]))

    note5 = s.sign_checkpoint(cp(5), [])  # first checkpoint: nothing to be consistent with
    assert open_checkpoint(note5, s.vkey, ORIGIN) == cp(5)
    assert s.sign_checkpoint(cp(5), []) == note5  # same size, same root: idempotent rerun
    note12 = s.sign_checkpoint(cp(12), consistency_path(tree, 5, 12))
    assert s.last_signed(ORIGIN) == note12

    fork = Checkpoint(ORIGIN, 12, root_of(_tree(13).leaves[1:13]))
    with pytest.raises(InconsistentCheckpointError, match="fork"):
        s.sign_checkpoint(fork, [])
    with pytest.raises(InconsistentCheckpointError, match="rollback"):
        s.sign_checkpoint(cp(11), [])
    with pytest.raises(InconsistentCheckpointError, match="not consistent"):
        s.sign_checkpoint(cp(15), consistency_path(tree, 5, 15))  # proof from the wrong old size
    other = _tree(15)
    other.leaves[3] = other.leaves[4]  # history rewritten below the signed size
    with pytest.raises(InconsistentCheckpointError):
        s.sign_checkpoint(Checkpoint(ORIGIN, 15, root_of(other.leaves)), consistency_path(other, 12, 15))
    assert s.last_signed(ORIGIN) == note12  # refusals change nothing
    # The state survives a new process (it is on disk beside the key).
    again = load_or_create_signer(tmp_path, KEY_NAME)
    with pytest.raises(InconsistentCheckpointError):
        again.sign_checkpoint(fork, [])
    # Another origin has its own history.
    again.sign_checkpoint(Checkpoint("example.com/other", 1, tree.leaves[0]), [])
