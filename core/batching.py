"""A dynamic batcher: concurrent submissions merged into batches, run, and answered.

It only queues and times. What a batch means (concatenating tensors, a gRPC call) is the
``run_batch`` callable's business. The policy is Triton's dynamic batcher:

* A worker takes the oldest waiting item and every compatible item behind it (same ``key``)
  up to ``max_batch_size`` (measured with ``size_of``, e.g. rows).
* With ``max_queue_delay_s`` 0 the batch goes at once: a lone request adds no delay, and
  requests that arrive while workers are busy accumulate into the next batch. With a delay,
  the worker waits up to that long after the oldest item for the batch to fill (or reach a
  preferred size); ``adaptive`` waits so only while another batch is in flight.
* ``concurrency`` workers run batches at the same time (Triton's instance count).
* A full queue refuses new items (``ResourceExhausted``); an item whose deadline passes while
  it waits fails with ``DeadlineExceeded``; a batch that raises fails each of its items with
  that error, and ``run_batch`` may also return an exception for one item.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from core.errors import DeadlineExceeded, InvalidInput, ResourceExhausted, Unavailable

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchPolicy:
    """How a batcher forms batches; every bound has a default that suits one machine."""

    max_batch_size: int = 1
    """Largest batch, in ``size_of`` units (rows for tensors)."""
    max_queue_delay_s: float = 0.0
    """How long the oldest item may wait for the batch to fill; 0 sends at once."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Sizes at which a batch goes without waiting out the delay."""
    max_queue_size: int = 1024
    """Items that may wait; more are refused with ResourceExhausted."""
    concurrency: int = 1
    """Batches run at the same time."""
    merge: bool = True
    """False runs each item alone (a model without dynamic batching)."""
    adaptive: bool = False
    """Wait out the delay only while another batch is in flight: no added latency at low load."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue_size < 1 or self.concurrency < 1:
            raise ValueError("max_batch_size, max_queue_size and concurrency must be >= 1")
        if self.max_queue_delay_s < 0:
            raise ValueError("max_queue_delay_s must be >= 0")


@dataclass(eq=False, slots=True)
class Queued(Generic[T]):
    """One waiting item, with the times the run function needs for statistics."""

    item: T
    size: int
    key: Hashable
    enqueued_ns: int
    deadline: float | None  # time.monotonic() value, or None for no deadline
    future: asyncio.Future[Any] = field(repr=False)
    started_ns: int = 0


RunBatch = Callable[[Sequence[Queued[T]]], Awaitable[Sequence[R | BaseException]]]


class Batcher(Generic[T, R]):
    """Queue of submissions served by ``policy.concurrency`` workers running ``run_batch``."""

    def __init__(
        self,
        policy: BatchPolicy,
        run_batch: RunBatch[T, R],
        *,
        size_of: Callable[[T], int] = lambda _: 1,
        key_of: Callable[[T], Hashable] = lambda _: None,
        name: str = "batcher",
    ) -> None:
        self.policy = policy
        self.name = name
        self._run_batch = run_batch
        self._size_of = size_of
        self._key_of = key_of
        self._queue: deque[Queued[T]] = deque()
        self._queued_size = 0  # sum of the waiting items' sizes
        self._arrived = asyncio.Event()  # wakes idle workers
        # Wakes a worker waiting for its batch to fill: only once enough has arrived (or, with
        # preferred sizes, at every arrival), not once per arrival with a new timer each time.
        self._filled = asyncio.Event()
        self._closing = False
        self._workers: list[asyncio.Task[None]] = []
        self.batches_in_flight = 0

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"{self.name}-worker-{i}")
                for i in range(self.policy.concurrency)
            ]

    async def submit(self, item: T, *, timeout_s: float | None = None) -> R:
        """Queue ``item`` and wait for its result; ``timeout_s`` bounds the time spent queued."""
        if self._closing:
            raise Unavailable(f"{self.name} is shutting down; retry on another replica")
        size = self._size_of(item)
        if size > self.policy.max_batch_size:
            raise InvalidInput(
                f"batch of {size} is larger than the maximum batch size {self.policy.max_batch_size}"
            )
        if len(self._queue) >= self.policy.max_queue_size:
            raise ResourceExhausted(
                f"{self.name}: queue is full ({self.policy.max_queue_size} waiting); retry later",
                headers={"Retry-After": "1"},
            )
        self.start()
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        entry: Queued[T] = Queued(
            item, size, self._key_of(item), time.perf_counter_ns(), deadline, loop.create_future()
        )
        self._queue.append(entry)
        self._queued_size += size
        self._arrived.set()
        if self._queued_size >= self.policy.max_batch_size or self.policy.preferred_batch_sizes:
            self._filled.set()
        try:
            if timeout_s is None:
                # Not shielded: a caller that goes away cancels its future, which the queue and
                # the batch skip (a done future is never run nor answered).
                return cast(R, await entry.future)
            # Mark errors as retrieved: a caller that went away must not leave a warning behind.
            entry.future.add_done_callback(lambda f: f.cancelled() or f.exception())
            done, _ = await asyncio.wait((entry.future,), timeout=timeout_s)
            if not done and entry in self._queue:
                self._remove(entry)
                raise DeadlineExceeded(f"{self.name}: request timed out after {timeout_s:.3f}s in queue")
            # Already running: execution is not interrupted; wait for its result.
            return cast(R, await asyncio.shield(entry.future))
        except asyncio.CancelledError:
            # The caller went away: drop the item if it has not started.
            if entry in self._queue:
                self._remove(entry)
            raise

    async def close(self, *, drain: bool = True) -> None:
        """Refuse new items; finish (``drain``) or fail the waiting ones; stop the workers."""
        self._closing = True
        if not drain:
            while self._queue:
                self._fail(self._queue.popleft(), Unavailable(f"{self.name} was stopped"))
            self._queued_size = 0
        self._arrived.set()
        self._filled.set()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            await self._execute(batch)

    async def _next_batch(self) -> list[Queued[T]] | None:
        while True:
            self._expire()
            if self._queue:
                break
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        await self._wait_for_fill()
        return self._take()

    async def _wait_for_fill(self) -> None:
        policy = self.policy
        if policy.max_queue_delay_s <= 0 or not policy.merge:
            return
        if policy.adaptive and self.batches_in_flight == 0:
            return
        first = self._queue[0]
        send_at = first.enqueued_ns / 1e9 + policy.max_queue_delay_s
        while not self._closing:
            ready = self._compatible_size(first.key)
            if ready >= policy.max_batch_size or ready in policy.preferred_batch_sizes:
                return
            remaining = send_at - time.perf_counter_ns() / 1e9
            if remaining <= 0:
                return
            self._filled.clear()
            try:
                await asyncio.wait_for(self._filled.wait(), remaining)
            except TimeoutError:
                return
            if not self._queue or self._queue[0] is not first:
                return  # the oldest item left (timed out or taken): form the batch now

    def _compatible_size(self, key: Hashable) -> int:
        return sum(entry.size for entry in self._queue if entry.key == key)

    def _take(self) -> list[Queued[T]]:
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch = [first]
        if not self.policy.merge:
            self._queued_size -= first.size
            return batch
        total = first.size
        kept: deque[Queued[T]] = deque()
        while self._queue and total < self.policy.max_batch_size:
            entry = self._queue.popleft()
            if entry.key == first.key and total + entry.size <= self.policy.max_batch_size:
                batch.append(entry)
                total += entry.size
            else:
                kept.append(entry)
        self._queue.extendleft(reversed(kept))
        self._queued_size -= total
        return batch

    def _expire(self) -> None:
        now = time.monotonic()
        for entry in [e for e in self._queue if e.future.done()]:
            self._remove(entry)
        for entry in [e for e in self._queue if e.deadline is not None and e.deadline <= now]:
            self._remove(entry)
            self._fail(entry, DeadlineExceeded(f"{self.name}: request timed out in queue"))

    def _remove(self, entry: Queued[T]) -> None:
        self._queue.remove(entry)
        self._queued_size -= entry.size

    async def _execute(self, batch: list[Queued[T]]) -> None:
        batch = [entry for entry in batch if not entry.future.done()]
        if not batch:
            return
        started = time.perf_counter_ns()
        for entry in batch:
            entry.started_ns = started
        self.batches_in_flight += 1
        try:
            results = await self._run_batch(batch)
        except Exception as error:  # a failed batch fails every waiter with the error
            for entry in batch:
                self._fail(entry, error)
            return
        finally:
            self.batches_in_flight -= 1
        if len(results) != len(batch):
            mismatch = RuntimeError(f"{self.name}: batch of {len(batch)} produced {len(results)} results")
            for entry in batch:
                self._fail(entry, mismatch)
            return
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._fail(entry, result)
            elif not entry.future.done():
                entry.future.set_result(result)

    @staticmethod
    def _fail(entry: Queued[T], error: BaseException) -> None:
        if not entry.future.done():
            entry.future.set_exception(error)
