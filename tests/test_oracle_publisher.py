"""The reference publisher's queries against a real Oracle, into the mock Kafka cluster.

Oracle-only behaviour: upper-case quoted identifiers with an owner prefix,
TIMESTAMP and NUMBER change columns bound back as the watermark (a
fractional-second TIMESTAMP must not re-read its own row), DATE/TIMESTAMP
versions as epoch seconds. Runs only where `ORACLE_DSN`, `ORACLE_USER` and
`ORACLE_PASSWORD` name a database the user may create tables in.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import MockKafka

from config.base import SettingsError
from dataflows.settings import load_settings
from reference.load import Publisher
from reference.report import LoadReport
from reference.settings import PublisherSettings

pytestmark = pytest.mark.skipif(
    not all(os.environ.get(name) for name in ("ORACLE_DSN", "ORACLE_USER", "ORACLE_PASSWORD")),
    reason="ORACLE_DSN/ORACLE_USER/ORACLE_PASSWORD not set: no Oracle database to test against",
)

TOPIC = "reference"


@pytest.fixture
def oracle() -> Iterator[Any]:
    import oracledb

    conn = oracledb.connect(
        user=os.environ["ORACLE_USER"],
        password=os.environ["ORACLE_PASSWORD"],
        dsn=os.environ["ORACLE_DSN"],
    )
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def table(oracle: Any) -> Iterator[str]:
    """A fresh table, named in lower case as settings would name it; dropped afterwards."""
    name = f"pub_test_{uuid.uuid4().hex[:12]}"
    with oracle.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE "{name.upper()}" ("SECURITY_ID" VARCHAR2(20) PRIMARY KEY, '
            '"CUSIP" VARCHAR2(9), "NAME" VARCHAR2(100), "STATUS" VARCHAR2(10), '
            '"DELETED_AT" DATE, "UPDATED_AT" TIMESTAMP(6) NOT NULL, "SCN" NUMBER(19) NOT NULL)'
        )
    try:
        yield name
    finally:
        with oracle.cursor() as cursor:
            cursor.execute(f'DROP TABLE "{name.upper()}" PURGE')


def put(oracle: Any, table: str, security_id: str, at: datetime, scn: int, **values: Any) -> None:
    import oracledb

    row = {"name": f"Name {security_id}", "status": "ACTIVE", "deleted_at": None, **values}
    with oracle.cursor() as cursor:
        cursor.setinputsizes(p_at=oracledb.DB_TYPE_TIMESTAMP, p_deleted=oracledb.DB_TYPE_DATE)
        cursor.execute(
            f'MERGE INTO "{table.upper()}" t USING (SELECT :p_id AS security_id FROM dual) s '
            "ON (t.security_id = s.security_id) "
            "WHEN MATCHED THEN UPDATE SET name = :p_name, status = :p_status, "
            "deleted_at = :p_deleted, updated_at = :p_at, scn = :p_scn "
            "WHEN NOT MATCHED THEN INSERT (security_id, cusip, name, status, deleted_at, "
            "updated_at, scn) VALUES (:p_id, 'C', :p_name, :p_status, :p_deleted, :p_at, :p_scn)",
            p_id=security_id,
            p_name=row["name"],
            p_status=row["status"],
            p_deleted=row["deleted_at"],
            p_at=at,
            p_scn=scn,
        )
    oracle.commit()


def publish(kafka: MockKafka, work: Path, table: str, change: str, **overrides: Any) -> LoadReport:
    owner = os.environ["ORACLE_USER"]
    # OWNER.TABLE as production names it, unless the user name is outside the pattern (C##...).
    qualified = f"{owner}.{table}" if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", owner) else table
    settings = load_settings(
        PublisherSettings,
        kafka_brokers=kafka.bootstrap,
        publish_database="oracle",
        oracle_user=owner,
        oracle_password=os.environ["ORACLE_PASSWORD"],
        oracle_dsn=os.environ["ORACLE_DSN"],
        publish_table=qualified,
        publish_key_column="security_id",
        publish_columns=["cusip", "name"],
        publish_change_column=change,
        publish_soft_delete_column="deleted_at",
        publish_filter=[{"field": "status", "op": "==", "value": "ACTIVE"}],
        publish_state_path=work / f"{change}.json",
        progress_seconds=0,
        **overrides,
    )
    return Publisher(settings).load()


def latest(kafka: MockKafka) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for msg in kafka.consume_all(TOPIC):
        value = msg.value()
        found[msg.key().decode()] = None if value is None else json.loads(value)
    return found


def at(second: int, micro: int = 0) -> datetime:
    return datetime(2026, 1, 1, 12, 0, second, micro)


@pytest.mark.parametrize("change", ["updated_at", "scn"])
def test_full_incremental_soft_delete_and_filter_on_oracle(
    kafka: MockKafka, tmp_path: Path, oracle: Any, table: str, change: str
) -> None:
    put(oracle, table, "SEC1", at(1, 250_000), 101)
    put(oracle, table, "SEC2", at(2, 500_000), 102)
    put(oracle, table, "SEC3", at(3), 103, status="RETIRED")

    full = publish(kafka, tmp_path, table, change)
    assert full.full
    assert (full.counts.published, full.counts.filtered_out) == (2, 1)
    first = latest(kafka)
    assert set(first) == {"SEC1", "SEC2"}
    version = at(2, 500_000).replace(tzinfo=UTC).timestamp() if change == "updated_at" else 102
    assert first["SEC2"] == {"cusip": "C", "name": "Name SEC2", "version": version}

    again = publish(kafka, tmp_path, table, change)
    assert (again.full, again.counts.read) == (False, 0)  # the fractional watermark is exact

    put(oracle, table, "SEC1", at(4, 1), 104, name="Renamed")
    put(oracle, table, "SEC2", at(5), 105, deleted_at=datetime(2026, 1, 1))
    put(oracle, table, "SEC3", at(6), 106)
    incremental = publish(kafka, tmp_path, table, change)
    assert not incremental.full
    assert (incremental.counts.read, incremental.counts.tombstones) == (3, 1)
    now = latest(kafka)
    assert now["SEC1"]["name"] == "Renamed"
    assert now["SEC2"] is None
    assert now["SEC3"]["name"] == "Name SEC3"
    assert incremental.watermark == (at(6) if change == "updated_at" else 106)


def test_a_column_the_oracle_table_lacks_is_refused_before_anything_is_read(
    kafka: MockKafka, tmp_path: Path, oracle: Any, table: str
) -> None:
    """Names in settings are lower case, Oracle's are upper case: they match; a typo does not."""
    put(oracle, table, "SEC1", at(1), 101)
    typo = [{"field": "staus", "op": "==", "value": "ACTIVE"}]
    with pytest.raises(SettingsError) as refused:
        publish(kafka, tmp_path, table, "scn", publish_filter=typo)
    assert "ENRICH_PUBLISH_FILTER: column 'staus' is not in table" in str(refused.value)
    assert "did you mean 'STATUS'?" in str(refused.value)
    assert "SECURITY_ID, CUSIP, NAME, STATUS, DELETED_AT, UPDATED_AT, SCN" in str(refused.value)
    assert kafka.consume_all(TOPIC) == []
    assert publish(kafka, tmp_path, table, "scn").counts.published == 1


