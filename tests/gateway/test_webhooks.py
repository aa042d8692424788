"""Signed webhooks to a real local HTTP server: retried with back-off, signed, bounded."""

from __future__ import annotations

import asyncio
from collections import Counter

from core.ports import free_port
from gateway.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, WebhookSender, signature, verify
from tests.webhook_receiver import WebhookReceiver

SECRET = "a-webhook-secret-for-the-tests"


async def settled(sender: WebhookSender, results: Counter[str], count: int) -> None:
    for _ in range(500):
        if sum(results.values()) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"deliveries not settled: {results}")


async def test_a_failed_delivery_is_retried_with_the_same_id_and_a_valid_signature() -> None:
    receiver = WebhookReceiver(fail_first=2)
    results: Counter[str] = Counter()
    sender = WebhookSender(SECRET, first_delay_s=0.01, on_result=lambda r: results.update([r]))
    try:
        sender.send(receiver.url, "drift.alert", {"model": "m", "state": "firing"})
        await settled(sender, results, 1)
        assert results == Counter(delivered=1)
        assert len(receiver.attempts) == 3
        assert len({attempt[DELIVERY_HEADER] for attempt in receiver.attempts}) == 1
        [delivery] = receiver.deliveries
        assert delivery.event == {"model": "m", "state": "firing"}
        assert delivery.headers[EVENT_HEADER] == "drift.alert"
        assert verify(SECRET, delivery.headers[SIGNATURE_HEADER], delivery.body)
        assert not verify(SECRET, delivery.headers[SIGNATURE_HEADER], delivery.body + b" ")
    finally:
        await sender.aclose()
        receiver.close()


async def test_a_refusal_is_not_retried_and_an_unreachable_receiver_fails_after_its_attempts() -> None:
    receiver = WebhookReceiver(fail_first=5, failure_status=400)
    results: Counter[str] = Counter()
    sender = WebhookSender(SECRET, attempts=3, first_delay_s=0.01, on_result=lambda r: results.update([r]))
    try:
        sender.send(receiver.url, "drift.alert", {})
        sender.send(f"http://127.0.0.1:{free_port()}/nobody-listens", "drift.alert", {})
        await settled(sender, results, 2)
        assert results == Counter(refused=1, failed=1)
        assert len(receiver.attempts) == 1
    finally:
        await sender.aclose()
        receiver.close()


async def test_past_max_pending_an_event_is_dropped_not_queued() -> None:
    receiver = WebhookReceiver(fail_first=1000)
    results: Counter[str] = Counter()
    sender = WebhookSender(SECRET, max_pending=2, first_delay_s=5, on_result=lambda r: results.update([r]))
    try:
        for _ in range(3):
            sender.send(receiver.url, "drift.alert", {})
        assert results == Counter(dropped=1)
    finally:
        await sender.aclose()
        receiver.close()


def test_an_old_signature_is_refused() -> None:
    header = signature(SECRET, 1_000_000_000, b"{}")
    assert not verify(SECRET, header, b"{}")
    assert not verify(SECRET, "t=x,v1=y", b"{}")
