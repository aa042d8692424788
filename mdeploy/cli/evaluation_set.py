"""Evaluation sets as the CLI sends them, and evaluations as it prints them (push, gates, compare).

``--eval`` is an ``.npz`` of the model's inputs by name, or an ``.npy`` for a model with one
input; ``--labels`` an ``.npy`` of class indices or names, one per row. Both are read without
pickles and sent as one ``.npz`` (labels under ``__labels__``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.table import Table

from core.errors import InvalidInput
from core.gates import parse_gates

LABELS_KEY = "__labels__"


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InvalidInput(f"{what} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InvalidInput(f"{what} {path} is not a .npy or .npz of plain arrays: {error}") from None


def eval_payload(data: Path, labels: Path | None, input_names: list[str] | None = None) -> bytes:
    """``data`` (and ``labels``) as the .npz body the gateway reads."""
    loaded = _load(data, "--eval")
    if isinstance(loaded, np.ndarray):
        if not input_names or len(input_names) != 1:
            raise InvalidInput(
                f"--eval {data} is one array: give an .npz of arrays named after the model's inputs "
                f"{input_names or ''}".rstrip()
            )
        arrays = {input_names[0]: loaded}
    else:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    if labels is not None:
        values = _load(labels, "--labels")
        if not isinstance(values, np.ndarray):
            raise InvalidInput(f"--labels {labels} must be one .npy array of class indices or names")
        arrays[LABELS_KEY] = values.reshape(-1)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def checked_gates(gates: list[str] | None) -> list[str]:
    """The gates as given, after the same check the gateway makes (a typo fails before any upload)."""
    texts = gates or []
    parse_gates(texts)
    return texts


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def evaluation_table(evaluation: dict[str, Any]) -> Table:
    """Metrics, then each gate with its verdict."""
    against = f", agreement with version {evaluation['against']}" if evaluation.get("against") else ""
    title = (
        f"{evaluation['model']}:{evaluation['version']} on {evaluation['rows']} rows "
        f"(sha256:{evaluation['data_sha256'][:12]}{against})"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(evaluation["metrics"].items()):
        table.add_row(name, _number(value))
    for name, why in sorted(evaluation["unmeasured"].items()):
        table.add_row(name, f"- ({why})")
    for gate in evaluation["gates"]:
        table.add_row(f"gate {gate['gate']}", "PASS" if gate["passed"] else f"FAIL: {gate['reason']}")
    return table


def verdict_line(evaluation: dict[str, Any]) -> str:
    passed = evaluation["passed"]
    if passed is None:
        return "measured (no gates)" + ("; promoted" if evaluation["promoted"] else "")
    if passed:
        return "every gate passed" + ("; promoted: it is live" if evaluation["promoted"] else "")
    failed = [g["reason"] for g in evaluation["gates"] if not g["passed"]]
    return f"gates failed, the version stays staged: {'; '.join(failed)}"
