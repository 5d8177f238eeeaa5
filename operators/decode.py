"""Decode and validate raw source records into events and reference updates.

JSON is parsed by pydantic-core's parser, several times faster than `json`,
and it shares repeated short strings (a sector, a currency) between rows.
Integer versions stay integers: SCNs and epoch microseconds exceed a float's
exact range.

Everything a producer can get wrong is caught here and turned into a
`DeadLetter` that carries the original bytes, so the enrichment step only ever
sees well-formed records and a bad record never stops the dataflow. That
includes every value some later step or database cannot hold
(`operators.limits`): integers beyond 64 bits, NaN and infinities (JSON has
none, but a literal such as 1e999 overflows to one), times outside years 1 to
9999, text longer than its column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, NamedTuple, NotRequired, Required

from pydantic import AllowInfNan, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic import Field as PydanticField
from pydantic_core import from_json
from typing_extensions import TypedDict

from operators.fast_events import FastDecode, fast_events
from operators.filters import FILTER_FIELD_MISSING, FieldMissing, Predicate
from operators.limits import (
    MAX_INT,
    MAX_TEXT,
    MAX_TIME,
    MIN_INT,
    MIN_TIME,
    SMALLEST_NUMBER,
    TIME_RANGE,
    time_in_range,
    version_in_range,
)
from operators.records import (
    CaughtUp,
    DeadLetter,
    Event,
    FieldType,
    Kind,
    RawRecord,
    RefUpdate,
    ValidFrom,
    Version,
)
from operators.times import epoch_seconds

_new = tuple.__new__

_INT = Annotated[int, PydanticField(ge=MIN_INT, le=MAX_INT)]
_typed_dict: Any = TypedDict
"""Built at run time from the settings, so the field names are not literals a checker reads."""

_PY_TYPES: dict[FieldType, Any] = {
    "str": Annotated[str, PydanticField(max_length=MAX_TEXT)],
    "int": _INT,
    "float": Annotated[float, AllowInfNan(False)],
    "bool": bool,
}
"""Declared types, bounded by what both databases hold; checked in pydantic-core, the cheapest."""

LookupId = (
    Annotated[StrictStr, PydanticField(min_length=1, max_length=MAX_TEXT)]
    | Annotated[StrictInt, PydanticField(ge=MIN_INT, le=MAX_INT)]
)
"""Ids may be strings or integers; both are keyed by their text."""


class Invalid(Exception):
    """A record failed validation; `reason` is the dead-letter reason.

    `field` names the first field at fault where one is known, so the reference
    publisher can say which column of a row it held back (`reference.reader`).
    """

    def __init__(self, reason: str, detail: str, field: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.field = field


def _first_field(exc: ValidationError) -> str:
    """The top-level field of the first error: the column, for a reference row."""
    loc = exc.errors()[0]["loc"]
    return str(loc[0]) if loc else ""


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )


def _load_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    if value is None:
        raise Invalid(
            "tombstone", "the record has no value (a tombstone); only reference rows delete"
        )
    if not value:
        raise Invalid("empty_value", "the record's value is empty")
    if len(value) > max_bytes:
        raise Invalid("oversized", f"{len(value)} bytes is more than the limit of {max_bytes}")
    try:
        obj = from_json(value, allow_inf_nan=False)
    except ValueError as exc:
        # The parser refuses bytes that are not UTF-8 too; only then is it worth asking.
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as not_utf8:
            raise Invalid("invalid_utf8", str(not_utf8)) from None
        raise Invalid("invalid_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise Invalid("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _column_fields(columns: Mapping[str, FieldType]) -> dict[str, Any]:
    """Each declared column as an optional, nullable field of its bounded type."""
    return {name: NotRequired[_PY_TYPES[kind] | None] for name, kind in columns.items()}


def column_values(columns: Mapping[str, FieldType], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` for some of `columns`, coerced as a reference row's are, or `Invalid`.

    For values that reach a table without being decoded (a lookup's
    `miss_defaults`), so that they meet the same rules as every record's;
    names outside `columns` are left out of the answer.
    """
    adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(
        _typed_dict("ColumnValues", _column_fields(columns))
    )
    try:
        return adapter.validate_python(dict(values))
    except ValidationError as exc:
        raise Invalid("invalid_field", _describe(exc)) from None


