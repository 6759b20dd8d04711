"""CAMARA conformance of ``POST /number-recycling/v0.2/check``, judged by the published document.

Every request goes over real HTTP to uvicorn on 127.0.0.1, and every response is checked against
the vendored CAMARA NumberRecycling v0.2.0 OpenAPI document (``vectors/camara/``), not against
our own ``schemas/openapi.json``: the status must be one the document declares, the body must
validate against the schema declared for that status (``$ref``s followed through
``components/responses`` and ``components/schemas``), the error ``code`` must be one the
document lists for that status, and a sent ``x-correlator`` must come back unchanged and match
the document's pattern. Request bodies are validated against the declared request schema too,
so a body the schema rejects must be answered 400 INVALID_ARGUMENT, and a body it accepts never.

OpenAPI 3.0 schemas are converted to JSON Schema 2020-12 (``nullable``, boolean
``exclusiveMinimum``/``exclusiveMaximum``), ``format`` is asserted, and ``pattern`` is evaluated
with ECMA-262 semantics as JSON Schema requires: in Python ``$`` also matches before a final
newline and ``\\d`` matches any Unicode digit, which would wave through ``"+8613800000001\\n"``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pipelines.config import load_settings
from pipelines.db import open_state
from pipelines.feeds.answer import Span, Verdict, answer
from pipelines.feeds.query_snapshot import publish_snapshot
from pipelines.layout import Layout
from pipelines.server import TokenStore, create_app

from .test_server_http import (
    FROZEN,
    NEVER,
    NOW,
    PORTED,
    REISSUED,
    SAME,
    SUSPENDED,
    D,
    build_state,
    serving,
)

SPEC = Path(__file__).resolve().parent / "vectors" / "camara" / "number-recycling.yaml"
SPEC_URI = "urn:camara:number-recycling:0.2.0"
CHECK = "/number-recycling/v0.2/check"
DATA_FROM = dt.date(2020, 1, 1)  # the earliest tenure start build_state writes
TODAY = NOW.date()
# The tenures build_state writes, as the one answer rule reads them (pipelines.feeds.answer).
_d = dt.date.fromisoformat
SPANS = {
    SAME: [Span(_d("2023-10-09"), None, None, "snapshot")],
    REISSUED: [
        Span(_d("2023-10-09"), _d("2024-02-25"), "cancel", "snapshot"),
        Span(_d("2024-09-21"), None, None, "reissue"),
    ],
    FROZEN: [Span(_d("2022-01-01"), _d("2026-10-01"), "cancel", "snapshot")],
    PORTED: [Span(_d("2021-01-01"), _d("2025-03-01"), "port_out", "snapshot")],
    SUSPENDED: [Span(_d("2021-06-01"), None, None, "snapshot")],
    "+8613800000009": [Span(_d("2020-01-01"), None, None, "snapshot")],
}
CORRELATOR = "b4333c46-49c0-4f62-80d7-f0ef930f1c46"


# ------------------------------------------------------------------ the document as JSON Schema


def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    """An ECMA-262 regular expression (no flags) as a Python one: ``$`` outside a class is the
    end of input (``\\Z``), and the shorthand classes are ASCII."""
    out: list[str] = []
    in_class = escaped = False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif in_class:
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
        else:
            out.append(r"\Z" if ch == "$" else ch)
    return re.compile("".join(out), re.ASCII)


def _pattern_keyword(
    validator: Validator, pattern: str, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not _ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern_keyword})  # type: ignore[no-untyped-call]


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 Schema Objects (anywhere in the document) as JSON Schema 2020-12."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):  # keys here are names, not keywords
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key in ("example", "examples", "xml", "discriminator", "externalDocs"):
            out[key] = value  # never reached by validation: pointers never land on them
        else:
            out[key] = _to_json_schema(value)
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:
            out[bound] = out.pop(limit)
    return out


@dataclass(frozen=True)
class Camara:
    """The CAMARA document, its check operation, and validators for what it declares."""

    doc: dict[str, Any]
    registry: Registry[Any]

    def validator(self, pointer: str) -> Validator:
        validator: Validator = _Validator(
            {"$ref": f"{SPEC_URI}#{pointer}"},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        return validator

    def deref(self, obj: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
        """Follow an OpenAPI ``$ref`` (Response, Parameter, Header objects); keep the pointer."""
        while "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), f"only local $refs are expected, got {ref}"
            pointer = ref[1:]
            obj = self.doc
            for part in pointer[1:].split("/"):
                obj = obj[part.replace("~1", "/").replace("~0", "~")]
        return obj, pointer

    @property
    def operation_pointer(self) -> str:
        return "/paths/~1check/post"

    @property
    def operation(self) -> dict[str, Any]:
        return dict(self.doc["paths"]["/check"]["post"])

    def request_validator(self) -> Validator:
        body, pointer = self.deref(self.operation["requestBody"], self.operation_pointer + "/requestBody")
        assert "application/json" in body["content"]
        return self.validator(pointer + "/content/application~1json/schema")

    def declared_statuses(self) -> set[int]:
        return {int(s) for s in self.operation["responses"]}

    def response(self, status: int) -> tuple[dict[str, Any], str]:
        declared = self.operation["responses"]
        assert str(status) in declared, f"the CAMARA document declares no {status} for POST /check"
        return self.deref(declared[str(status)], f"{self.operation_pointer}/responses/{status}")

    def response_validator(self, status: int) -> Validator:
        response, pointer = self.response(status)
        assert "application/json" in response["content"], f"{status}: no application/json content"
        return self.validator(pointer + "/content/application~1json/schema")

    def error_codes(self, status: int) -> set[str]:
        """The ``code`` values the document lists for an error status (from its ``allOf``)."""
        schema = self.response(status)[0]["content"]["application/json"]["schema"]
        codes: set[str] = set()
        for part in schema.get("allOf", [schema]):
            codes |= set(part.get("properties", {}).get("code", {}).get("enum", []))
        assert codes, f"the document lists no error codes for {status}"
        return codes

    def correlator_validator(self, status: int) -> Validator:
        response, pointer = self.response(status)
        header, hpointer = self.deref(response["headers"]["x-correlator"], pointer + "/headers/x-correlator")
        assert "schema" in header
        return self.validator(hpointer + "/schema")


@cache
def camara() -> Camara:
    doc = _to_json_schema(yaml.safe_load(SPEC.read_text(encoding="utf-8")))
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    return Camara(doc, Registry().with_resource(SPEC_URI, resource))


def schema_errors(validator: Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def request_is_valid(body: Any) -> bool:
    return not schema_errors(camara().request_validator(), body)


def assert_conforms(r: httpx.Response, correlator: str | None) -> dict[str, Any]:
    """Everything the CAMARA document says about this response; returns the parsed body."""
    spec = camara()
    where = f"POST /check -> {r.status_code} {r.text[:300]!r}"
    assert r.status_code in spec.declared_statuses(), f"{where}: status not declared by CAMARA"
    assert r.headers.get("content-type", "").split(";")[0].strip() == "application/json", where
    body = r.json()
    errors = schema_errors(spec.response_validator(r.status_code), body)
    assert not errors, f"{where}: body does not match the CAMARA schema: {errors}"
    if r.status_code >= 400:
        assert body["code"] in spec.error_codes(r.status_code), where
        assert body["status"] == r.status_code and body["message"].strip(), where
    if correlator is not None:
        assert r.headers.get("x-correlator") == correlator, f"{where}: x-correlator not echoed"
        header_errors = schema_errors(spec.correlator_validator(r.status_code), r.headers["x-correlator"])
        assert not header_errors, f"{where}: x-correlator {header_errors}"
    assert isinstance(body, dict)
    return body


# ------------------------------------------------------------------ the validator can fail


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"phoneNumberRecycled": "yes"}),
        (200, {"phoneNumberRecycled": 1}),
        (200, {"phoneNumberRecycled": None}),
        (200, {}),
        (200, [True]),
        (400, {"status": 400, "code": "NOT_FOUND", "message": "x"}),
        (400, {"status": 404, "code": "INVALID_ARGUMENT", "message": "x"}),
        (400, {"status": "400", "code": "INVALID_ARGUMENT", "message": "x"}),
        (401, {"status": 401, "code": "UNAUTHENTICATED"}),
        (403, {"status": 403, "code": "UNAUTHENTICATED", "message": "x"}),
        (404, {"status": 404, "code": "NOT_FOUND", "message": "x"}),
        (422, {"status": 422, "code": "INVALID_ARGUMENT", "message": "x"}),
    ],
)
def test_validator_rejects_wrong_response_bodies(status: int, body: object) -> None:
    assert schema_errors(camara().response_validator(status), body)


@pytest.mark.parametrize(
    "body",
    [
        {"phoneNumber": SAME},  # specifiedDate is the one required field
        {"phoneNumber": SAME + "\n", "specifiedDate": "2024-01-01"},  # ECMA $: end of input
        {"phoneNumber": "+86138000000011234", "specifiedDate": "2024-01-01"},  # 17 digits
        {"phoneNumber": "+0138000", "specifiedDate": "2024-01-01"},
        {"phoneNumber": "+86１３８00000001", "specifiedDate": "2024-01-01"},  # full-width digits
        {"phoneNumber": None, "specifiedDate": "2024-01-01"},
        {"phoneNumber": SAME, "specifiedDate": "2024-02-30"},
        {"phoneNumber": SAME, "specifiedDate": "2024-1-1"},
        {"phoneNumber": SAME, "specifiedDate": "2024-01-01T00:00:00Z"},
        {"phoneNumber": SAME, "specifiedDate": 20240101},
        [],
    ],
)
def test_validator_rejects_bad_request_bodies(body: object) -> None:
    assert not request_is_valid(body)


def test_validator_accepts_what_the_document_itself_shows() -> None:
    spec = camara()
    for status in sorted(spec.declared_statuses() - {200}):
        response = spec.response(status)[0]
        examples = response["content"]["application/json"]["examples"]
        for name, shown in examples.items():
            errors = schema_errors(spec.response_validator(status), shown["value"])
            assert not errors, f"CAMARA's own {status} example {name!r}: {errors}"
    assert not schema_errors(spec.response_validator(200), {"phoneNumberRecycled": False})
    assert request_is_valid({"specifiedDate": "2024-10-31"})
    assert request_is_valid({"phoneNumber": "+123456789", "specifiedDate": "2024-10-31", "other": 1})
    assert spec.error_codes(400) == {"INVALID_ARGUMENT", "OUT_OF_RANGE"}
    assert spec.error_codes(422) == {"SERVICE_NOT_APPLICABLE", "MISSING_IDENTIFIER", "UNNECESSARY_IDENTIFIER"}
    corr = spec.correlator_validator(200)
    assert not schema_errors(corr, CORRELATOR) and not schema_errors(corr, "a-b_c:d;e.f/g<h>{i}")
    for bad in ("has space", "x" * 257, "abc\n", "é"):
        assert schema_errors(corr, bad), bad


# ------------------------------------------------------------------ the server over HTTP


@dataclass
class World:
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings_ = load_settings(env={}, data_dir=tmp_path_factory.mktemp("camara") / "data")
    with open_state(Layout(settings_.data_dir).state_db) as con:
        build_state(con)
        publish_snapshot(settings_, D, con)
    ts = TokenStore.open(settings_.data_dir)
    tokens = {
        "checker": ts.add("checker", ["check"], rate=10_000, burst=10_000),
        "feeder": ts.add("feeder", ["feeds"], rate=10_000, burst=10_000),  # no check scope
    }
    ts.close()
    with serving(create_app(settings_, clock=lambda: NOW)) as url:
        yield World(url, tokens)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world.url, timeout=30) as c:
        yield c


def send(
    client: httpx.Client,
    world: World,
    body: object,
    *,
    token: str | None = "checker",
    correlator: str | None = CORRELATOR,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {world.tokens.get(token, token)}"
    if correlator is not None:
        headers["x-correlator"] = correlator
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(CHECK, content=content, headers=headers)


def body(phone: str | None, date: str) -> dict[str, str]:
    return {"specifiedDate": date} | ({} if phone is None else {"phoneNumber": phone})


@pytest.mark.parametrize(
    ("sent", "token", "status", "expected"),
    [
        # CAMARA scenario 1: the same holder since the contract day
        (body(SAME, "2023-12-22"), "checker", 200, False),
        (body(SAME, "2023-10-09"), "checker", 200, False),
        # scenario 2: cancelled, released and reissued since
        (body(REISSUED, "2023-12-22"), "checker", 200, True),
        # a date in the freeze gap (no contract that day) -> true, per the scenario 2 note
        (body(REISSUED, "2024-06-30"), "checker", 200, True),
        (body(FROZEN, "2026-10-15"), "checker", 200, True),
        (body(REISSUED, "2024-09-21"), "checker", 200, False),
        # a suspension is not a change of subscriber
        (body(SUSPENDED, "2026-01-01"), "checker", 200, False),
        # the schema allows other members; they must not make a valid request fail
        ({**body(SAME, "2024-01-01"), "note": "ignored"}, "checker", 200, False),
        # bad bodies
        (body(SAME, "2024-13-01"), "checker", 400, "INVALID_ARGUMENT"),
        (body(SAME, "2024-1-1"), "checker", 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME, "specifiedDate": 20240101}, "checker", 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME, "specifiedDate": None}, "checker", 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": SAME}, "checker", 400, "INVALID_ARGUMENT"),
        ({}, "checker", 400, "INVALID_ARGUMENT"),
        (body("8613800000001", "2024-01-01"), "checker", 400, "INVALID_ARGUMENT"),
        (body("+0138000", "2024-01-01"), "checker", 400, "INVALID_ARGUMENT"),
        (body(SAME + "\n", "2024-01-01"), "checker", 400, "INVALID_ARGUMENT"),
        (body("+86１３８00000001", "2024-01-01"), "checker", 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": 8613800000001, "specifiedDate": "2024-01-01"}, "checker", 400, "INVALID_ARGUMENT"),
        ({"phoneNumber": None, "specifiedDate": "2024-01-01"}, "checker", 400, "INVALID_ARGUMENT"),
        ([], "checker", 400, "INVALID_ARGUMENT"),
        ("2024-01-01", "checker", 400, "INVALID_ARGUMENT"),
        (b"{not json", "checker", 400, "INVALID_ARGUMENT"),
        # dates outside what the service can answer for
        (body(SAME, "2026-11-29"), "checker", 400, "OUT_OF_RANGE"),
        (body(SAME, "2999-01-01"), "checker", 400, "OUT_OF_RANGE"),
        (body(SAME, "2019-12-31"), "checker", 400, "OUT_OF_RANGE"),
        # authentication and authorisation
        (body(SAME, "2024-01-01"), None, 401, "UNAUTHENTICATED"),
        (body(SAME, "2024-01-01"), "nrp_wrong-token", 401, "UNAUTHENTICATED"),
        (body(SAME, "2024-01-01"), "feeder", 403, "PERMISSION_DENIED"),
        # numbers that are not ours
        (body(PORTED, "2024-01-01"), "checker", 404, "IDENTIFIER_NOT_FOUND"),
        (body(NEVER, "2024-01-01"), "checker", 404, "IDENTIFIER_NOT_FOUND"),
        # a two-legged token identifies no subscriber, so phoneNumber must be sent
        (body(None, "2024-01-01"), "checker", 422, "MISSING_IDENTIFIER"),
    ],
)
def test_check_conforms_to_camara(
    client: httpx.Client, world: World, sent: object, token: str | None, status: int, expected: bool | str
) -> None:
    if not isinstance(sent, bytes):
        # the request schema must agree: exactly the INVALID_ARGUMENT bodies are invalid
        assert request_is_valid(sent) == (expected != "INVALID_ARGUMENT"), sent
    r = send(client, world, sent, token=token)
    assert r.status_code == status, r.text
    doc = assert_conforms(r, CORRELATOR)
    if status == 200:
        assert doc == {"phoneNumberRecycled": expected}
    else:
        assert doc["code"] == expected


@pytest.mark.parametrize("correlator", ["a-b_c:d;e.f/g<h>{i}", "x" * 256, ""])
def test_correlator_is_echoed(client: httpx.Client, world: World, correlator: str) -> None:
    assert_conforms(send(client, world, body(SAME, "2024-01-01"), correlator=correlator), correlator)
    assert_conforms(send(client, world, body(NEVER, "2024-01-01"), correlator=correlator), correlator)
    assert_conforms(
        send(client, world, body(SAME, "2024-01-01"), token=None, correlator=correlator), correlator
    )


@pytest.mark.parametrize("correlator", ["has space", "x" * 257, "a|b"])
def test_invalid_correlator_gets_invalid_argument(
    client: httpx.Client, world: World, correlator: str
) -> None:
    assert schema_errors(camara().correlator_validator(400), correlator)
    r = send(client, world, body(SAME, "2024-01-01"), correlator=correlator)
    assert r.status_code == 400
    assert assert_conforms(r, None)["code"] == "INVALID_ARGUMENT"
    assert "x-correlator" not in r.headers  # it cannot be echoed: the pattern forbids it


# ------------------------------------------------------------------ generated bodies

_PHONES = st.one_of(
    st.sampled_from([*SPANS, NEVER]),
    st.from_regex(r"\+[1-9][0-9]{4,14}", fullmatch=True),
    st.from_regex(r"\+?[0-9١２]{0,18}\n?", fullmatch=True),
    st.sampled_from([SAME + "\n", " " + SAME, SAME + " ", "+86 138 0000 0001", ""]),
    st.text(max_size=20),
    st.none(),
    st.integers(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
_DATES = st.one_of(
    st.dates(min_value=DATA_FROM, max_value=TODAY).map(dt.date.isoformat),
    st.dates().map(dt.date.isoformat),
    st.sampled_from(
        [
            "2024-02-30",
            "2024-1-1",
            "2024-01-01\n",
            "２０２４-01-01",
            "2024-01-01T00:00:00Z",
            "20240101",
            "",
            "2023-02-29",
            "2024-02-29",
        ]
    ),
    st.text(max_size=12),
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
)
_BODIES = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"phoneNumber": _PHONES, "specifiedDate": _DATES, "extra": st.text(max_size=5)}
    ),
    st.fixed_dictionaries({"phoneNumber": _PHONES, "specifiedDate": _DATES}),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=5),
    st.none(),
)


def _expected(phone: str, value: str) -> tuple[int, str | None]:
    """What the one rule says for a valid request, in CAMARA's status and code."""
    day = dt.date.fromisoformat(value)
    if day > TODAY:
        return (400, "OUT_OF_RANGE")
    verdict = answer(SPANS.get(phone, []), day).verdict
    return {
        Verdict.NOT_OURS: (404, "IDENTIFIER_NOT_FOUND"),
        Verdict.NO_DATA: (400, "OUT_OF_RANGE"),
    }.get(verdict, (200, None))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=_BODIES)
