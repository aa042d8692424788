"""The dynamic batcher: when it sends, what it merges, and how it fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from core.batching import Batcher, BatchPolicy, Queued
from core.errors import DeadlineExceeded, InvalidInput, ResourceExhausted


class Recorder:
    """A run function that records batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.recorded = asyncio.Condition()
        self.fail_with: Exception | None = None

    async def wait_for_batches(self, count: int) -> None:
        async with self.recorded:
            await self.recorded.wait_for(lambda: len(self.batches) >= count)

    async def __call__(self, batch: Sequence[Queued[int]]) -> Sequence[int | BaseException]:
        self.batches.append([entry.item for entry in batch])
        self.started.set()
        async with self.recorded:
            self.recorded.notify_all()
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [entry.item * 10 if entry.item >= 0 else ValueError("negative") for entry in batch]


# The delay the batcher is configured with where a test checks that a request does NOT wait it out:
# finishing within half of it is the condition, not a speed claim.
DELAY_S = 5.0


async def test_lone_request_goes_at_once_without_delay() -> None:
    run = Recorder()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=8), run)
    # Nothing to wait for: the request runs as the only member of its batch.
    assert await asyncio.wait_for(batcher.submit(4), timeout=DELAY_S / 2) == 40
    assert run.batches == [[4]]
    await batcher.close()


async def test_arrivals_while_a_batch_runs_form_the_next_batch() -> None:
    run = Recorder()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=8), run)
    run.gate.clear()
    first = asyncio.create_task(batcher.submit(0))
    await run.started.wait()
    others = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    run.gate.set()
    assert await asyncio.gather(first, *others) == [0, 10, 20, 30, 40, 50]
    assert run.batches == [[0], [1, 2, 3, 4, 5]]
    await batcher.close()


async def test_batches_never_exceed_max_size() -> None:
    run = Recorder()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=4, max_queue_delay_s=0.05), run)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert [len(b) for b in run.batches] == [4, 4, 2]
    await batcher.close()


async def test_delay_waits_for_the_batch_to_fill_then_sends() -> None:
    run = Recorder()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=64, max_queue_delay_s=0.2), run)
    started = time.perf_counter()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(2))
    assert list(await asyncio.wait_for(asyncio.gather(first, second), timeout=DELAY_S)) == [10, 20]
    assert time.perf_counter() - started > 0.15  # it waited for the delay (0.2 s): the feature under test
    assert run.batches == [[1, 2]]
    await batcher.close()


async def test_preferred_size_sends_without_waiting_out_the_delay() -> None:
    run = Recorder()
    policy = BatchPolicy(max_batch_size=64, max_queue_delay_s=DELAY_S, preferred_batch_sizes=(3,))
    batcher: Batcher[int, int] = Batcher(policy, run)
    sent = asyncio.gather(*(batcher.submit(i) for i in range(3)))
    assert await asyncio.wait_for(sent, timeout=DELAY_S / 2) == [0, 10, 20]
    await batcher.close()


async def test_size_of_counts_rows_and_key_of_keeps_shapes_apart() -> None:
    run = Recorder()
    batcher: Batcher[int, int] = Batcher(
        BatchPolicy(max_batch_size=10, max_queue_delay_s=0.05),
        run,
        size_of=lambda i: i,
        key_of=lambda i: i % 2,
    )
    await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3, 4, 5)))
    assert sorted(sorted(batch) for batch in run.batches) == [[1, 3, 5], [2, 4]]
    with pytest.raises(InvalidInput, match="larger than the maximum batch size 10"):
        await batcher.submit(11)
    await batcher.close()


async def test_failed_batch_fails_every_request_with_its_error() -> None:
    run = Recorder()
    run.fail_with = RuntimeError("model exploded")
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_s=0.05), run)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert [str(r) for r in results] == ["model exploded"] * 3
    run.fail_with = None
    assert await batcher.submit(7) == 70
    await batcher.close()


async def test_one_failed_item_does_not_fail_its_neighbours() -> None:
    run = Recorder()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_s=0.05), run)
    results = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
    assert results[0] == 10
    assert isinstance(results[1], ValueError)
    await batcher.close()


async def test_full_queue_refuses_with_resource_exhausted() -> None:
    run = Recorder()
    run.gate.clear()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=1, max_queue_size=2), run)
    running = asyncio.create_task(batcher.submit(0))
    await run.started.wait()
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="queue is full"):
        await batcher.submit(3)
    run.gate.set()
    assert await asyncio.gather(running, *waiting) == [0, 10, 20]
    await batcher.close()


async def test_request_that_times_out_in_queue_gets_deadline_exceeded() -> None:
    run = Recorder()
    run.gate.clear()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=1), run)
    running = asyncio.create_task(batcher.submit(0))
    await run.started.wait()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(1, timeout_s=0.05)
    assert batcher.queue_length == 0
    run.gate.set()
    assert await running == 0
    assert run.batches == [[0]]
    await batcher.close()


async def test_cancelled_request_leaves_the_queue() -> None:
    run = Recorder()
    run.gate.clear()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=1), run)
    running = asyncio.create_task(batcher.submit(0))
    await run.started.wait()
    abandoned = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    abandoned.cancel()
    await asyncio.sleep(0)
    assert batcher.queue_length == 0
    run.gate.set()
    await running
    await batcher.close()
    assert run.batches == [[0]]


async def test_close_drains_waiting_requests() -> None:
    run = Recorder()
    batcher: Batcher[int, int] = Batcher(BatchPolicy(max_batch_size=2), run)
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    await batcher.close(drain=True)
    assert [await p for p in pending] == [0, 10, 20, 30, 40]


def test_policy_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        BatchPolicy(max_batch_size=0)


async def test_adaptive_batcher_sends_a_lone_request_at_once_despite_a_delay() -> None:
    run = Recorder()
    policy = BatchPolicy(max_batch_size=64, max_queue_delay_s=DELAY_S, adaptive=True, concurrency=2)
    batcher: Batcher[int, int] = Batcher(policy, run)
    assert await asyncio.wait_for(batcher.submit(1), timeout=DELAY_S / 2) == 10
    await batcher.close()


async def test_adaptive_batcher_accumulates_while_a_batch_is_in_flight() -> None:
    run = Recorder()
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=DELAY_S, adaptive=True, concurrency=2)
    batcher: Batcher[int, int] = Batcher(policy, run)
    run.gate.clear()
    first = asyncio.create_task(batcher.submit(0))
    await run.started.wait()
    # The second worker now waits for a full batch (4) instead of sending 1 alone.
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 5)]
    await run.wait_for_batches(2)
    run.gate.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40]
    assert run.batches == [[0], [1, 2, 3, 4]]
    await batcher.close()


async def test_a_batch_full_by_rows_goes_before_its_delay() -> None:
    run = Recorder()
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=DELAY_S, adaptive=True, concurrency=2)
    batcher: Batcher[int, int] = Batcher(policy, run, size_of=lambda rows: rows)
    run.gate.clear()
    first = asyncio.create_task(batcher.submit(1))
    await run.started.wait()
    # 3 + 3 rows wait for the batch to fill; 2 more make 8 rows: it goes without the 5 s delay.
    rest = [asyncio.create_task(batcher.submit(rows)) for rows in (3, 3, 2)]
    await asyncio.wait_for(run.wait_for_batches(2), timeout=DELAY_S / 2)
    run.gate.set()
    assert await asyncio.gather(first, *rest) == [10, 30, 30, 20]
    assert run.batches == [[1], [3, 3, 2]]
    assert batcher.queue_length == 0
    await batcher.close()
