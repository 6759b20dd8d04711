"""Fuzzing acknowledgement uploads (``compliance/notifications.py``: ``read_acknowledgements`` and
``validate_acknowledgements``), the parser behind both ``POST /acknowledgements`` and
``recycle acks import``: any CSV or JSON is stored whole or refused with a DataContractError
naming the line or item. The hostile examples are the server's (``tests/e2e/vectors/hostile``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from fuzz_testkit import FAST, json_values, refuses_cleanly
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.compliance.notifications import read_acknowledgements, validate_acknowledgements
from pipelines.errors import DataContractError

HOSTILE = Path(__file__).resolve().parents[2] / "e2e" / "vectors" / "hostile"
NOW = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)
HEADER = "phone_number,status,feed_date,observed_at"


def _upload(body: bytes, content_type: str) -> object:
    return refuses_cleanly(
        lambda: validate_acknowledgements(
            read_acknowledgements(body, content_type), published=[dt.date(2026, 11, 27)], now=NOW
        )
    )


@settings(**FAST)
@given(
    st.lists(st.text(max_size=40) | st.sampled_from(["+8613800000001,unbound,,", '"a\nb",x,,']), max_size=5)
)
def test_any_csv_lines(lines: list[str]) -> None:
    _upload("\n".join([HEADER, *lines]).encode("utf-8", "surrogatepass"), "text/csv")


@settings(**FAST)
@given(st.binary(max_size=200))
def test_any_bytes(body: bytes) -> None:
    _upload(body, "text/csv")
    _upload(body, "application/json")


@settings(**FAST)
@given(
    st.lists(
        json_values | st.dictionaries(st.sampled_from(["phoneNumber", "status", "feedDate"]), json_values),
        max_size=4,
    )
)
def test_any_json_items(items: list[object]) -> None:
    _upload(json.dumps({"acknowledgements": items}).encode(), "application/json")


@pytest.mark.parametrize("path", sorted(HOSTILE.glob("ack*--*")), ids=lambda p: p.name)
def test_hostile_uploads_are_data_contract_errors(path: Path) -> None:
    # On main: csv.Error (a field over 128 KiB, a lone carriage return) and UnicodeEncodeError.
    content_type = "text/csv" if path.name.startswith("ack-csv") else "application/json"
    with pytest.raises(DataContractError, match=r"line \d|item \d"):
        read_acknowledgements(path.read_bytes(), content_type)
