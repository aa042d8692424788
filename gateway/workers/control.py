"""The supervisor ⇄ worker channel: one Unix socket pair per worker, lines of text.

The supervisor sends one JSON line, the worker's configuration (its settings, secrets included,
never put on a command line or in the environment), and keeps its end open; the worker answers
``ready`` once it listens. End of file on either side means the other process is gone: a worker
whose supervisor died stops by itself instead of holding the ports.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import GatewaySettings

READY = b"ready\n"
_MAX_LINE = 1 << 20


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    """1..N, as the supervisor's log names the worker."""
    settings: GatewaySettings
    """The supervisor's settings with its ports and backends resolved (port 0 made concrete,
    the local inference server named)."""
    lock: Path
    """The leadership lock file (``gateway.leadership.FileLockLeadership``)."""

    def encode(self) -> bytes:
        payload = {
            "index": self.index,
            "lock": str(self.lock),
            "settings": self.settings.model_dump(mode="json"),
        }
        return json.dumps(payload).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> WorkerConfig:
        payload = json.loads(line)
        # model_validate, not the constructor: the values are final, the environment must not add to them.
        settings = GatewaySettings.model_validate(payload["settings"])
        return cls(int(payload["index"]), settings, Path(payload["lock"]))


def read_line(channel: socket.socket) -> bytes:
    """One line (blocking); empty at end of file."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = channel.recv(4096)
        if not chunk:
            return b""
        data += chunk
        if len(data) > _MAX_LINE:
            raise ValueError("control line too long")
    return bytes(data)
