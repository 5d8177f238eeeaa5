"""An as-of lookup's reference topic keeps its history: the publisher sees to the topic's
`min.compaction.lag.ms` (reference/compaction.py).

librdkafka's mock cluster implements neither DescribeConfigs nor
IncrementalAlterConfigs (the last test shows how it fails), so the decision
is tested with a fake admin client that answers as a broker does, through
the same function the publisher calls; the publisher's records still go to
the mock cluster over real sockets.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource
from conftest import MockKafka
from test_publisher import TOPIC, Table, publisher_settings, topic

from commands.publish import main
from config.lookups import DEMO_LOOKUPS, Lookup
from reference.compaction import (
    LAG,
    Lag,
    LagRefused,
    LagUnknown,
    ensure_history_kept,
    needed_lag_ms,
)
from reference.load import Publisher, topic_admin

BROKERS = ["b1:9092", "b2:9092"]
WEEK_MS = 7 * 86_400 * 1000
AS_OF = DEMO_LOOKUPS[0].model_copy(update={"mode": "as_of"})
"""The demo's security lookup, as-of with the default history: seven days."""
COMMAND = (
    "kafka-configs.sh --bootstrap-server b1:9092,b2:9092 --alter --entity-type topics "
    f"--entity-name reference --add-config min.compaction.lag.ms={WEEK_MS}"
)

Answer = str | None | KafkaError
"""What the fake broker answers: the lag's value, no entry for it, or an error."""


class FakeAdmin:
    """Answers DescribeConfigs and IncrementalAlterConfigs for one topic as a broker does.

    `described` are the answers to the describe calls, in turn (the last one
    repeats); a successful alter changes what the next describe shows.
    """

    def __init__(self, *described: Answer, alter: KafkaError | None = None) -> None:
        self._described = list(described)
        self._alter = alter
        self.describes: list[tuple[str, dict[str, Any]]] = []
        self.alters: list[tuple[str, list[tuple[str, str | None, Any]]]] = []

    def describe_configs(
        self, resources: list[ConfigResource], **kwargs: Any
    ) -> dict[ConfigResource, Future[Any]]:
        (resource,) = resources
        self.describes.append((resource.name, kwargs))
        answer = self._described[0] if len(self._described) == 1 else self._described.pop(0)
        future: Future[Any] = Future()
        if isinstance(answer, KafkaError):
            future.set_exception(KafkaException(answer))
        else:
            entries = {"cleanup.policy": ConfigEntry("cleanup.policy", "compact")}
            if answer is not None:
                source = ConfigSource.DEFAULT_CONFIG if answer == "0" else None
                entries[LAG] = ConfigEntry(LAG, answer, **({"source": source} if source else {}))
            future.set_result(entries)
        return {resource: future}

    def incremental_alter_configs(
        self, resources: list[ConfigResource], **kwargs: Any
    ) -> dict[ConfigResource, Future[Any]]:
        (resource,) = resources
        entries = [(e.name, e.value, e.incremental_operation) for e in resource.incremental_configs]
        self.alters.append((resource.name, entries))
        future: Future[Any] = Future()
        if self._alter is not None:
            future.set_exception(KafkaException(self._alter))
        else:
            self._described = [entries[0][1]]
            future.set_result(None)
        return {resource: future}


class NoAdmin:
    """An admin client a test must never get asked anything of."""

    def describe_configs(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a latest-mode lookup asked the brokers for the topic's config")

    incremental_alter_configs = describe_configs


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return Table(tmp_path / "reference.sqlite")


def error(code: int, text: str = "from the fake broker") -> KafkaError:
    return KafkaError(code, text)


def ensure(admin: Any, lookup: Lookup = AS_OF) -> Lag | None:
    return ensure_history_kept(admin, BROKERS, TOPIC, lookup, timeout=5)


def publisher_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "enrich.publisher" and r.levelno == level
    ]


def test_the_lag_needed_is_the_history_window_in_whole_ms_and_none_for_latest() -> None:
    assert needed_lag_ms(AS_OF) == WEEK_MS
    assert needed_lag_ms(AS_OF.model_copy(update={"history_seconds": 1.0001})) == 1001
    assert needed_lag_ms(DEMO_LOOKUPS[0]) is None


