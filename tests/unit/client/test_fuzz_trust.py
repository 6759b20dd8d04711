"""Fuzzing the client's trust state machine (``client/trust.py``) with hostile metadata: mutated
bytes from the server, and documents a compromised or buggy publisher signed with the trusted
online key (a hostile field, a corrupt CSV whose SHA-256 the manifest signs, a hostile
ledger checkpoint). Every step answers with a verdict or a package error."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from fuzz_testkit import FAST, MEDIUM, json_values, mutated, refuses_cleanly
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from number_recycling_client.trust import LastPull, TrustedFeed
from number_recycling_client.wire import (
    Envelope,
    LedgerRef,
    Manifest,
    Timestamp,
    canonical_json,
    file_meta,
    pin,
    sha256_hex,
)
from test_trust import NOW, Publisher, feed_csv, rows_table

SETTINGS: dict[str, Any] = {**MEDIUM, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Publisher:
    repo = Publisher(tmp_path_factory.mktemp("repo"))
    repo.publish(2)
    return repo


def _sign(repo: Publisher, signed: dict[str, Any]) -> bytes:
    sig = repo.online.sign(canonical_json(signed))
    keyid = sha256_hex(repo.online.public_key)
    return canonical_json({"signatures": [{"keyid": keyid, "sig": sig.hex()}], "signed": signed})


def _timestamp(repo: Publisher, manifest: bytes) -> bytes:
    """The online key's timestamp pinning ``manifest`` as seq 1."""
    stamp = Envelope.from_bytes(repo.timestamp(), Timestamp).signed
    signed = dataclasses.replace(stamp, manifest=pin("m.json", 1, manifest))
    return Envelope.create(signed, [repo.online]).to_bytes()


def _walk(repo: Publisher, manifest: bytes, rows: bytes, tiles: dict[str, bytes] | None = None) -> None:
    """One pull of seq 1 through every step; stops at the first clean refusal."""
    trust = TrustedFeed(LastPull(root=repo.roots[0]), NOW, require_ledger=tiles is not None)
    trust.finish_roots()
    steps = [
        lambda: trust.update_timestamp(_timestamp(repo, manifest)),
        lambda: trust.update_manifest(manifest),
        lambda: trust.update_rows(rows),
        lambda: trust.verify_ledger((tiles or {}).get),
        trust.verified,
    ]
    for step in steps:
        if refuses_cleanly(step) is None:
            return


def test_the_seed_walk_verifies(repo: Publisher) -> None:
    _walk(repo, repo.manifests[0], repo.files[0])
    trust = TrustedFeed(LastPull(root=repo.roots[0]), NOW, require_ledger=False)
    trust.finish_roots()
    trust.update_timestamp(_timestamp(repo, repo.manifests[0]))
    trust.update_manifest(repo.manifests[0])
    assert len(trust.update_rows(repo.files[0])) == 2


@settings(**SETTINGS)
@given(data=st.data())
def test_mutated_bytes_from_the_server(repo: Publisher, data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["timestamp", "manifest", "rows"]))
    manifest, rows = repo.manifests[0], repo.files[0]
    if which == "timestamp":
        trust = TrustedFeed(LastPull(root=repo.roots[0]), NOW, require_ledger=False)
        trust.finish_roots()
        refuses_cleanly(lambda: trust.update_timestamp(data.draw(mutated(repo.timestamp()))))
        return
    if which == "manifest":
        manifest = data.draw(mutated(manifest))
    else:
        rows = data.draw(mutated(rows))
    _walk(repo, manifest, rows)


@settings(**SETTINGS)
@given(
    name=st.sampled_from(
        ["feed_date", "seq", "expires", "row_count", "row_seq_start", "files", "snapshot", "ledger", "extra"]
    ),
    value=json_values,
)
def test_a_signed_manifest_with_a_hostile_field(repo: Publisher, name: str, value: Any) -> None:
    signed = json.loads(repo.manifests[0])["signed"]
    signed[name] = value
    try:
        manifest = _sign(repo, signed)
    except (UnicodeEncodeError, ValueError):
        return  # not representable as JSON bytes
    _walk(repo, manifest, repo.files[0])


@settings(**SETTINGS)
@given(rows=mutated(feed_csv(rows_table(1, 2))))
def test_a_corrupt_csv_the_manifest_signs(repo: Publisher, rows: bytes) -> None:
    """A buggy publisher: the SHA-256 matches, the file does not parse or breaks the rules."""
    env = Envelope.from_bytes(repo.manifests[0], Manifest)
    meta = file_meta(env.signed.files[0].path, rows, 2)
    manifest = Envelope.create(dataclasses.replace(env.signed, files=(meta,)), [repo.online]).to_bytes()
    _walk(repo, manifest, rows)


@settings(**FAST, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    checkpoint=st.text(max_size=120),
    index=st.integers(0, 2**70),
)
def test_a_signed_manifest_naming_a_hostile_ledger_checkpoint(
    repo: Publisher, checkpoint: str, index: int
) -> None:
    env = Envelope.from_bytes(repo.manifests[0], Manifest)
    ref = LedgerRef(index, checkpoint, "00" * 32)
    try:
        manifest = Envelope.create(dataclasses.replace(env.signed, ledger=ref), [repo.online]).to_bytes()
    except UnicodeEncodeError:
        return
    _walk(repo, manifest, repo.files[0], tiles={})
