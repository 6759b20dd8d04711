"""Feed metadata wire formats: strict canonical parsing, signatures, thresholds, root chaining."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from number_recycling_client.wire import (
    ROLE_MANIFEST,
    ROLE_RECEIPT,
    ROLE_ROOT,
    ROLE_TIMESTAMP,
    Envelope,
    FileMeta,
    Key,
    LedgerPointer,
    Manifest,
    ManifestPin,
    QueryReceipt,
    Role,
    Root,
    Timestamp,
    canonical_json,
    keyid_of,
    parse_canonical,
    sha256_hex,
    verify_root_update,
)

from pipelines.errors import FormatError, SignatureError, VerificationError
from pipelines.ledger.signer import FileSigner, load_or_create_signer

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "feeds"
T0 = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FileSigner]:
    d = tmp_path_factory.mktemp("keys")
    return {n: load_or_create_signer(d, f"test/{n}") for n in ("root1", "root2", "online", "rogue")}


def make_root(version: int, root_keys: list[FileSigner], online: FileSigner, threshold: int = 1) -> Root:
    keys = {keyid_of(k.public_key): Key(k.public_key) for k in [*root_keys, online]}
    online_role = Role((keyid_of(online.public_key),), 1)
    return Root(
        version=version,
        expires=T0 + dt.timedelta(days=365),
        keys=keys,
        roles={
            ROLE_ROOT: Role(tuple(sorted(keyid_of(k.public_key) for k in root_keys)), threshold),
            ROLE_MANIFEST: online_role,
            ROLE_TIMESTAMP: online_role,
            ROLE_RECEIPT: online_role,
        },
        ledger=LedgerPointer("example/log", "example+01020304+AQ=="),
    )


def make_manifest(seq: int = 2) -> Manifest:
    return Manifest(
        feed_date=dt.date(2026, 9, 2),
        seq=seq,
        expires=T0 + dt.timedelta(days=31),
        prev_manifest_sha256=None if seq == 1 else "a" * 64,
        row_seq_start=5,
        row_count=3,
        files=(
            FileMeta("daily/2026-09-02/recycled.csv", 120, "b" * 64, 3),
            FileMeta("daily/2026-09-02/recycled.parquet", 900, "c" * 64, 3),
        ),
        snapshot=(FileMeta("snapshot/recycled.parquet", 1500, "d" * 64, 7),),
    )


def schema(name: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return doc


# ------------------------------------------------------------------ canonical JSON


@pytest.mark.parametrize(
    "raw",
    [
        b'{"b":1,"a":2}',  # unsorted keys
        b'{"a": 1}',  # whitespace
        b'{"a":1,"a":1}',  # duplicate keys
        b'{"a":1.0}',  # float
        b'{"a":01}',  # leading zero
        b'{"a":NaN}',
        b'{"a":"\\u00e9"}',  # escaped non-ASCII
        b'{"a":"\xff"}',  # not UTF-8
        b'{"a":1}\n',  # trailing newline
    ],
)
def test_parse_canonical_rejects_non_canonical_bytes(raw: bytes) -> None:
    with pytest.raises(FormatError):
        parse_canonical(raw, "doc")


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert (
        canonical_json({"b": "é", "a": [1, {"d": None, "c": True}]})
        == '{"a":[1,{"c":true,"d":null}],"b":"é"}'.encode()
    )
    assert parse_canonical('{"a":"é"}'.encode(), "doc") == {"a": "é"}


# ------------------------------------------------------------------ round trips and strictness


def test_all_documents_round_trip_and_match_their_schemas(keys: dict[str, FileSigner]) -> None:
    root = Envelope.create(make_root(1, [keys["root1"]], keys["online"]), [keys["root1"]])
    manifest = Envelope.create(make_manifest(), [keys["online"]])
    stamp = Envelope.create(
        Timestamp(
            2, T0 + dt.timedelta(days=2), ManifestPin(2, "daily/2026-09-02/manifest.json", 10, "e" * 64)
        ),
        [keys["online"]],
    )
    for env, kind, name in (
        (root, Root, "root"),
        (manifest, Manifest, "manifest"),
        (stamp, Timestamp, "timestamp"),
    ):
        data = env.to_bytes()
        assert Envelope.from_bytes(data, kind) == env  # type: ignore[arg-type]
        jsonschema.validate(json.loads(data), schema(name))
    receipt = QueryReceipt("bank-a", T0, "1" * 64, "2" * 64, 3, dt.date(2026, 9, 1), 4, "note\n")
    env_r = Envelope.create(receipt, [keys["online"]])
    assert Envelope.from_bytes(env_r.to_bytes(), QueryReceipt) == env_r


def test_manifest_core_excludes_the_ledger_fields() -> None:
    from number_recycling_client.wire import LedgerRef

    m = make_manifest()
    with_ledger = Manifest(**{**m.__dict__, "ledger": LedgerRef(7, "cp\n", "f" * 64)})
    assert with_ledger.core_sha256() == m.core_sha256() == sha256_hex(m.core_bytes())
    assert "ledger" not in json.loads(m.core_bytes())
    assert with_ledger.to_dict()["ledger"] == {"checkpoint": "cp\n", "index": 7, "opening": "f" * 64}


def _mutate(data: bytes, fn: object) -> bytes:
    doc = json.loads(data)
    fn(doc)  # type: ignore[operator]
    return canonical_json(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.__setitem__("extra", 1), "unknown field"),  # the envelope is not signed: closed
        (lambda d: d["signatures"][0].__setitem__("extra", 1), "unknown field"),
        (lambda d: d["signed"].pop("row_count"), "missing field"),
        (lambda d: d["signed"].__setitem__("seq", True), "must be an integer"),
        (lambda d: d["signed"].__setitem__("seq", -1), "below"),
        (lambda d: d["signed"].__setitem__("feed_date", "20260902"), "malformed"),
        (lambda d: d["signed"].__setitem__("expires", "2026-10-02T00:00:00+00:00"), "malformed"),
        (lambda d: d["signed"].__setitem__("_type", "timestamp"), "expected 'manifest'"),
        (lambda d: d["signed"]["files"][0].__setitem__("path", "daily/../../keys/x"), "malformed"),
        (lambda d: d["signed"]["files"][0].__setitem__("sha256", "B" * 64), "malformed"),
        (lambda d: d["signatures"].append(d["signatures"][0]), "sorted by keyid"),
        (lambda d: d["signed"].__setitem__("prev_manifest_sha256", None), "null exactly for seq 1"),
    ],
)
def test_manifest_parsing_is_strict(keys: dict[str, FileSigner], change: object, message: str) -> None:
    data = Envelope.create(make_manifest(), [keys["online"]]).to_bytes()
    with pytest.raises(FormatError, match=message):
        Envelope.from_bytes(_mutate(data, change), Manifest)


def test_a_manifest_is_not_accepted_as_another_type(keys: dict[str, FileSigner]) -> None:
    data = Envelope.create(make_manifest(), [keys["online"]]).to_bytes()
    with pytest.raises(FormatError, match="expected 'timestamp'"):
        Envelope.from_bytes(data, Timestamp)


def test_root_rejects_roles_naming_unlisted_keys_and_bad_thresholds(keys: dict[str, FileSigner]) -> None:
    data = Envelope.create(make_root(1, [keys["root1"]], keys["online"]), [keys["root1"]]).to_bytes()
    with pytest.raises(FormatError, match="threshold"):
        Envelope.from_bytes(
            _mutate(data, lambda d: d["signed"]["roles"]["root"].__setitem__("threshold", 2)), Root
        )
    with pytest.raises(FormatError, match="does not list"):
        Envelope.from_bytes(
            _mutate(data, lambda d: d["signed"]["roles"]["root"].__setitem__("keyids", ["0" * 64])), Root
        )
    with pytest.raises(FormatError, match="lacks role"):
        Envelope.from_bytes(_mutate(data, lambda d: d["signed"]["roles"].pop("receipt")), Root)


# ------------------------------------------------------------------ the future: unknown fields, minor versions

FUTURE = {"x_later": {"b": [1, None, "é"], "a": True}}  # a field a later 1.x publisher might add


def _future(kind: type[Root] | type[Manifest] | type[Timestamp], signed: dict[str, Any]) -> dict[str, Any]:
    """``signed`` as a later 1.x publisher writes it: an unknown field at the top and one nested."""
    signed = {**signed, **FUTURE}
    nested = {Root: ("roles", "root"), Manifest: ("files", 0), Timestamp: ("manifest",)}[kind]
    inner: Any = signed
    for step in nested:
        inner = inner[step]
    inner["x_nested"] = 7
    return signed


def future_documents(keys: dict[str, FileSigner]) -> list[tuple[type[Any], bytes, Root]]:
    """(type, signed bytes, root that verifies them) of a root, a manifest and a timestamp from 1.7."""
    root = make_root(1, [keys["root1"]], keys["online"])
    pin = ManifestPin(2, "manifests/2.json", 10, "e" * 64)
    docs: list[tuple[type[Any], dict[str, Any], FileSigner]] = [
        (Root, root.to_dict(), keys["root1"]),
        (Manifest, make_manifest().to_dict(), keys["online"]),
        (Timestamp, Timestamp(2, T0 + dt.timedelta(days=2), pin).to_dict(), keys["online"]),
    ]
    out = []
    for kind, signed, signer in docs:
        later = _future(kind, signed) | {"spec_version": "1.7"}
        # signed by a publisher that knows the fields: the signature covers the canonical bytes
        sig = signer.sign(canonical_json(later))
        envelope = {"signatures": [{"keyid": keyid_of(signer.public_key), "sig": sig.hex()}], "signed": later}
        out.append((kind, canonical_json(envelope), root))
    return out


def test_unknown_fields_are_kept_signed_and_re_serialised(keys: dict[str, FileSigner]) -> None:
    for kind, data, root in future_documents(keys):
        env = Envelope.from_bytes(data, kind)
        assert env.to_bytes() == data  # byte-identical: the canonical-bytes check still holds
        assert env.signed.spec_version == "1.7"
        assert env.signed.unrecognized_fields == FUTURE
        role = ROLE_ROOT if kind is Root else ROLE_MANIFEST
        env.verify_role(root, role, kind.TYPE)
        # the unknown fields are signed: changing one breaks the signature, not the parse
        changed = data.replace(b'"x_nested":7', b'"x_nested":8')
        assert changed != data
        with pytest.raises(SignatureError):
            Envelope.from_bytes(changed, kind).verify_role(root, role, kind.TYPE)


def test_nested_unknown_fields_are_kept_where_they_were(keys: dict[str, FileSigner]) -> None:
    (_, root_bytes, _), (_, manifest_bytes, _), (_, stamp_bytes, _) = future_documents(keys)
    assert Envelope.from_bytes(root_bytes, Root).signed.roles["root"].unrecognized_fields == {"x_nested": 7}
    manifest = Envelope.from_bytes(manifest_bytes, Manifest).signed
    assert manifest.files[0].unrecognized_fields == {"x_nested": 7}
    assert Envelope.from_bytes(stamp_bytes, Timestamp).signed.manifest.unrecognized_fields == {"x_nested": 7}
    # the ledger commits to the whole core, a later version's fields included
    assert json.loads(manifest.core_bytes())["x_later"] == FUTURE["x_later"]
    assert manifest.core_sha256() != make_manifest().core_sha256()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda n: n not in make_manifest().to_dict()),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=8,
    ),
)
def test_any_unknown_field_survives_a_round_trip(keys: dict[str, FileSigner], name: str, value: Any) -> None:
    signed = make_manifest().to_dict() | {name: value}
    data = canonical_json({"signatures": [], "signed": signed})
    env = Envelope.from_bytes(data, Manifest)
    assert env.to_bytes() == data and env.signed.unrecognized_fields == {name: value}


@pytest.mark.parametrize("version", ["1.0", "1.7", "1.12"])
def test_any_minor_version_of_our_major_parses(keys: dict[str, FileSigner], version: str) -> None:
    data = Envelope.create(make_manifest(), [keys["online"]]).to_bytes()
    env = Envelope.from_bytes(
        _mutate(data, lambda d: d["signed"].__setitem__("spec_version", version)), Manifest
    )
    assert env.signed.spec_version == version


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("2.0", "upgrade number-recycling"),
        ("0.9", "does not read"),
        ("1", "malformed"),
        ("01.0", "malformed"),
    ],
)
def test_another_major_version_is_refused(keys: dict[str, FileSigner], version: str, message: str) -> None:
    for kind, data, _ in future_documents(keys):
        with pytest.raises(FormatError, match=message):
            Envelope.from_bytes(
                _mutate(data, lambda d: d["signed"].__setitem__("spec_version", version)), kind
            )


def test_unrecognized_fields_cannot_shadow_known_ones() -> None:
    with pytest.raises(ValueError, match="repeat known"):
        FileMeta("a/b", 1, "a" * 64, 1, {"rows": 2}).to_dict()


# ------------------------------------------------------------------ signatures


def test_signature_verification_and_thresholds(keys: dict[str, FileSigner]) -> None:
    root = make_root(1, [keys["root1"], keys["root2"]], keys["online"], threshold=2)
    one = Envelope.create(root, [keys["root1"]])
    with pytest.raises(SignatureError, match="1 valid signature"):
        one.verify_role(root, ROLE_ROOT, "root")
    both = Envelope.create(
        root, [keys["root1"], keys["root2"], keys["rogue"]]
    )  # a stranger's extra sig is ignored
    both.verify_role(root, ROLE_ROOT, "root")
    # a signature from the right key over other bytes does not count
    m = Envelope.create(make_manifest(), [keys["online"]])
    forged = Envelope(make_manifest(seq=3), m.signatures)
    with pytest.raises(SignatureError):
        forged.verify_role(root, ROLE_MANIFEST, "manifest")
    with pytest.raises(SignatureError):
        Envelope.create(make_manifest(), [keys["rogue"]]).verify_role(root, ROLE_MANIFEST, "manifest")


def test_root_update_needs_old_and_new_root_keys(keys: dict[str, FileSigner]) -> None:
    v1 = Envelope.create(make_root(1, [keys["root1"]], keys["online"]), [keys["root1"]])
    v2_doc = make_root(2, [keys["root2"]], keys["online"])
    good = Envelope.create(v2_doc, [keys["root1"], keys["root2"]])
    verify_root_update(v1, good, good.to_bytes())
    for signers in ([keys["root1"]], [keys["root2"]], [keys["rogue"]]):
        bad = Envelope.create(v2_doc, signers)
        with pytest.raises(SignatureError):
            verify_root_update(v1, bad, bad.to_bytes())
    skipped = Envelope.create(make_root(3, [keys["root2"]], keys["online"]), [keys["root1"], keys["root2"]])
    with pytest.raises(SignatureError, match="does not follow"):
        verify_root_update(v1, skipped, skipped.to_bytes())


# ------------------------------------------------------------------ property: any change is caught


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_rejected(keys: dict[str, FileSigner], position: int, value: int) -> None:
    root = make_root(1, [keys["root1"]], keys["online"])
    data = Envelope.create(make_manifest(), [keys["online"]]).to_bytes()
    pos = position % len(data)
    if data[pos] == value:
        return
    changed = data[:pos] + bytes([value]) + data[pos + 1 :]
    with pytest.raises(VerificationError):  # FormatError or SignatureError, never acceptance
        Envelope.from_bytes(changed, Manifest).verify_role(root, ROLE_MANIFEST, "manifest")
