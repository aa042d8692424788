"""A real local HTTP server that receives webhooks, for tests: it records each POST, and can
answer the first few with 503 so senders must retry."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        payload: dict[str, Any] = orjson.loads(self.body)
        return payload


@dataclass
class WebhookReceiver:
    fail_first: int = 0
    """Answer this many POSTs with ``failure_status`` before accepting."""
    failure_status: int = 503
    deliveries: list[Delivery] = field(default_factory=list)
    refused: int = 0
    attempts: list[dict[str, str]] = field(default_factory=list)
    """Headers of every POST, answered or refused."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.attempts.append(dict(self.headers.items()))
                    if receiver.refused < receiver.fail_first:
                        receiver.refused += 1
                        status = receiver.failure_status
                    else:
                        receiver.deliveries.append(Delivery(dict(self.headers.items()), body))
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/drift"

    def wait_for(self, event: str, timeout_s: float, during: Any = None) -> Delivery:
        """The first delivery of ``event``; ``during()`` runs between looks (to keep traffic going)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = [d for d in self.deliveries if d.event.get("event") == event]
            if found:
                return found[0]
            if during is not None:
                during()
            else:
                time.sleep(0.1)
        raise AssertionError(
            f"no {event} webhook within {timeout_s} s; got {[d.event for d in self.deliveries]}"
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
