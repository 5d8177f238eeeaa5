"""Record filters from settings: a field, an operator and a value, evaluated in Python.

Filters are never rendered into SQL, so a value from settings can never
become SQL text. The same conditions filter events before the join and
reference rows in the dataflow and the publisher.

A misspelt field must never pass for a clean "no" (a filter on `prise`
would drop every event): settings check filter fields against the fields
they declare (`check_fields`), and a record without the field raises
`FieldMissing`, which the decoder turns into a dead letter.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from operators.identifiers import nearest

Op = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in"]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda actual, allowed: actual in allowed,
    "not_in": lambda actual, allowed: actual not in allowed,
}


FILTER_FIELD_MISSING = "filter_field_missing"
"""The dead-letter reason of a record that lacks a field its filter tests."""


class FieldMissing(LookupError):
    """A record lacks the field a condition tests: neither a match nor a clean "no"."""

    def __init__(self, field: str) -> None:
        super().__init__(f"the record has no field {field!r}, which the filter tests")
        self.field = field


class Condition(BaseModel):
    """`field op value`, for example `{"field": "price", "op": ">", "value": 100}`.

    A value that cannot be compared with `value` (text against a number, or
    null) does not match: a filter keeps only what it can vouch for. A record
    without the field at all raises `FieldMissing`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    op: Op
    value: Any

    @model_validator(mode="after")
    def _membership_needs_a_list(self) -> Condition:
        if self.op in ("in", "not_in") and not isinstance(self.value, list | tuple):
            raise ValueError(f"op {self.op!r} needs a list value, got {self.value!r}")
        return self

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether the record meets the condition; FieldMissing if it lacks the field."""
        try:
            actual = record[self.field]
        except KeyError:
            raise FieldMissing(self.field) from None
        try:
            return bool(_COMPARE[self.op](actual, self.value))
        except TypeError:
            return False

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


Predicate = Callable[[Mapping[str, Any]], bool]


def check_fields(
    conditions: Sequence[Condition], known: Collection[str], what: str, remedy: str
) -> None:
    """ValueError naming the first condition whose field is not among `known`, the fields
    the settings declare for the records `what` describes, with the nearest known name."""
    for condition in conditions:
        if condition.field not in known:
            close = nearest(condition.field, known)
            hint = f"; did you mean {close!r}?" if close else "."
            raise ValueError(
                f"filter field {condition.field!r} is not among the {what} "
                f"({', '.join(sorted(known))}){hint} {remedy}"
            )


def all_of(conditions: Sequence[Condition]) -> Predicate | None:
    """One predicate that holds when every condition does; None when there are none."""
    if not conditions:
        return None
    if len(conditions) == 1:
        return conditions[0].matches
    return lambda record: all(condition.matches(record) for condition in conditions)
