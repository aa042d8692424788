"""The drift monitor: samples answered requests, sketches them off the request path, and reports.

On the request path :meth:`DriftMonitor.observe` costs one random draw, and for a sampled
request an append to a bounded queue (a full queue drops the sample and counts it). Every
``flush_s`` a background task takes the queue and adds each version's rows to its live sketches
(``gateway.drift.live``) in one batch per version and window; every ``publish_s`` it publishes
the buckets that changed for the other gateway processes (``gateway.drift.shared``), and a
report merges theirs with its own.

A version's reference profile is read once from its stored package (``reference.json``,
checked against the sha256 the manifest records). A version without one is reported as
"no reference", never an error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zipfile
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.tasks import cancelled
from gateway.catalog import ServedVersion
from gateway.drift.live import Bucket, VersionSketches, WindowProfile
from gateway.drift.report import ArmsDrift, DriftReport, arms_drift, drift_report
from gateway.drift.shared import Published, SharedBuckets, flush_and_publish
from gateway.drift.windows import DEFAULT_WINDOWS, Window, windows_of
from modelpkg import Manifest
from modelpkg.reference import REFERENCE_ENTRY, ReferenceProfile, parse_profile, profile_digest

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
"""Sampled requests waiting to be sketched; more are dropped (and counted), never waited for."""


@dataclass(frozen=True)
class StoredVersion:
    """Where a version's package is and what its manifest says (from the registry)."""

    manifest: Manifest
    package: Path


VersionLookup = Callable[[str, str], Awaitable[StoredVersion]]


@dataclass(slots=True)
class _Sample:
    served: ServedVersion
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]


