"""Fuzzing the feed metadata a stranger can serve (``feeds/wire.py``): any bytes, any JSON and
mutations of real signed envelopes are refused with a package error or parse to a document
that re-serialises to exactly those bytes. Hostile examples: ``vectors/hostile/``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from fuzz_testkit import FAST, corpus, json_values, mutated, refuses_cleanly
from hypothesis import given, settings
from hypothesis import strategies as st
from number_recycling_client.wire import (
    Envelope,
    Manifest,
    QueryReceipt,
    Root,
    Timestamp,
    canonical_json,
    file_meta,
    pin,
)

from pipelines.errors import FormatError

HOSTILE = Path(__file__).parent / "vectors" / "hostile"
KINDS: tuple[type[Any], ...] = (Root, Manifest, Timestamp, QueryReceipt)
T0 = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)

MANIFEST = Envelope(
    Manifest(
        feed_date=T0.date(),
        seq=2,
        expires=T0 + dt.timedelta(days=31),
        prev_manifest_sha256="ab" * 32,
        row_seq_start=3,
        row_count=2,
        files=(file_meta("daily/2026-09-01/recycled.parquet", b"x", 2),),
        snapshot=(),
    )
).to_bytes()
TIMESTAMP = Envelope(Timestamp(2, T0 + dt.timedelta(days=2), pin("manifests/2.json", 2, MANIFEST))).to_bytes()


def _parse_all(data: bytes) -> None:
    for kind in KINDS:
        env = refuses_cleanly(lambda kind=kind: Envelope.from_bytes(data, kind))
        assert env is None or env.to_bytes() == data  # accepted only in its exact canonical form


@settings(**FAST)
@given(st.binary(max_size=200))
def test_any_bytes_as_metadata(data: bytes) -> None:
    _parse_all(data)


@settings(**FAST)
@given(json_values)
def test_any_json_as_metadata(doc: Any) -> None:
    _parse_all(json.dumps(doc).encode("utf-8", "surrogatepass"))
    _parse_all(json.dumps({"signatures": [], "signed": doc}).encode())


@settings(**FAST)
@given(st.sampled_from([MANIFEST, TIMESTAMP]).flatmap(mutated))
def test_a_mutated_envelope_is_refused_or_canonical(data: bytes) -> None:
    _parse_all(data)


@settings(**FAST)
@given(
    st.sampled_from([MANIFEST, TIMESTAMP]),
    st.sampled_from(
        ["expires", "feed_date", "seq", "files", "manifest", "spec_version", "prev_manifest_sha256", "x"]
    ),
    json_values,
)
def test_a_signed_document_with_one_hostile_field(seed: bytes, name: str, value: Any) -> None:
    doc = json.loads(seed)
    doc["signed"][name] = value
    try:
        data = canonical_json(doc)
    except (UnicodeEncodeError, ValueError):  # a lone surrogate or a float: not even JSON bytes
        return
    _parse_all(data)


@pytest.mark.parametrize("data", corpus(HOSTILE, "envelope"))
def test_hostile_envelopes_are_format_errors(data: bytes) -> None:
    # On main a "\ud800" escape raised UnicodeEncodeError and deep nesting RecursionError.
    for kind in KINDS:
        with pytest.raises(FormatError):
            Envelope.from_bytes(data, kind)
