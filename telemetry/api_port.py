"""Is the port Bytewax's API server (and with it the metrics endpoint) will listen on free?

When it is taken, Bytewax's web server thread panics and the dataflow runs on
without metrics, saying so only in a Rust panic among the start-up lines. The
entry point asks first, the way the server binds (all interfaces, address
reuse on), and refuses to start, or with `ENRICH_METRICS_PORT_IN_USE=warn`
logs one line and goes on without metrics.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from contextlib import closing

ENABLED = "BYTEWAX_DATAFLOW_API_ENABLED"
PORT = "BYTEWAX_DATAFLOW_API_PORT"
DEFAULT_PORT = 3030
"""Bytewax's own default for `BYTEWAX_DATAFLOW_API_PORT`."""


def taken_api_port(env: Mapping[str, str]) -> int | None:
    """The API port when the server is enabled and something else already listens there."""
    if ENABLED not in env:
        return None
    try:
        port = int(env.get(PORT, DEFAULT_PORT))
    except ValueError:
        return None  # Bytewax reports an unparsable port itself.
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return port
            raise
    return None


def port_message(port: int) -> str:
    return (
        f"the metrics port {port} ({PORT}) is already in use, so Bytewax's API server "
        "cannot serve /metrics; free the port or choose another"
    )