@pytest.mark.parametrize(
    ("current", "was"),
    [("0", 0), (None, 0), ("86400000", 86_400_000)],
    ids=["broker default 0", "no entry", "one day"],
)
def test_a_lag_below_the_window_is_raised_to_it_with_one_info_line(
    caplog: pytest.LogCaptureFixture, current: str | None, was: int
) -> None:
    admin = FakeAdmin(current)
    with caplog.at_level(logging.DEBUG, logger="enrich.publisher"):
        assert ensure(admin) is Lag.RAISED
    assert admin.alters == [(TOPIC, [(LAG, str(WEEK_MS), AlterConfigOpType.SET)])]
    assert admin.describes == [(TOPIC, {"request_timeout": 5})]
    (line,) = publisher_lines(caplog, logging.INFO)
    assert f"set {LAG} of Kafka topic 'reference' to {WEEK_MS} (was {was})" in line
    assert "lookup 'security' is as_of with a history of 604,800 s (history_seconds)" in line
    (fields,) = [vars(r) for r in caplog.records if r.levelno == logging.INFO]
    assert (fields["topic"], fields["min_compaction_lag_ms"], fields["was_ms"]) == (
        TOPIC,
        WEEK_MS,
        was,
    )


@pytest.mark.parametrize("current", [str(WEEK_MS), str(30 * 86_400_000)])
def test_a_lag_at_least_the_window_is_left_alone(
    caplog: pytest.LogCaptureFixture, current: str
) -> None:
    admin = FakeAdmin(current)
    with caplog.at_level(logging.INFO, logger="enrich.publisher"):
        assert ensure(admin) is Lag.KEPT
    assert admin.alters == []
    assert publisher_lines(caplog, logging.INFO) == []


def test_a_latest_lookup_asks_the_brokers_nothing() -> None:
    assert ensure(NoAdmin(), DEMO_LOOKUPS[0]) is None


@pytest.mark.parametrize(
    ("admin", "action"),
    [
        (FakeAdmin(error(KafkaError.TOPIC_AUTHORIZATION_FAILED)), "read"),
        (FakeAdmin("0", alter=error(KafkaError.CLUSTER_AUTHORIZATION_FAILED)), "set"),
        (FakeAdmin("0", alter=error(KafkaError.TOPIC_AUTHORIZATION_FAILED)), "set"),
        (FakeAdmin("0", alter=error(KafkaError._UNSUPPORTED_FEATURE)), "set"),
        (FakeAdmin("0", alter=error(KafkaError.POLICY_VIOLATION)), "set"),
    ],
    ids=["describe not authorized", "cluster", "topic", "unsupported", "policy"],
)
def test_a_refusal_stops_with_the_value_needed_and_the_command_that_sets_it(
    admin: FakeAdmin, action: str
) -> None:
    with pytest.raises(LagRefused) as refused:
        ensure(admin)
    message = str(refused.value)
    assert message.startswith(f"the Kafka brokers refused to {action} {LAG} of Kafka topic")
    assert "'reference'" in message and "from the fake broker" in message
    assert str(WEEK_MS) in message
    assert f"`{COMMAND}`" in message
    assert refused.value.exit_code == 2
    assert refused.value.fields == {"topic": TOPIC, "min_compaction_lag_ms": WEEK_MS}


@pytest.mark.parametrize("code", [KafkaError._TIMED_OUT, KafkaError._TRANSPORT])
def test_no_answer_fails_the_load_so_the_next_one_retries(code: int) -> None:
    """Not a refusal: `LagUnknown` is an ordinary load failure (exit 1, retried in
    interval mode), not a KafkaFault that ends the publisher."""
    with pytest.raises(LagUnknown) as unknown:
        ensure(FakeAdmin(error(code)))
    assert not isinstance(unknown.value, LagRefused)
    assert "The next load tries again" in str(unknown.value)
    assert COMMAND in str(unknown.value)


def test_a_topic_that_does_not_exist_is_reported_and_nothing_is_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = FakeAdmin(error(KafkaError.UNKNOWN_TOPIC_OR_PART))
    with caplog.at_level(logging.INFO, logger="enrich.publisher"):
        assert ensure(admin) is Lag.NO_TOPIC
    assert admin.alters == []
    (warning,) = publisher_lines(caplog, logging.WARNING)
    assert "Kafka topic 'reference' does not exist yet: the publisher creates no topic" in warning
    assert (
        "kafka-topics.sh --bootstrap-server b1:9092,b2:9092 --create --topic reference "
        "--config cleanup.policy=compact "
        f"--config {LAG}={WEEK_MS}"
    ) in warning


