"""What counts as the same answer: labels for classifiers, a tolerance for regressors."""

from __future__ import annotations

import numpy as np
import pytest

from core.answers import agreeing_rows, label_indices, label_metrics, predicted_labels
from core.errors import InvalidInput
from gateway.routing.shadow import answers_agree


def rows_agreeing(a: dict[str, np.ndarray], b: dict[str, np.ndarray], label_output: str | None) -> list[bool]:
    found = agreeing_rows(a, b, label_output)
    assert found is not None
    return [bool(value) for value in found]


def test_classifier_answers_agree_when_the_label_is_the_same() -> None:
    stable = {
        "label": np.array([3, 1]),
        "probabilities": np.array([[0.1, 0.2, 0.1, 0.6], [0.1, 0.7, 0.1, 0.1]]),
    }
    candidate = {
        "label": np.array([3, 1]),
        "probabilities": np.array([[0.2, 0.1, 0.2, 0.5], [0.2, 0.5, 0.2, 0.1]]),
    }
    assert answers_agree(stable, candidate, "probabilities")  # the probabilities moved, the labels did not
    flipped = {
        "label": np.array([3, 2]),
        "probabilities": np.array([[0.1, 0.2, 0.1, 0.6], [0.1, 0.2, 0.6, 0.1]]),
    }
    assert rows_agreeing(stable, flipped, "probabilities") == [True, False]


def test_unlabelled_probabilities_compare_by_arg_max_and_regressions_by_tolerance() -> None:
    scores = {"y": np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)}
    assert answers_agree(scores, {"y": np.array([[0.7, 0.3], [0.4, 0.6]], np.float32)}, None)
    values = {"y": np.array([[100.0], [-3.0]], np.float32)}
    assert answers_agree(values, {"y": np.array([[100.05], [-3.0001]], np.float32)}, None)
    assert rows_agreeing(values, {"y": np.array([[101.0], [-3.0]], np.float32)}, None) == [
        False,
        True,
    ]


def test_answers_with_other_outputs_or_shapes_do_not_agree() -> None:
    answer = {"y": np.zeros((2, 3), np.float32)}
    assert agreeing_rows(answer, {"z": np.zeros((2, 3), np.float32)}, None) is None
    assert not answers_agree(answer, {"y": np.zeros((2, 4), np.float32)}, None)


def labels_of(outputs: dict[str, np.ndarray]) -> list[int]:
    found = predicted_labels(outputs, "probabilities")
    assert found is not None
    return [int(value) for value in found]


def test_labels_prefer_an_integer_output_then_the_labelled_scores() -> None:
    outputs = {"label": np.array([[7], [2]], np.int64), "probabilities": np.eye(10)[[1, 2]]}
    assert labels_of(outputs) == [7, 2]
    assert labels_of({"probabilities": np.eye(10)[[1, 2]]}) == [1, 2]
    assert predicted_labels({"y": np.array([[1.5], [2.5]], np.float32)}, None) is None


def test_accuracy_and_logloss_from_class_names_or_indices() -> None:
    outputs = {"probabilities": np.array([[0.8, 0.2], [0.4, 0.6], [0.9, 0.1]], np.float32)}
    metrics, missing = label_metrics(
        outputs, "probabilities", ["cat", "dog"], np.array(["cat", "dog", "dog"])
    )
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["logloss"] == pytest.approx(-np.mean(np.log([0.8, 0.6, 0.1])), rel=1e-5)
    assert missing == {}
    _, without = label_metrics(outputs, "probabilities", [], None)
    assert set(without) == {"accuracy", "logloss"}
    with pytest.raises(InvalidInput, match="unknown class names"):
        label_indices(np.array(["cow"]), ["cat", "dog"])