# traps where Python's re and JSON Schema's ECMA-262 patterns disagree, always tried
@example(sent={"phoneNumber": SAME + "\n", "specifiedDate": "2024-01-01"})
@example(sent={"phoneNumber": NEVER + "\n", "specifiedDate": "2024-01-01"})
@example(sent={"phoneNumber": "+86١٣٨00000001", "specifiedDate": "2024-01-01"})
@example(sent={"phoneNumber": SAME, "specifiedDate": "２０２４-01-01"})
@example(sent={"phoneNumber": SAME, "specifiedDate": "2024-01-01\n"})
def test_generated_bodies_get_what_the_schema_implies(
    client: httpx.Client, world: World, sent: object
) -> None:
    r = send(client, world, sent)
    doc = assert_conforms(r, CORRELATOR)
    outcome = (r.status_code, doc.get("code"))
    if not request_is_valid(sent):
        assert outcome == (400, "INVALID_ARGUMENT"), f"the schema rejects {sent!r}, the server said {outcome}"
        return
    assert isinstance(sent, dict)
    if "phoneNumber" not in sent:
        assert outcome == (422, "MISSING_IDENTIFIER"), sent
        return
    status, code = _expected(sent["phoneNumber"], sent["specifiedDate"])
    assert (r.status_code, doc.get("code") if status != 200 else None) == (status, code), sent