@dataclass(frozen=True)
class ReferenceSchema:
    """What one lookup keeps of its reference rows, and which rows it keeps at all.

    A row that fails `keep` decodes as a delete: a row that stops matching
    must leave the join's state just as a deleted one does.
    """

    columns: dict[str, FieldType]
    version_field: str = "version"
    keep: Predicate | None = None
    valid_from: ValidFrom | None = None
    """An as-of lookup's source of each row's validity time (None: not as-of); a row
    without one is refused, since the history could not place it."""
    valid_from_field: str | None = None
    _adapter: TypeAdapter[dict[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields: dict[str, Any] = {
            **_column_fields(self.columns),
            self.version_field: NotRequired[int | float | datetime | None],
        }
        if self.valid_from_field is not None and self.valid_from_field not in fields:
            fields[self.valid_from_field] = NotRequired[float | datetime | None]
        schema = _typed_dict("ReferenceSchema", fields)
        object.__setattr__(self, "_adapter", TypeAdapter(schema))

    def _valid_from(self, raw: RawRecord, valid: dict[str, Any], version: Version | None) -> float:
        """The row's validity time by `valid_from`, or `Invalid` when it has none."""
        if self.valid_from == "version":
            if version is None:
                raise Invalid(
                    "missing_valid_from",
                    f"the row has no {self.version_field!r}, which this as-of lookup reads "
                    "as the time from which the row is valid",
                    self.version_field,
                )
            return float(version)
        if self.valid_from == "field":
            name = self.valid_from_field or ""
            when = _time(valid.get(name), name)
            if when is None:
                raise Invalid(
                    "missing_valid_from",
                    f"the row has no {name!r}, the time from which this as-of lookup holds it",
                    name,
                )
            return when
        if raw.timestamp is None:
            raise Invalid(
                "missing_valid_from",
                "the record has no timestamp, which this as-of lookup reads as the time "
                "from which the row is valid",
            )
        return raw.timestamp

    def decode(self, raw: RawRecord, max_bytes: int) -> RefUpdate:
        if not raw.key:
            raise Invalid("missing_lookup_id", "the reference record has no key")
        try:
            lookup_id = raw.key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid("invalid_utf8", f"key: {exc}") from None
        at = raw.timestamp
        if raw.value is None:
            # A tombstone carries no row to read a time from: its record's time ends the key.
            return RefUpdate(lookup_id, None, None, raw.origin, raw.replay, False, at, at)
        obj = _load_object(raw.value, max_bytes)
        try:
            valid = self._adapter.validate_python(obj)
        except ValidationError as exc:
            raise Invalid("invalid_field", _describe(exc), _first_field(exc)) from None
        version = valid_version(valid.get(self.version_field), self.version_field)
        valid_from = None if self.valid_from is None else self._valid_from(raw, valid, version)
        if self.keep is not None and not self.keep(obj):
            return RefUpdate(lookup_id, None, None, raw.origin, raw.replay, True, at, valid_from)
        row = tuple(valid.get(name) for name in self.columns)
        return RefUpdate(lookup_id, row, version, raw.origin, raw.replay, False, at, valid_from)


@dataclass(frozen=True)
class Decoder:
    """Validates records against the configured event schema and each lookup's schema.

    Schemas are TypedDicts checked by pydantic `TypeAdapter`s: the same rules
    as models, at about half the cost, since no model instance is built.
    `keep_event` filters events after validation, before they reach any state.
    Events first try `operators.fast_events`, which gives the same answer for
    the common well-formed event at a fraction of the cost and leaves every
    other record to the checked path here; `fast_path=False` leaves all of
    them to it (tests and the benchmark compare the two).
    """

    lookup_field: str
    event_id_field: str
    event_time_field: str
    event_fields: dict[str, FieldType]
    references: Mapping[str, ReferenceSchema]
    max_record_bytes: int
    keep_event: Predicate | None = None
    fast_path: bool = True
    _event_schema: TypeAdapter[dict[str, Any]] = field(init=False, repr=False, compare=False)
    _fast: FastDecode | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        optional = {
            name: NotRequired[_PY_TYPES[kind] | None] for name, kind in self.event_fields.items()
        }
        event_schema = _typed_dict(
            "EventSchema",
            {
                **optional,
                self.lookup_field: Required[LookupId],
                self.event_id_field: NotRequired[LookupId | None],
                self.event_time_field: NotRequired[float | datetime | None],
            },
        )
        object.__setattr__(self, "_event_schema", TypeAdapter(event_schema))
        fast = None
        if self.fast_path:
            fast = fast_events(
                self.lookup_field,
                self.event_id_field,
                self.event_time_field,
                self.event_fields,
                self.max_record_bytes,
            )
        object.__setattr__(self, "_fast", fast)

    def decode(self, raw: RawRecord, seq: int = 0) -> Event | RefUpdate | DeadLetter | None:
        """The record decoded; None for an event the filter leaves out; `seq` is an event's."""
        if self._fast is not None and raw.kind is Kind.EVENT:
            event = self._fast(raw.value, raw.origin, seq)
            if event is not None:
                return self.kept(event, raw)
        return self.checked(raw, seq)

    def kept(self, event: Event, raw: RawRecord) -> Event | DeadLetter | None:
        """A valid event through the event filter: itself, None, or a dead letter."""
        if self.keep_event is None:
            return event
        try:
            return event if self.keep_event(event.fields) else None
        except FieldMissing as exc:
            return self._field_missing(raw, exc)

    def checked(self, raw: RawRecord, seq: int = 0) -> Event | RefUpdate | DeadLetter | None:
        """`decode` by pydantic alone: the rules' one definition, with their messages."""
        try:
            if raw.kind is Kind.EVENT:
                return self._event(raw, seq)
            schema = self.references.get(raw.lookup)
            if schema is None:
                raise Invalid("unknown_lookup", f"no lookup is named {raw.lookup!r}")
            return schema.decode(raw, self.max_record_bytes)
        except Invalid as exc:
            return DeadLetter(exc.reason, exc.detail, raw.value, raw.key, raw.origin)
        except FieldMissing as exc:
            return self._field_missing(raw, exc)

    @staticmethod
    def _field_missing(raw: RawRecord, exc: FieldMissing) -> DeadLetter:
        which = "the event filter" if raw.kind is Kind.EVENT else f"lookup {raw.lookup!r}"
        detail = f"{which} tests field {exc.field!r}, which the record lacks"
        return DeadLetter(FILTER_FIELD_MISSING, detail, raw.value, raw.key, raw.origin)

    def _event(self, raw: RawRecord, seq: int) -> Event | None:
        obj = _load_object(raw.value, self.max_record_bytes)
        if obj.get(self.lookup_field) is None:
            raise Invalid("missing_lookup_id", f"the event has no {self.lookup_field!r}")
        try:
            valid = self._event_schema.validate_python(obj)
        except ValidationError as exc:
            raise Invalid("invalid_field", _describe(exc)) from None
        event_time = valid.get(self.event_time_field)
        if type(event_time) is not float or not MIN_TIME <= event_time <= MAX_TIME:
            event_time = _time(event_time, self.event_time_field)  # the rarer cases, or invalid
        if not finite(obj):
            raise Invalid(
                "invalid_field",
                f"{non_finite_at(obj)}: not a finite number (a literal such as 1e999 "
                "overflows to infinity, which JSON cannot hold)",
            )
        for name in self.event_fields:
            if name in valid:
                obj[name] = valid[name]
        if self.keep_event is not None and not self.keep_event(obj):
            return None
        event_id = valid.get(self.event_id_field)
        # tuple.__new__ skips the NamedTuple constructor's Python frame: a tenth of decode.
        return _new(
            Event,
            (
                raw.origin if event_id is None else str(event_id),
                str(valid[self.lookup_field]),
                event_time,
                obj,
                raw.origin,
                (),
                seq,
            ),
        )


class DecodedBatch(NamedTuple):
    """One source batch, split by the lookup each record goes to first, and dead letters.

    Events go to the first lookup, in one list with its reference updates so
    their relative order survives.
    """

    good: dict[str, list[Event | RefUpdate]]
    bad: list[DeadLetter]
    caught_up: list[CaughtUp]
    events: int
    replayed_invalid: int
    filtered_events: int
    filtered_references: int
    bad_references: tuple[DeadLetter, ...] = ()
    """The dead letters in `bad` that are reference records, so they are counted apart."""


def decode_batch(
    decoder: Decoder, first: str, batch: list[RawRecord | CaughtUp], first_seq: int = 0
) -> DecodedBatch:
    """Decode a batch, keeping arrival order; `first` names the lookup events go to.

    The batch's records are numbered from `first_seq` in order; each event
    keeps its number as its `seq`.

    A replayed reference record that is invalid was dead-lettered when it was
    first read, and that write is in the snapshot being resumed; it is only
    counted, so a restart never writes a dead letter twice.
    """
    good: dict[str, list[Event | RefUpdate]] = {}
    bad: list[DeadLetter] = []
    bad_references: list[DeadLetter] = []
    caught_up: list[CaughtUp] = []
    events = replayed_invalid = filtered_events = filtered_references = 0
    fast, kept, checked, event_kind = decoder._fast, decoder.kept, decoder.checked, Kind.EVENT
    for seq, raw in enumerate(batch, first_seq):
        if type(raw) is CaughtUp:
            caught_up.append(raw)
            continue
        is_event = raw.kind is event_kind  # type: ignore[union-attr]
        record: Event | RefUpdate | DeadLetter | None = None
        if is_event:
            events += 1
            # The fast path inline: a method call per event is a tenth of its cost.
            if fast is not None:
                record = fast(raw.value, raw.origin, seq)  # type: ignore[union-attr]
            if record is None:
                record = checked(raw, seq)  # type: ignore[arg-type]
            elif decoder.keep_event is not None:
                record = kept(record, raw)  # type: ignore[arg-type]
        else:
            record = checked(raw, seq)  # type: ignore[arg-type]
        if record is None:
            filtered_events += 1
        elif type(record) is DeadLetter:
            if raw.replay:  # type: ignore[union-attr]
                replayed_invalid += 1
            else:
                bad.append(record)
                if not is_event:
                    bad_references.append(record)
        else:
            lookup = first if is_event else raw.lookup
            group = good.get(lookup)
            if group is None:
                group = good[lookup] = []
            group.append(record)  # type: ignore[arg-type]
            filtered_references += type(record) is RefUpdate and record.filtered
    return DecodedBatch(
        good,
        bad,
        caught_up,
        events,
        replayed_invalid,
        filtered_events,
        filtered_references,
        tuple(bad_references),
    )


def _time(value: float | datetime | None, name: str) -> float | None:
    """Epoch seconds of a valid time; NaN, infinities and times no store holds are invalid."""
    if value is None:
        return None
    if isinstance(value, datetime):
        seconds = epoch_seconds(value)
        if time_in_range(seconds):
            return seconds
        raise Invalid(
            "invalid_field", f"{name}: {value.isoformat()} is not within {TIME_RANGE}", name
        )
    if time_in_range(value):
        return value
    raise Invalid("invalid_field", f"{name}: {value!r} is not a time within {TIME_RANGE}", name)


def valid_version(value: int | float | datetime | None, name: str) -> Version | None:
    """A version the join can order and both databases hold exactly, or `Invalid`.

    Public so the reference publisher holds its change column to the same rule.

    Numbers within 64-bit signed integers (a float beyond them has lost its
    units digits anyway) and not too close to zero for Oracle's NUMBER, or
    times; NaN or infinity would freeze the row.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return _time(value, name)
    if version_in_range(value):
        return value
    raise Invalid(
        "invalid_field",
        f"{name}: {value!r} is not a finite number within 64-bit integers "
        f"(and, if not 0, at least {SMALLEST_NUMBER} from it)",
        name,
    )


def finite(value: dict[str, Any] | list[Any]) -> bool:
    """Whether a decoded JSON value holds no NaN or infinity, however deeply nested.

    The one definition of "JSON can carry it": the publisher holds back a row that fails it
    (and one that `ReferenceSchema.decode` refuses).

    Runs per event, so a plain loop: `x - x` is 0.0 exactly when `x` is finite.
    """
    items: Iterable[Any] = value.values() if type(value) is dict else value
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0.0:
                return False
        elif (kind is dict or kind is list) and not finite(item):
            return False
    return True


def non_finite_at(value: dict[str, Any] | list[Any]) -> str:
    """The path of the first NaN or infinity in a value `finite` refused, for the message."""
    for key, item in value.items() if type(value) is dict else enumerate(value):
        if type(item) is float and item - item != 0.0:
            return str(key)
        if type(item) in (dict, list) and not finite(item):
            return f"{key}.{non_finite_at(item)}"
    raise AssertionError("called on a finite value")