def test_a_binary_double_nan_or_infinity_holds_its_row_back_on_oracle(
    kafka: MockKafka, tmp_path: Path, oracle: Any
) -> None:
    """BINARY_DOUBLE holds NaN and infinities (SQLite cannot hold NaN): neither is published."""
    name = f"pub_nan_{uuid.uuid4().hex[:12]}"
    with oracle.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE "{name.upper()}" ("ID" VARCHAR2(20) PRIMARY KEY, '
            '"PRICE" BINARY_DOUBLE, "SCN" NUMBER(19) NOT NULL)'
        )
    try:
        with oracle.cursor() as cursor:
            for row in (
                "'P1', 1.5, 1",
                "'P2', BINARY_DOUBLE_NAN, 2",
                "'P3', -BINARY_DOUBLE_INFINITY, 3",
            ):
                cursor.execute(f'INSERT INTO "{name.upper()}" VALUES ({row})')
        oracle.commit()
        settings = load_settings(
            PublisherSettings,
            kafka_brokers=kafka.bootstrap,
            publish_database="oracle",
            oracle_user=os.environ["ORACLE_USER"],
            oracle_password=os.environ["ORACLE_PASSWORD"],
            oracle_dsn=os.environ["ORACLE_DSN"],
            publish_table=name,
            publish_key_column="id",
            publish_columns=["price"],
            publish_change_column="scn",
            publish_state_path=tmp_path / "nan.json",
            progress_seconds=0,
        )
        report = Publisher(settings).load()
        assert (report.counts.published, report.counts.held_back, report.watermark) == (1, 2, 3)
        assert latest(kafka) == {"P1": {"price": 1.5, "version": 1}}
    finally:
        with oracle.cursor() as cursor:
            cursor.execute(f'DROP TABLE "{name.upper()}" PURGE')
