"""Signed webhooks: JSON POSTs to an operator's URL, retried with back-off, never on the request path.

Each delivery is signed like Stripe's: ``X-Mdeploy-Signature: t=<unix seconds>,v1=<hex>`` where
``v1`` is HMAC-SHA256, keyed with the gateway's ``webhook_secret``, of ``"<t>." + body``. A
receiver recomputes it, compares in constant time, and refuses old timestamps (replays).
``X-Mdeploy-Delivery`` is the same on every attempt of one event, so receivers can drop repeats.

A delivery is tried up to ``attempts`` times: again after a connection error, a timeout, 429 or
a 5xx, waiting 0.5 s, 1 s, 2 s... (at most ``max_delay_s``, or what Retry-After asks within that);
any other answer ends it. Deliveries run as background tasks, at most ``max_pending`` at a time:
past that an event is dropped and counted, so a dead receiver cannot pile up memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mdeploy-Signature"
DELIVERY_HEADER = "X-Mdeploy-Delivery"
EVENT_HEADER = "X-Mdeploy-Event"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300.0) -> bool:
    """What a receiver does (and the tests): the signature matches and is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class WebhookSender:
    def __init__(
        self,
        secret: str,
        *,
        attempts: int = 6,
        first_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        timeout_s: float = 5.0,
        max_pending: int = 100,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self._secret = secret
        self._attempts = attempts
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._max_pending = max_pending
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._pending: set[asyncio.Task[None]] = set()
        self._on_result = on_result or (lambda result: None)

    def send(self, url: str, event: str, payload: dict[str, Any]) -> None:
        """Start delivering ``payload``; returns at once."""
        if len(self._pending) >= self._max_pending:
            log.warning("webhook %s to %s dropped: %d deliveries pending", event, url, len(self._pending))
            self._on_result("dropped")
            return
        task = asyncio.create_task(self._deliver(url, event, orjson.dumps(payload)), name=f"webhook-{event}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, url: str, event: str, body: bytes) -> None:
        delivery = uuid.uuid4().hex
        delay = self._first_delay_s
        for attempt in range(1, self._attempts + 1):
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self._secret, int(time.time()), body),
                DELIVERY_HEADER: delivery,
                EVENT_HEADER: event,
                "User-Agent": "mdeploy-webhook",
            }
            wait = delay
            try:
                answer = await self._client.post(url, content=body, headers=headers)
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if not _retryable(answer.status_code):
                    result = "delivered" if answer.status_code < 300 else "refused"
                    if result == "refused":
                        log.warning("webhook %s refused by %s: HTTP %d", event, url, answer.status_code)
                    self._on_result(result)
                    return
                problem = f"HTTP {answer.status_code}"
                wait = max(delay, _retry_after(answer.headers.get("Retry-After")))
            if attempt == self._attempts:
                log.warning("webhook %s to %s failed after %d attempts: %s", event, url, attempt, problem)
                self._on_result("failed")
                return
            await asyncio.sleep(min(wait, self._max_delay_s))
            delay = min(delay * 2, self._max_delay_s)

    async def aclose(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()


def _retry_after(value: str | None) -> float:
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
