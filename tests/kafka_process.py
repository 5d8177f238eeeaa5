"""A librdkafka mock cluster in a child process, so a test can pause, kill or reshape it.

The in-process `kafka` fixture cannot fail the way a real cluster does; this
one can: `pause` (SIGSTOP) makes every broker stop answering while sockets
stay open, `kill` ends it, and `recreate_topic` deletes a topic and creates it
again, empty and with any number of partitions, as an operator would. The
child drives the mock cluster through librdkafka's own C API (ctypes, the
library confluent-kafka ships), because confluent-kafka's Python API cannot
create or delete topics on a mock cluster.

    python tests/kafka_process.py      # prints the bootstrap address, then reads commands
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

_MOCK_BROKERS = b"1"


def _librdkafka() -> ctypes.CDLL:
    """The librdkafka confluent-kafka loads: the wheel's bundled copy."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    path = next(libs.glob("librdkafka*.so*"))
    lib = ctypes.CDLL(str(path))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_handle_mock_cluster.restype = ctypes.c_void_p
    lib.rd_kafka_handle_mock_cluster.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.rd_kafka_mock_topic_delete.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.rd_kafka_err2str.restype = ctypes.c_char_p
    return lib


def serve() -> None:
    """Child side: start the cluster, print its address, obey one command per stdin line.

    `create TOPIC PARTITIONS` and `delete TOPIC` answer `ok` or `error <reason>`.
    """
    lib = _librdkafka()
    conf = lib.rd_kafka_conf_new()
    error = ctypes.create_string_buffer(512)
    if lib.rd_kafka_conf_set(conf, b"test.mock.num.brokers", _MOCK_BROKERS, error, 512) != 0:
        raise SystemExit(error.value.decode())
    handle = lib.rd_kafka_new(0, conf, error, 512)  # 0: a producer, the mock cluster's owner
    if not handle:
        raise SystemExit(error.value.decode())
    cluster = lib.rd_kafka_handle_mock_cluster(handle)
    print(lib.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "create":
            code = lib.rd_kafka_mock_topic_create(cluster, args[0].encode(), int(args[1]), 1)
        elif command == "delete":
            code = lib.rd_kafka_mock_topic_delete(cluster, args[0].encode())
        else:
            print(f"error unknown command {command!r}", flush=True)
            continue
        print("ok" if code == 0 else f"error {lib.rd_kafka_err2str(code).decode()}", flush=True)


class KafkaProcess:
    """Parent side: one mock cluster in a child process of its own session."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self.bootstrap = self._proc.stdout.readline().strip()
        assert self.bootstrap, "the mock cluster did not start"

    def _command(self, line: str) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        assert answer == "ok", f"{line!r}: {answer or 'no answer'}"

    def create_topic(self, topic: str, partitions: int) -> None:
        self._command(f"create {topic} {partitions}")

    def delete_topic(self, topic: str) -> None:
        self._command(f"delete {topic}")

    def recreate_topic(self, topic: str, partitions: int) -> None:
        """Deleted and created again: empty, offsets from 0, `partitions` partitions."""
        self.delete_topic(topic)
        self.create_topic(topic, partitions)

    def pause(self) -> None:
        """Every broker stops answering; connections stay open, as with a hung host."""
        os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self._proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=30)


@contextmanager
def running() -> Iterator[KafkaProcess]:
    """A mock cluster in a child process for the `with` block; a fixture wraps it."""
    cluster = KafkaProcess()
    try:
        yield cluster
    finally:
        cluster.resume()
        cluster.kill()


if __name__ == "__main__":
    serve()
