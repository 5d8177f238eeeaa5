"""Record filters from settings: a field, an operator and a value, evaluated in Python.

Filters are never rendered into SQL, so a value from settings can never
become SQL text. The same conditions filter events before the join and
reference rows in the dataflow and the publisher.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

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


class Condition(BaseModel):
    """`field op value`, for example `{"field": "price", "op": ">", "value": 100}`.

    A record without the field, or whose value cannot be compared with
    `value` (text against a number), does not match: a filter keeps only
    what it can vouch for.
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
        if self.field not in record:
            return False
        try:
            return bool(_COMPARE[self.op](record[self.field], self.value))
        except TypeError:
            return False

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


Predicate = Callable[[Mapping[str, Any]], bool]


def all_of(conditions: Sequence[Condition]) -> Predicate | None:
    """One predicate that holds when every condition does; None when there are none."""
    if not conditions:
        return None
    if len(conditions) == 1:
        return conditions[0].matches
    return lambda record: all(condition.matches(record) for condition in conditions)
