"""The sink row: built once from a finished event, the same as the table's columns say."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from operators.chain import Stage, finish
from operators.records import Event, Joined, MissReason, Outcome, Status
from operators.sink_rows import EVENT_TIME, STATUS, RowShape, SinkRow, stages_json
from sinks.table import EnrichedTable

TABLE = EnrichedTable(
    name="enriched_events",
    event_columns=(("price", "float"), ("size", "int")),
    reference_columns=(("cusip", "str"), ("name", "str")),
    unstored_fields=frozenset({"event_id", "security_id", "ts"}),
)


def dumped(stages: tuple[Outcome, ...]) -> str:
    """The column as json.dumps writes it: the format the docs and readers rely on."""
    return json.dumps(
        [
            {
                "lookup": o.lookup,
                "status": o.status.value,
                "miss_reason": None if o.miss_reason is None else o.miss_reason.value,
                "waited_ms": o.waited_ms,
                "version": o.version,
            }
            for o in stages
        ],
        separators=(",", ":"),
    )


numbers = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
outcomes = st.builds(
    Outcome,
    st.text(min_size=1, max_size=12),
    st.sampled_from(Status),
    st.one_of(st.none(), st.sampled_from(MissReason)),
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    numbers,
)


@given(st.lists(outcomes, max_size=4).map(tuple))
def test_the_stages_column_is_exactly_what_json_dumps_writes(stages: tuple[Outcome, ...]) -> None:
    assert stages_json(stages) == dumped(stages)


def test_odd_numbers_in_the_stages_column_still_match_json_dumps() -> None:
    """Values decode never lets through (a bool, an infinity) fall back to json.dumps."""
    for version in (True, float("inf"), float("nan"), 1e16, -0.0, 2**70):
        stages = (Outcome("security", Status.ENRICHED, None, 0.5, version),)
        assert stages_json(stages) == dumped(stages)  # type: ignore[arg-type]


def joined(**fields: Any) -> Joined:
    doc = {"event_id": "e1", "security_id": "A", "ts": 1.5, "price": 9.5, **fields}
    event = Event("e1", "A", 1.5, doc, "events/0/7", (), 3)
    return Joined(event, ("C1", "Alpha", 4), 4, Status.ENRICHED, None, 0.0)


def test_the_row_binds_every_column_in_the_tables_order() -> None:
    row = finish(
        joined(venue="X"), Stage("security", ("cusip", "name")), (), "security_id", TABLE.rows
    )
    values = dict(zip(TABLE.columns(), row.binds, strict=True))
    assert values == {
        "event_id": "e1",
        "lookup_id": "A",
        "event_time": 1.5,
        "status": "enriched",
        "miss_reason": None,
        "waited_ms": 0.0,
        "ref_version": 4,
        "arrival_seq": 3,
        "price": 9.5,
        "size": None,
        "cusip": "C1",
        "name": "Alpha",
        "stages": '[{"lookup":"security","status":"enriched","miss_reason":null,'
        '"waited_ms":0.0,"version":4}]',
        "attributes": '{"venue":"X"}',
    }
    assert (row.origin, row.fields) == ("events/0/7", None)
    assert (row.event_id, row.lookup_id, row.event_time, row.status) == (
        "e1",
        "A",
        1.5,
        Status.ENRICHED,
    )
    assert row.binds[STATUS] == "enriched" and row.binds[EVENT_TIME] == 1.5


def test_fields_are_kept_only_when_asked_and_no_extras_give_null_attributes() -> None:
    keeping = RowShape(("price",), ("cusip", "name"), TABLE.rows.not_attributes, keep_fields=True)
    row = keeping.of(joined())
    assert row.fields is not None and row.fields["ts"] == 1.5
    assert row.binds[-1] is None
    assert isinstance(row, SinkRow) and TABLE.rows.reference(TABLE.rows.of(joined())) == (
        "C1",
        "Alpha",
    )
