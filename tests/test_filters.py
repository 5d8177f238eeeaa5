"""Conditions from settings, evaluated the same way for events and reference rows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from operators.filters import Condition, all_of


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("==", "ACTIVE", "ACTIVE", True),
        ("==", "ACTIVE", "RETIRED", False),
        ("!=", "ACTIVE", "RETIRED", True),
        (">", 100, 100.5, True),
        (">", 100, 100, False),
        (">=", 100, 100, True),
        ("<", 100, 99, True),
        ("<=", 100, 101, False),
        ("in", ["XNYS", "XLON"], "XLON", True),
        ("not_in", ["XNYS", "XLON"], "XLON", False),
    ],
)
def test_each_operator(op: str, value: object, actual: object, expected: bool) -> None:
    assert Condition(field="f", op=op, value=value).matches({"f": actual}) is expected


def test_missing_field_or_incomparable_value_does_not_match() -> None:
    price_over = Condition(field="price", op=">", value=100)
    assert not price_over.matches({})
    assert not price_over.matches({"price": "expensive"})
    assert not price_over.matches({"price": None})


def test_all_of_needs_every_condition() -> None:
    keep = all_of(
        [
            Condition(field="price", op=">", value=100),
            Condition(field="side", op="==", value="buy"),
        ]
    )
    assert keep is not None
    assert keep({"price": 101, "side": "buy"})
    assert not keep({"price": 101, "side": "sell"})
    assert all_of([]) is None


def test_bad_conditions_are_refused() -> None:
    with pytest.raises(ValidationError, match="needs a list"):
        Condition(field="x", op="in", value="abc")
    with pytest.raises(ValidationError):
        Condition(field="x", op="like", value="a%")
    with pytest.raises(ValidationError):
        Condition(field="x", op="==", value=1, extra=True)
