"""Versions of one digits classifier that differ in quality: for gates, compare and search."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from examples.digits import LABELS, load_data
from modelpkg.builder import build


def digits_package(
    folder: Path,
    model: str,
    name: str,
    rows_per_class: int,
    c: float,
    *,
    tags: Sequence[str] = (),
    data_files: Sequence[Path] = (),
) -> Path:
    """LogisticRegression on ``rows_per_class`` training rows of each digit: few rows, weak model."""
    data = load_data()
    chosen = np.concatenate([np.flatnonzero(data.y_train == d)[:rows_per_class] for d in range(10)])
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500, random_state=0))
    pipeline.fit(data.x_train[chosen], data.y_train[chosen])
    return build(
        pipeline,
        folder / f"{name}.pkg",
        name=model,
        samples=data.x_test[:8],
        input_names=["pixels"],
        output_names=["label", "probabilities"],
        labels=LABELS,
        labels_output="probabilities",
        description=name,
        tags=tags,
        data_files=data_files,
        code_dir=None,
    ).path
