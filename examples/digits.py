"""The demo models: scikit-learn's bundled digits (8x8 images, no download), two ways.

Both take ``pixels`` FP32 [-1, 64] (raw values 0..16) and return ``probabilities`` FP32
[-1, 10] indexed by the labels "0".."9"; the scikit-learn pipeline also returns ``label``
INT64 [-1]. Training takes seconds and uses fixed seeds.

    python -m examples.digits OUT_DIR    # writes OUT_DIR/digits-sklearn.pkg, digits-keras.pkg
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelpkg import Steps, build

SEED = 0
LABELS = [str(digit) for digit in range(10)]
SAMPLE_ROWS = 16
CANDIDATE_C = 0.1
"""The demo's second digits-sklearn version: stronger regularisation than the first (C=1)."""


@dataclass(frozen=True)
class Digits:
    """The digits data set split into training and test rows (float32 pixels, int64 labels)."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_data() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.25, random_state=SEED, stratify=y
    )
    return Digits(x_train, x_test, y_train, y_test)


def train_sklearn(data: Digits, regularisation: float = 1.0) -> Any:
    """StandardScaler + LogisticRegression; ``regularisation`` is its ``C`` (smaller: stronger)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = LogisticRegression(C=regularisation, max_iter=500, random_state=SEED)
    pipeline = make_pipeline(StandardScaler(), classifier)
    return pipeline.fit(data.x_train, data.y_train)


def train_keras(data: Digits, epochs: int = 20) -> Any:
    """A small dense network; rescaling to 0..1 is part of the model, so it takes raw pixels."""
    from converters.keras import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    pixels = keras.Input(shape=(64,), name="pixels")
    hidden = keras.layers.Rescaling(1.0 / 16.0)(pixels)
    hidden = keras.layers.Dense(32, activation="relu")(hidden)
    probabilities = keras.layers.Dense(10, activation="softmax")(hidden)
    model = keras.Model(pixels, probabilities, name="digits")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def sklearn_accuracy(model: Any, data: Digits) -> float:
    return float(np.mean(model.predict(data.x_test) == data.y_test))


def keras_accuracy(model: Any, data: Digits) -> float:
    predicted = np.argmax(np.asarray(model(data.x_test, training=False)), axis=1)
    return float(np.mean(predicted == data.y_test))


def build_demo_packages(
    out_dir: str | Path, *, created_at: datetime | None = None, steps: Steps | None = None
) -> list[Path]:
    """Train both demo models and write ``digits-sklearn.pkg`` and ``digits-keras.pkg``."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = load_data()
    common = _common(data, created_at, steps)
    sklearn_pkg = _sklearn_package(data, folder / "digits-sklearn.pkg", 1.0, common)
    network = train_keras(data)
    keras_pkg = build(
        network,
        folder / "digits-keras.pkg",
        name="digits-keras",
        output_names=["probabilities"],
        description="Handwritten digits 0-9 (8x8): a small dense Keras network.",
        metrics={"accuracy": keras_accuracy(network, data)},
        **common,
    )
    return [sklearn_pkg, keras_pkg.path]


def build_sklearn_candidate(
    out_dir: str | Path,
    regularisation: float = CANDIDATE_C,
    *,
    parent: Path | None = None,
    created_at: datetime | None = None,
) -> Path:
    """Another version of ``digits-sklearn``, trained with ``C=regularisation`` (a candidate to roll
    out against the first, whose package is ``parent``); written as ``digits-sklearn-c<C>.pkg``.
    Takes about a second."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = load_data()
    path = folder / f"digits-sklearn-c{regularisation:g}.pkg"
    return _sklearn_package(data, path, regularisation, _common(data, created_at, None), parent)


def _common(data: Digits, created_at: datetime | None, steps: Steps | None) -> dict[str, Any]:
    """What every demo package shares: signature names, labels, samples, reference, tags."""
    return {
        "samples": data.x_test[:SAMPLE_ROWS],
        "input_names": ["pixels"],
        "labels": LABELS,
        "labels_output": "probabilities",
        "tags": ["demo", "digits"],
        # The training rows are the reference profile: drift is measured against them.
        "reference": data.x_train,
        "created_at": created_at,
        "steps": steps,
    }


def _sklearn_package(
    data: Digits, path: Path, regularisation: float, common: dict[str, Any], parent: Path | None = None
) -> Path:
    pipeline = train_sklearn(data, regularisation)
    regularised = "" if regularisation == 1.0 else f" (C={regularisation:g})"
    package = build(
        pipeline,
        path,
        name="digits-sklearn",
        output_names=["label", "probabilities"],
        description=f"Handwritten digits 0-9 (8x8): StandardScaler + LogisticRegression{regularised}.",
        metrics={"accuracy": sklearn_accuracy(pipeline, data)},
        parent=parent,
        **common,
    )
    return package.path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m examples.digits OUT_DIR", file=sys.stderr)
        return 2
    for path in build_demo_packages(args[0]):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
