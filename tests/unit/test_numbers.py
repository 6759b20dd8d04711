from __future__ import annotations

import pytest

from pipelines.numbers import mask, mask_contact, normalise


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "+8613812345678",
        "008613812345678",
        "138 1234 5678",
        "138-1234-5678",
        "１３８１２３４５６７８",
    ],
)
def test_normalise_cn_mobile_forms(raw: str) -> None:
    assert normalise(raw, "CN") == "+8613812345678"


@pytest.mark.parametrize("raw", ["1381234567", "138123456789", "12345678901", "abc", ""])
def test_normalise_rejects_invalid(raw: str) -> None:
    assert normalise(raw, "CN") is None


def test_normalise_other_region() -> None:
    assert normalise("(201) 555-0123", "US") == "+12015550123"
    assert normalise("(201) 055-0123", "US") is None  # exchange codes never start with 0
    assert normalise("+1 415 555 2671", "CN") == "+14155552671"


def test_mask_never_shows_the_middle_digits() -> None:
    assert mask("+8613812345678") == "138****5678"
    assert "1234" not in mask("+8613812345678")
    assert mask_contact("li.wei@example.cn") == "l***@example.cn"
    assert mask_contact("+8613912345678") == "139****5678"
