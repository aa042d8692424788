"""Live profiles: the same features as a version's reference profile, sketched from its traffic.

Per model version, one array of KLL sketches (DataSketches' ``vector_of_kll_floats_sketches``:
one C++ call updates every feature of a batch of rows) per time bucket of each window
(``gateway.drift.windows``: 30 s buckets for the last 5 minutes...). A window's profile merges
its buckets, and the buckets other gateway processes published (``gateway.drift.shared``);
buckets older than their window are dropped.

Features come out of requests as the reference named them (``modelpkg.reference.features_of``);
outputs too, with a classifier's confidence and predicted-class counts. Rows are what the
:class:`gateway.drift.monitor.DriftMonitor` sampled; this module only sketches and reads.
"""

from __future__ import annotations

import base64
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from core.answers import predicted_labels, probabilities
from gateway.drift.windows import DEFAULT_WINDOWS, Window, windows_of
from modelpkg.reference import SKETCH_K, ReferenceProfile, features_of


def _vector(dimensions: int) -> Any:
    from datasketches import vector_of_kll_floats_sketches  # type: ignore[import-untyped]  # no stubs

    return vector_of_kll_floats_sketches(SKETCH_K, max(1, dimensions))


@dataclass
class Bucket:
    start: int
    inputs: Any
    outputs: Any
    classes: Counter[str] = field(default_factory=Counter)
    rows: int = 0

    def to_bytes(self) -> bytes:
        """What another gateway process needs to merge this bucket into its window."""
        return orjson.dumps(
            {
                "start": self.start,
                "rows": self.rows,
                "classes": dict(self.classes),
                "inputs": [base64.b64encode(raw).decode() for raw in self.inputs.serialize()],
                "outputs": [base64.b64encode(raw).decode() for raw in self.outputs.serialize()],
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes, input_features: int, output_features: int) -> Bucket:
        """A published bucket; ValueError when it does not fit this reference's features."""
        data = orjson.loads(raw)
        sketches = []
        for encoded, dimensions in ((data["inputs"], input_features), (data["outputs"], output_features)):
            vector = _vector(dimensions)
            if len(encoded) != max(1, dimensions):
                raise ValueError(f"published bucket has {len(encoded)} sketches, not {dimensions}")
            for index, sketch in enumerate(encoded):
                vector.deserialize(base64.b64decode(sketch), index)
            sketches.append(vector)
        return cls(int(data["start"]), sketches[0], sketches[1], Counter(data["classes"]), int(data["rows"]))


@dataclass
class WindowProfile:
    """A window's merged sketches: read a feature with :meth:`input_sketch` or :meth:`output_sketch`."""

    rows: int
    inputs: Any
    outputs: Any
    classes: Counter[str]
    input_names: list[str]
    output_names: list[str]

    def input_sketch(self, index: int) -> Any:
        return self.inputs.collapse(index)

    def output_sketch(self, index: int) -> Any:
        return self.outputs.collapse(index)


class VersionSketches:
    """The live profile of one model version, in time buckets per window."""

    def __init__(
        self,
        reference: ReferenceProfile,
        class_names: list[str],
        label_output: str | None,
        clock: Callable[[], float] = time.time,
        windows: Mapping[str, Window] | None = None,
        key: tuple[str, str] = ("", ""),
    ) -> None:
        self.reference = reference
        self.key = key
        """(model, version) this profile is of."""
        self.windows = dict(windows) if windows is not None else windows_of(DEFAULT_WINDOWS)
        self.input_names = [feature.name for feature in reference.inputs]
        self.output_names = [feature.name for feature in reference.outputs]
        self._class_names = class_names
        self._label_output = label_output
        self._clock = clock
        self._levels: dict[str, deque[Bucket]] = {window: deque() for window in self.windows}
        self._changed: set[tuple[str, int]] = set()

    def ingest(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """Add a batch of rows (inputs and the answers to them) to every window's current bucket."""
        rows_in = self._matrix(inputs, self.input_names)
        output_features, classes = self._output_features(outputs)
        rows_out = self._matrix(output_features, self.output_names)
        now = int(self._clock())
        for window in self.windows.values():
            bucket = self._current(window, now)
            self._changed.add((window.name, bucket.start))
            if rows_in is not None:
                bucket.inputs.update(rows_in)
            if rows_out is not None:
                bucket.outputs.update(rows_out)
            bucket.classes.update(classes)
            bucket.rows += rows_in.shape[0] if rows_in is not None else 0

    def window(self, name: str, published: Iterable[Bucket] = ()) -> WindowProfile:
        """The merged profile of the last ``name`` (5m, 1h...): this process's buckets and
        ``published`` ones (other processes')."""
        window = self.windows[name]
        now = int(self._clock())
        merged_in, merged_out = _vector(len(self.input_names)), _vector(len(self.output_names))
        classes: Counter[str] = Counter()
        rows = 0
        for bucket in (*self._levels[name], *published):
            if not window.holds(bucket.start, now):
                continue
            merged_in.merge(bucket.inputs)
            merged_out.merge(bucket.outputs)
            classes.update(bucket.classes)
            rows += bucket.rows
        return WindowProfile(rows, merged_in, merged_out, classes, self.input_names, self.output_names)

    def take_changed(self) -> list[tuple[str, Bucket]]:
        """The buckets that took rows since the last call, by window name (to publish them)."""
        changed = [
            (name, bucket)
            for name, buckets in self._levels.items()
            for bucket in buckets
            if (name, bucket.start) in self._changed
        ]
        self._changed.clear()
        return changed

    def bucket_of(self, raw: bytes) -> Bucket:
        return Bucket.from_bytes(raw, len(self.input_names), len(self.output_names))

    def _current(self, window: Window, now: int) -> Bucket:
        buckets = self._levels[window.name]
        start = window.bucket_start(now)
        while buckets and not window.holds(buckets[0].start, now):
            buckets.popleft()
        if not buckets or buckets[-1].start != start:
            buckets.append(Bucket(start, _vector(len(self.input_names)), _vector(len(self.output_names))))
        return buckets[-1]

    def _matrix(self, arrays: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray | None:
        """Rows x the reference's features (those this request has), as float32."""
        if not names:
            return None
        found: dict[str, np.ndarray] = {}
        for tensor, array in arrays.items():
            if array.dtype.kind in "USO":
                continue  # text features are profiled by frequent items in the reference only
            found.update(features_of(tensor, np.asarray(array), self.reference.reduction))
        rows = next((values.shape[0] for values in found.values()), 0)
        if rows == 0:
            return None
        columns = [found.get(name, np.full(rows, np.nan)) for name in names]
        return np.stack(columns, axis=1).astype(np.float32)

    def _output_features(self, outputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
        scores = probabilities(outputs, self._label_output)
        features = {name: array for name, array in outputs.items() if scores is None or array is not scores}
        if scores is not None:
            features["confidence"] = scores.max(axis=1)
        labels = predicted_labels(outputs, self._label_output)
        names = self._class_names
        classes = (
            [names[int(label)] if 0 <= int(label) < len(names) else str(int(label)) for label in labels]
            if labels is not None
            else []
        )
        return features, classes
