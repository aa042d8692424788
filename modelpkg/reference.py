"""The reference profile a package carries: what the model's inputs and outputs looked like in training.

``reference.json`` holds, per feature, a quantile sketch (an Apache DataSketches KLL sketch),
the row count, missing (NaN) count, min and max; for integer and string features their
frequent items; and for the outputs the predicted-class frequencies and score quantiles of the
model run on the same rows. The gateway compares live traffic with it (drift).

**Features** get names from the signature: column ``j`` of a ``[-1, F]`` input ``x`` is
``x[j]``, a ``[-1]`` input is ``x``. Inputs with more dimensions (images) are reduced so that
profiles stay small: by default to one feature per channel, the mean over the other dimensions
(``x[c=0]``...; the channel axis is 1 when it has at most 4 entries, as in NCHW, else the last,
as in NHWC); ``reduction="mean"`` keeps one feature, the mean of each row. At most
``MAX_FEATURES`` features per tensor are kept (the first ones).

**Deterministic**: KLL sketches compact at random once they hold more than ``k`` items, which
would make the same model and data give different package bytes. Each sketch is instead fed
the ``k`` exact quantiles of the feature (numpy), so it never compacts and represents the
distribution within 1/``k`` in rank; the true row count is kept beside it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from core.answers import predicted_labels, probabilities

REFERENCE_ENTRY = "reference.json"
SKETCH_K = 200
MAX_FEATURES = 256
FREQUENT_ITEMS = 20
Reduction = Literal["channel-mean", "mean"]


class FeatureProfile(BaseModel):
    """One feature (a column of an input or output, or a reduction of one) in the reference."""

    name: str
    tensor: str
    count: int = Field(ge=0)
    missing: int = Field(ge=0)
    """NaN values (numbers) or empty strings."""
    min: float | None
    max: float | None
    kll: str | None
    """A KLL sketch of the feature's values (base64 of DataSketches' serialisation); None for text."""
    frequent: list[tuple[str, int]] | None = None
    """For integer and string features: the most frequent values and their counts."""


class ReferenceProfile(BaseModel):
    format_version: Literal[1] = 1
    rows: int = Field(ge=1)
    source: Literal["reference", "samples"]
    """Rows given for it (``--reference``), or the package's few samples (a weak reference)."""
    reduction: Reduction
    inputs: list[FeatureProfile]
    outputs: list[FeatureProfile]
    classes: dict[str, float] | None = None
    """Predicted-class frequencies on the reference rows, for a classifier."""


def _sketch(values: np.ndarray) -> str:
    from datasketches import kll_floats_sketch  # type: ignore[import-untyped]  # no stubs

    sketch = kll_floats_sketch(SKETCH_K)
    points = np.quantile(values, np.linspace(0.0, 1.0, min(SKETCH_K, values.size)))
    for point in points:
        sketch.update(float(point))
    return base64.b64encode(sketch.serialize()).decode()


def _frequent(values: np.ndarray) -> list[tuple[str, int]]:
    counts = Counter(str(value) for value in values.tolist())
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:FREQUENT_ITEMS]


def feature_profile(name: str, tensor: str, values: np.ndarray) -> FeatureProfile:
    flat = values.reshape(-1)
    if flat.dtype.kind in "USO":
        texts = flat.astype(str)
        return FeatureProfile(
            name=name,
            tensor=tensor,
            count=int(texts.size),
            missing=int(np.sum(texts == "")),
            min=None,
            max=None,
            kll=None,
            frequent=_frequent(texts),
        )
    numbers = flat.astype(np.float64)
    present = numbers[~np.isnan(numbers)]
    return FeatureProfile(
        name=name,
        tensor=tensor,
        count=int(numbers.size),
        missing=int(numbers.size - present.size),
        min=float(present.min()) if present.size else None,
        max=float(present.max()) if present.size else None,
        kll=_sketch(present) if present.size else None,
        frequent=_frequent(flat) if flat.dtype.kind in "iub" else None,
    )


def features_of(name: str, array: np.ndarray, reduction: Reduction) -> dict[str, np.ndarray]:
    """The named per-row features of one tensor (see the module docstring)."""
    if array.ndim <= 1:
        return {name: array.reshape(-1)}
    if array.ndim == 2:
        return {f"{name}[{j}]": array[:, j] for j in range(min(array.shape[1], MAX_FEATURES))}
    if array.dtype.kind in "USO" or reduction == "mean":
        return {name: array.reshape(array.shape[0], -1).astype(np.float64).mean(axis=1)}
    axis = 1 if array.shape[1] <= 4 else array.ndim - 1
    moved = np.moveaxis(array, axis, 1).reshape(array.shape[0], array.shape[axis], -1)
    means = moved.astype(np.float64).mean(axis=2)
    return {f"{name}[c={c}]": means[:, c] for c in range(min(means.shape[1], MAX_FEATURES))}


def _tensor_profiles(arrays: Mapping[str, np.ndarray], reduction: Reduction) -> list[FeatureProfile]:
    return [
        feature_profile(feature, tensor, values)
        for tensor, array in arrays.items()
        for feature, values in features_of(tensor, array, reduction).items()
    ]


def build_profile(
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    source: Literal["reference", "samples"],
    reduction: Reduction,
    label_output: str | None,
    class_names: list[str],
) -> ReferenceProfile:
    """The profile of ``inputs`` and of the model's ``outputs`` on them."""
    rows = int(next(iter(inputs.values())).shape[0])
    classes = None
    labels = predicted_labels(outputs, label_output)
    if labels is not None:
        counts = Counter(int(label) for label in labels)
        named = {i: class_names[i] if 0 <= i < len(class_names) else str(i) for i in counts}
        classes = {named[i]: counts[i] / rows for i in sorted(counts)}
    scores = probabilities(outputs, label_output)
    shown_outputs: dict[str, np.ndarray] = {
        name: array for name, array in outputs.items() if scores is None or array is not scores
    }
    output_profiles = _tensor_profiles(shown_outputs, reduction)
    if scores is not None:  # a classifier's confidence, not one column per class
        output_profiles.append(feature_profile("confidence", "probabilities", scores.max(axis=1)))
    return ReferenceProfile(
        rows=rows,
        source=source,
        reduction=reduction,
        inputs=_tensor_profiles(inputs, reduction),
        outputs=output_profiles,
        classes=classes,
    )


def dump_profile(profile: ReferenceProfile) -> bytes:
    """Canonical JSON bytes: the same profile, the same bytes."""
    data = profile.model_dump(mode="json")
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


def parse_profile(raw: bytes) -> ReferenceProfile:
    return ReferenceProfile.model_validate_json(raw)


def profile_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