def as_of_publisher(
    kafka: MockKafka, work: Path, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> Publisher:
    monkeypatch.setattr("reference.load.topic_admin", lambda brokers, config: admin)
    return Publisher(publisher_settings(kafka, work, lookups=[AS_OF]))


def test_the_publisher_raises_the_lag_before_a_load_and_a_latest_lookup_skips_it(
    kafka: MockKafka, tmp_path: Path, table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put("SEC1", 100)
    admin = FakeAdmin("0")
    as_of_publisher(kafka, tmp_path, admin, monkeypatch).load()
    assert len(admin.alters) == 1
    assert set(topic(kafka)) == {"SEC1"}
    monkeypatch.setattr("reference.load.topic_admin", lambda brokers, config: NoAdmin())
    table.put("SEC2", 200)
    Publisher(publisher_settings(kafka, tmp_path)).load()
    assert set(topic(kafka)) == {"SEC1", "SEC2"}


def test_a_topic_created_by_the_load_gets_its_lag_after_the_load(
    kafka: MockKafka, tmp_path: Path, table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mock cluster creates the topic on the first record, as brokers that auto-create
    topics do; the fake admin says it is missing until then."""
    table.put("SEC1", 100)
    admin = FakeAdmin(error(KafkaError.UNKNOWN_TOPIC_OR_PART), "0")
    report = as_of_publisher(kafka, tmp_path, admin, monkeypatch).load()
    assert report.counts.published == 1
    assert len(admin.describes) == 2
    assert admin.alters == [(TOPIC, [(LAG, str(WEEK_MS), AlterConfigOpType.SET)])]


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """`main` configures the root logger onto the captured stderr and handles SIGTERM."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGTERM, sigterm)


@pytest.mark.usefixtures("restore_process_state")
@pytest.mark.parametrize(
    ("alter", "args", "status"),
    [
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, ["--interval", "60"], 2),
        (KafkaError._TIMED_OUT, ["--once"], 1),
    ],
    ids=["refused: exit 2, also in interval mode", "no answer: the load failed, exit 1"],
)
def test_the_command_stops_before_publishing_anything(
    kafka: MockKafka,
    tmp_path: Path,
    table: Table,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    alter: int,
    args: list[str],
    status: int,
) -> None:
    table.put("SEC1", 100)
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", kafka.bootstrap)
    monkeypatch.setenv("ENRICH_PUBLISH_SQLITE_PATH", str(tmp_path / "reference.sqlite"))
    monkeypatch.setenv("ENRICH_PUBLISH_STATE_PATH", str(tmp_path / "state.json"))
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps([AS_OF.model_dump(mode="json")]))
    admin = FakeAdmin("0", alter=error(alter, "denied"))
    monkeypatch.setattr("reference.load.topic_admin", lambda brokers, config: admin)
    assert main(args) == status
    stderr = capsys.readouterr().err
    if status == 2:
        assert f"ERROR enrich.publisher the Kafka brokers refused to set {LAG}" in stderr
        assert "Traceback" not in stderr
    else:
        assert "ERROR enrich.publisher the load failed" in stderr
        assert f"LagUnknown: could not set {LAG}" in stderr
    assert f"--entity-name reference --add-config {LAG}={WEEK_MS}" in stderr
    assert topic(kafka) == {}
    assert not (tmp_path / "state.json").exists()


def test_against_the_mock_cluster_the_check_fails_the_load_for_want_of_a_controller(
    kafka: MockKafka,
) -> None:
    """What the mock cluster (librdkafka 2.16) does with these calls: it implements neither.

    Its ApiVersions answer lists no DescribeConfigs (key 32) nor
    IncrementalAlterConfigs (key 44), and its metadata names controller id 0,
    which is none of its brokers (they are numbered from 1). librdkafka sends a
    topic's config request to the controller, so it waits for one until the
    request timeout and reports `_TIMED_OUT` ("Failed while waiting for
    controller"): the check raises `LagUnknown`, the load fails (exit 1) and
    an as-of lookup cannot be published to the mock. Sent to a broker by id,
    the same request is refused at once as `_UNSUPPORTED_FEATURE`.
    """
    kafka.produce(TOPIC, [(b"SEC1", b"{}")])
    admin = topic_admin([kafka.bootstrap], {})
    started = time.monotonic()
    with pytest.raises(LagUnknown, match="waiting for controller"):
        ensure_history_kept(admin, [kafka.bootstrap], TOPIC, AS_OF, timeout=1)
    assert time.monotonic() - started < 10
    resource = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)
    (future,) = admin.describe_configs([resource], request_timeout=1, broker=1).values()
    with pytest.raises(KafkaException) as unsupported:
        future.result(timeout=10)
    assert unsupported.value.args[0].code() == KafkaError._UNSUPPORTED_FEATURE