class DriftMonitor:
    def __init__(
        self,
        lookup: VersionLookup,
        sample_rate: float,
        *,
        windows: Mapping[str, Window] | None = None,
        shared: SharedBuckets | None = None,
        flush_s: float = 0.2,
        publish_s: float = 2.0,
        seed: int | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._lookup = lookup
        self.sample_rate = sample_rate
        self.windows = dict(windows) if windows is not None else windows_of(DEFAULT_WINDOWS)
        self._shared = shared
        self._flush_s = flush_s
        self._publish_s = publish_s
        self._random = random.Random(seed).random
        self._queue: deque[_Sample] = deque()
        self._sketches: dict[tuple[str, str], VersionSketches | None] = {}
        self._on_dropped = on_dropped or (lambda count: None)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def observe(
        self,
        served: ServedVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        request_id: str = "",
    ) -> None:
        """On the request path: keep this answered request for sketching, if it is sampled."""
        if self.sample_rate < 1.0 and self._random() >= self.sample_rate:
            return
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            self._on_dropped(1)
            return
        if served.max_batch_size <= 0:  # a model without batching: one row, without its dimension
            inputs = {name: np.asarray(array)[np.newaxis] for name, array in inputs.items()}
            outputs = {name: np.asarray(array)[np.newaxis] for name, array in outputs.items()}
        self._queue.append(_Sample(served, inputs, outputs))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="drift-sketching")

    async def close(self) -> None:
        await cancelled(self._task)
        try:  # what this process saw last still counts in the others' reports
            await self.flush()
            await self.publish()
        except Exception:
            log.exception("drift sketches not published at shutdown")
        self._queue.clear()
        # The sketches are C++ objects: let them go with the app, not at interpreter exit, where
        # nanobind reports every one still alive as a leak.
        self._sketches.clear()

    async def flush(self) -> None:
        """Sketch every queued sample: one batch per version."""
        batches: dict[tuple[str, str], list[_Sample]] = {}
        while self._queue:
            sample = self._queue.popleft()
            batches.setdefault((sample.served.name, sample.served.version), []).append(sample)
        for key, samples in batches.items():
            sketches = await self._version(*key)
            if sketches is None:
                continue
            sketches.ingest(_joined([s.inputs for s in samples]), _joined([s.outputs for s in samples]))

    async def report(self, model: str, version: str, window: str) -> DriftReport:
        """``version``'s drift in ``window``, over every gateway process's traffic."""
        self._check_window(window)
        await self.flush()
        sketches = await self._version(model, version)
        live = await self._merged(sketches, window) if sketches is not None else None
        report = drift_report(model, version, window, sketches.reference if sketches else None, live)
        return report.model_copy(update={"windows": list(self.windows)})

    async def between(self, model: str, stable: str, candidate: str, window: str) -> ArmsDrift | None:
        """How far ``candidate``'s live inputs and outputs are from ``stable``'s (rollouts);
        None when either version has no reference profile (so no live sketches)."""
        self._check_window(window)
        await self.flush()
        first, second = await self._version(model, stable), await self._version(model, candidate)
        if first is None or second is None:
            return None
        return arms_drift(
            stable, candidate, window, await self._merged(first, window), await self._merged(second, window)
        )

    def keep_only(self, served: set[tuple[str, str]]) -> None:
        """Let go of the sketches of versions no longer served (deleted ones)."""
        for key in [key for key in self._sketches if key not in served]:
            del self._sketches[key]

    async def publish(self) -> None:
        """Hand the buckets that took rows since last time to the other gateway processes."""
        if self._shared is None:
            return
        changed = [
            Published(model, version, self.windows[name], bucket.start, bucket.to_bytes())
            for (model, version), sketches in self._sketches.items()
            if sketches is not None
            for name, bucket in sketches.take_changed()
        ]
        if changed:
            await self._shared.publish(changed)

    def _check_window(self, window: str) -> None:
        if window not in self.windows:
            raise InvalidInput(f"window must be one of {', '.join(self.windows)}, not {window!r}")

    async def _merged(self, sketches: VersionSketches, window: str) -> WindowProfile:
        published: list[Bucket] = []
        if self._shared is not None:
            model, version = sketches.key
            for raw in await self._shared.fetch(model, version, self.windows[window]):
                try:
                    published.append(sketches.bucket_of(raw))
                except (ValueError, KeyError) as error:  # another reference (a re-pushed version)
                    log.warning("published drift bucket of %s version %s skipped: %s", model, version, error)
        return sketches.window(window, published)

    async def _run(self) -> None:
        await flush_and_publish(self.flush, self.publish, self._flush_s, self._publish_s, "drift sketches")

    async def _version(self, model: str, version: str) -> VersionSketches | None:
        key = (model, version)
        if key not in self._sketches:
            stored = await self._lookup(model, version)
            reference = self._reference(model, version, stored)
            labels = stored.manifest.labels
            self._sketches[key] = (
                VersionSketches(
                    reference,
                    list(labels.names) if labels else [],
                    labels.output if labels else None,
                    windows=self.windows,
                    key=key,
                )
                if reference is not None
                else None
            )
        return self._sketches[key]

    @staticmethod
    def _reference(model: str, version: str, stored: StoredVersion) -> ReferenceProfile | None:
        summary = stored.manifest.reference
        if summary is None:
            return None
        try:
            with zipfile.ZipFile(stored.package) as archive:
                raw = archive.read(REFERENCE_ENTRY)
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            log.warning("reference profile of %s version %s unreadable: %s", model, version, error)
            return None
        if profile_digest(raw) != summary.sha256:
            log.warning("reference profile of %s version %s does not match its manifest", model, version)
            return None
        return parse_profile(raw)


def _joined(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The samples' tensors, row-concatenated by name (names every sample has)."""
    names = set(parts[0]).intersection(*parts[1:]) if len(parts) > 1 else set(parts[0])
    joined: dict[str, np.ndarray] = {}
    for name in names:
        arrays = [np.asarray(part[name]) for part in parts]
        if all(a.ndim >= 1 for a in arrays) and len({a.shape[1:] for a in arrays}) == 1:
            joined[name] = np.concatenate(arrays)
    return joined