# ------------------------------------------------------------------ our document against CAMARA's


def _strip_annotations(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_annotations(v) for k, v in node.items() if k not in ("description", "example")}
    if isinstance(node, list):
        return [_strip_annotations(n) for n in node]
    return node


def test_our_openapi_check_operation_matches_camara(client: httpx.Client) -> None:
    ours = client.get("/openapi.json").json()
    op = ours["paths"][CHECK]["post"]
    spec = camara()
    assert op["operationId"] == spec.operation["operationId"]

    def resolve(doc: dict[str, Any], node: Any) -> Any:
        node = copy.deepcopy(node)
        if isinstance(node, dict):
            if "$ref" in node:
                target: Any = doc
                for part in node["$ref"][2:].split("/"):
                    target = target[part]
                return resolve(doc, target)
            return {k: resolve(doc, v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(doc, n) for n in node]
        return node

    camara_doc = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    camara_op = camara_doc["paths"]["/check"]["post"]
    assert _strip_annotations(resolve(ours, op["requestBody"]["content"])) == _strip_annotations(
        resolve(camara_doc, camara_op["requestBody"]["content"])
    )
    for status, response in camara_op["responses"].items():
        assert status in op["responses"], f"our document does not declare {status} for {CHECK}"
        theirs_schema = resolve(camara_doc, response)["content"]["application/json"]["schema"]
        our_schema = resolve(ours, op["responses"][status])["content"]["application/json"]["schema"]
        if status == "200":
            assert _strip_annotations(our_schema) == _strip_annotations(theirs_schema)
            continue
        our_codes = {
            c
            for part in our_schema["allOf"]
            for c in part.get("properties", {}).get("code", {}).get("enum", [])
        }
        assert our_codes <= spec.error_codes(int(status)), (
            f"our document promises {status} codes {sorted(our_codes - spec.error_codes(int(status)))} "
            f"that CAMARA does not list for {CHECK}"
        )
