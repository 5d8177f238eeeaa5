"""A time without an offset is UTC everywhere: in the dataflow and in the publisher alike."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from operators.decode import Decoder, ReferenceSchema
from operators.records import Event, Kind, RawRecord, RefUpdate
from operators.times import epoch_seconds
from reference.reader import version_of

DECODER = Decoder(
    lookup_field="security_id",
    event_id_field="event_id",
    event_time_field="ts",
    event_fields={},
    references={"security": ReferenceSchema({"name": "str"}, "version")},
    max_record_bytes=1_000,
)
NEW_YEAR = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


@pytest.fixture(params=["Asia/Tokyo", "America/New_York"])
def host_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The host's time zone set to one far from UTC, restored after the test."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_the_zone_really_is_not_utc(host_zone: str) -> None:
    assert time.timezone != 0
    assert datetime(2024, 1, 1).timestamp() != NEW_YEAR


@pytest.mark.parametrize("text", ["2024-01-01T00:00:00", "2024-01-01 00:00:00", "2024-01-01"])
def test_decoded_event_times_and_versions_without_offset_are_utc(host_zone: str, text: str) -> None:
    event = DECODER.decode(
        RawRecord(Kind.EVENT, None, f'{{"security_id":"S","ts":"{text}"}}'.encode(), "e/0/1")
    )
    update = DECODER.decode(
        RawRecord(
            Kind.REFERENCE, b"S", f'{{"version":"{text}"}}'.encode(), "r/0/1", lookup="security"
        )
    )
    assert isinstance(event, Event)
    assert isinstance(update, RefUpdate)
    assert event.event_time == NEW_YEAR
    assert update.version == NEW_YEAR


def test_the_publisher_gives_the_same_versions(host_zone: str) -> None:
    assert version_of("2024-01-01T00:00:00") == NEW_YEAR
    assert version_of("2024-01-01 00:00:00") == NEW_YEAR
    assert version_of(datetime(2024, 1, 1)) == NEW_YEAR
    assert version_of("2024-01-01T09:00:00+09:00") == NEW_YEAR


def test_an_offset_is_honoured() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert epoch_seconds(datetime(2024, 1, 1, 9, tzinfo=tokyo)) == NEW_YEAR
    assert epoch_seconds("2024-01-01T09:00:00+09:00") == NEW_YEAR
    assert epoch_seconds("2024-01-01T00:00:00Z") == NEW_YEAR


def test_fractions_of_a_second_are_kept() -> None:
    assert epoch_seconds("2024-01-01T00:00:00.250") == NEW_YEAR + 0.25
    assert epoch_seconds(datetime(2024, 1, 1, 0, 0, 0, 250_000)) == NEW_YEAR + 0.25


def test_text_that_is_no_time_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        epoch_seconds("yesterday")


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999_999),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59))),
    ],
)
def test_every_datetime_converts_without_raising(value: datetime) -> None:
    """Year 1 read in the host's zone used to raise "year 0 is out of range"."""
    assert isinstance(epoch_seconds(value), float)
