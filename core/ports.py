"""A free TCP port on loopback, for a listener whose port must be chosen before it starts.

The gRPC API's port 0 means "off", so tests and benchmarks that want one pick a port this way;
another process could take it in between, which then fails loudly at bind (never silently).
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
