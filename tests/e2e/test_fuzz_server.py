"""Fuzzing the server's request bodies (``server/check.py``, ``bulk.py``, ``acks.py``, ``camara.py``):
any body, any JSON and hostile fields answer 200 or a 4xx with CAMARA's ErrorInfo body, never
a 500 or a traceback.

Through Starlette's ``TestClient`` on the app of ``test_server_hardening``'s ``hostile`` fixture,
not its loopback socket: a request in process costs about a millisecond, so hypothesis can
try a few hundred bodies per endpoint in seconds. What only a socket shows (bodies bounded
while they stream, slow clients timed out) is tested over loopback in ``test_server_hardening``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from .test_server_hardening import ACK, Hostile, hostile
from .test_server_http import BULK, CHECK, SAME

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from fuzz_testkit import json_values  # the unit tests' shared fuzz kit

__all__ = ["hostile"]  # the module fixture, shared
SETTINGS: dict[str, Any] = {
    "max_examples": 150,
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture],
}
HOSTILE = Path(__file__).parent / "vectors" / "hostile"


@pytest.fixture(scope="module")
def client(hostile: Hostile) -> Iterator[tuple[TestClient, str]]:
    with TestClient(hostile.app, raise_server_exceptions=False) as c:
        yield c, hostile.tokens["bank"]


def _post(client: tuple[TestClient, str], path: str, body: bytes, content_type: str) -> tuple[int, Any]:
    c, token = client
    r = c.post(path, content=body, headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    assert r.status_code in (200, 400, 404, 422), (r.status_code, r.text[:300])
    assert "Traceback" not in r.text
    doc = r.json()
    if r.status_code != 200:
        assert set(doc) == {"status", "code", "message"} and doc["status"] == r.status_code, doc
    return r.status_code, doc


def _dumps(doc: Any) -> bytes | None:
    try:
        return json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: send it escaped, as a client library would
        return json.dumps(doc).encode()


fields = st.one_of(json_values, st.sampled_from([SAME, "+86138", "2024-01-01", "0000-01-01", "9999-12-31"]))
query = st.dictionaries(st.sampled_from(["phoneNumber", "specifiedDate", "x"]), fields, max_size=3)


@settings(**SETTINGS)
@given(body=st.binary(max_size=200) | query.map(_dumps) | json_values.map(_dumps))
def test_check_bodies(client: tuple[TestClient, str], body: bytes) -> None:
    _post(client, CHECK, body, "application/json")


@settings(**SETTINGS)
@given(queries=st.lists(query | json_values, max_size=5), wrap=st.booleans())
def test_bulk_json_bodies(client: tuple[TestClient, str], queries: list[Any], wrap: bool) -> None:
    body = _dumps({"queries": queries} if wrap else queries)
    assert body is not None
    status, doc = _post(client, BULK, body, "application/json")
    assert status != 200 or len(doc["results"]) == len(queries)


@settings(**SETTINGS)
@given(lines=st.lists(st.text(max_size=30), max_size=5), header=st.booleans())
def test_bulk_csv_bodies(client: tuple[TestClient, str], lines: list[str], header: bool) -> None:
    text = "\n".join((["phoneNumber,specifiedDate"] if header else []) + lines)
    _post(client, BULK, text.encode("utf-8", "surrogatepass"), "text/csv")


ack = st.dictionaries(
    st.sampled_from(["phoneNumber", "status", "feedDate", "observedAt", "x"]),
    st.one_of(json_values, st.sampled_from([SAME, "unbound", "2026-11-27", "2026-11-27T10:00:00+08:00"])),
)


@settings(**SETTINGS)
@given(items=st.lists(ack | json_values, max_size=4))
def test_acknowledgement_json_bodies(client: tuple[TestClient, str], items: list[Any]) -> None:
    body = _dumps({"acknowledgements": items})
    assert body is not None
    _post(client, ACK, body, "application/json")


@settings(**SETTINGS)
@given(lines=st.lists(st.text(max_size=40), max_size=4))
def test_acknowledgement_csv_bodies(client: tuple[TestClient, str], lines: list[str]) -> None:
    text = "\n".join(["phone_number,status,feed_date,observed_at", *lines])
    _post(client, ACK, text.encode("utf-8", "surrogatepass"), "text/csv")


def _corpus() -> list[Any]:
    return [
        pytest.param(f.name.split("--")[0], f.read_bytes(), id=f.name) for f in sorted(HOSTILE.glob("*--*"))
    ]


@pytest.mark.parametrize(("endpoint", "body"), _corpus())
def test_hostile_requests(client: tuple[TestClient, str], endpoint: str, body: bytes) -> None:
    path, content_type = {
        "check": (CHECK, "application/json"),
        "bulk": (BULK, "application/json"),
        "bulk-csv": (BULK, "text/csv"),
        "ack": (ACK, "application/json"),
        "ack-csv": (ACK, "text/csv"),
    }[endpoint]
    status, _ = _post(client, path, body, content_type)
    assert status == 400
