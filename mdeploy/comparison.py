"""``mdeploy compare``: versions side by side, from their packages, an evaluation set, and routing.

A reference is ``NAME:VERSION`` on the gateway, or a package file that was never pushed. What
each column shows:

* **static**, from the manifest: size, framework and converter, signature, parity, provenance
  (data file hashes, code commit, parent, created) and the metrics recorded at training;
* **measured** on ``--data`` (and ``--labels``): accuracy, log-loss and agreement with the first
  reference (``core.answers``), p50/p99 of 1-row requests and rows/s in 32-row requests. A
  gateway version is measured through the gateway's HTTP API (``/v2`` JSON, as a web app sees
  it); a package file in this process on onnxruntime, and the column says so;
* **live**, for a gateway version that is an arm of its model's deployment: requests, error rate,
  p99 and mean reward with its 95% interval (``mdeploy status``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from core.answers import agreeing_rows, label_metrics
from core.datatypes import from_numpy, to_numpy
from core.errors import InvalidInput
from mdeploy.client import ClientError, GatewayClient
from modelpkg import read_package
from modelpkg.manifest import Manifest

LATENCY_REQUESTS = 100
BATCH_ROWS = 32

Infer = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Column:
    """One reference: where it comes from, its manifest, and what was measured."""

    label: str
    where: str
    """``gateway`` or ``local package (onnxruntime in this process)``."""
    manifest: Manifest
    size: int
    digest: str
    measured: dict[str, float | None] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)
    live: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    """The gateway version's latest recorded evaluation (gates), if any."""
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def label_output(self) -> str | None:
        return self.manifest.labels.output if self.manifest.labels else None

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.labels.names) if self.manifest.labels else []


def is_package_path(reference: str) -> bool:
    return reference.endswith(".pkg") or Path(reference).is_file()


def local_column(path: Path) -> tuple[Column, Infer]:
    """A package file: its manifest, and onnxruntime in this process to measure it."""
    import onnxruntime as ort

    package = read_package(path)
    session = ort.InferenceSession(package.model, providers=["CPUExecutionProvider"])

    def infer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(inputs)), strict=True))

    column = Column(
        str(path),
        "local package (onnxruntime in this process)",
        package.manifest,
        path.stat().st_size,
        package.digest,
    )
    return column, infer


def gateway_column(client: GatewayClient, model: str, version: str) -> tuple[Column, Infer]:
    """A version on the gateway: its record, and its /v2 infer route to measure it."""
    base = f"/v1/admin/models/{quote(model, safe='')}"
    record = client.get_json(f"{base}/versions/{version}")
    if record["state"] != "live":
        raise InvalidInput(f"{model}:{version} is deleted; compare loaded versions or a package file")
    manifest = Manifest.model_validate(record["manifest"])
    column = Column(f"{model}:{version}", "gateway", manifest, record["size"], record["digest"])
    column.live = _live_figures(client, model, version)
    column.evaluation = next(iter(record.get("evaluations") or []), None)
    path = f"/v2/models/{quote(model, safe='')}/versions/{version}/infer"

    def infer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        body = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(a.shape),
                    "datatype": from_numpy(a.dtype),
                    "data": a.reshape(-1).tolist(),
                }
                for name, a in inputs.items()
            ]
        }
        answer = client.post_json(path, body)
        return {
            out["name"]: np.asarray(out["data"], to_numpy(out["datatype"])).reshape(out["shape"])
            for out in answer["outputs"]
        }

    return column, infer


def _live_figures(client: GatewayClient, model: str, version: str) -> dict[str, Any] | None:
    try:
        status = client.get_json(f"/v1/admin/deployments/{quote(model, safe='')}")
    except ClientError:
        return None
    arm = next((a for a in status["arms"] if a["version"] == version), None)
    if arm is None:
        return None
    return {
        "role": arm["role"],
        "requests": arm["pulls"],
        "error_rate": arm["error_rate"],
        "p99_ms": arm["p99_ms"],
        "mean_reward": arm["mean_reward"],
        "reward_ci95": arm["reward_ci95"],
    }


def measure(
    column: Column, infer: Infer, inputs: Mapping[str, np.ndarray], labels: np.ndarray | None
) -> None:
    """Answers on every row (32-row requests, timed for rows/s), then 1-row latencies."""
    rows = next(iter(inputs.values())).shape[0]
    parts: dict[str, list[np.ndarray]] = {}
    started = time.perf_counter()
    for first in range(0, rows, BATCH_ROWS):
        answer = infer({name: array[first : first + BATCH_ROWS] for name, array in inputs.items()})
        for name, array in answer.items():
            parts.setdefault(name, []).append(array)
    column.measured["rows_per_s"] = rows / (time.perf_counter() - started)
    column.outputs = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    latencies = []
    for row in range(min(LATENCY_REQUESTS, rows)):
        started = time.perf_counter()
        infer({name: array[row : row + 1] for name, array in inputs.items()})
        latencies.append((time.perf_counter() - started) * 1000.0)
    column.measured["p50_ms"] = float(np.percentile(latencies, 50))
    column.measured["p99_ms"] = float(np.percentile(latencies, 99))
    metrics, missing = label_metrics(column.outputs, column.label_output, column.class_names, labels)
    column.measured.update(metrics)
    column.unmeasured.update(missing)


def agreement(columns: list[Column]) -> None:
    """Each column's agreement with the first, row by row."""
    first = columns[0]
    for column in columns:
        if column is first:
            column.unmeasured["agreement"] = "the reference the others are compared with"
            continue
        same = agreeing_rows(first.outputs, column.outputs, first.label_output)
        if same is None:
            column.unmeasured["agreement"] = "its outputs differ in names or shapes from the first"
        else:
            column.measured["agreement"] = float(np.mean(same))


def read_data(
    data: Path, labels: Path | None, columns: list[Column]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The evaluation set, checked against every column's inputs."""
    try:
        loaded = np.load(data, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InvalidInput(f"--data {data} is not a .npy or .npz of plain arrays: {error}") from None
    names = [spec.name for spec in columns[0].manifest.signature.inputs]
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise InvalidInput(f"--data {data} is one array; the model takes inputs {names}: give an .npz")
        inputs = {names[0]: loaded}
    else:
        with loaded:
            inputs = {name: loaded[name] for name in loaded.files}
    for column in columns:
        wanted = sorted(spec.name for spec in column.manifest.signature.inputs)
        if sorted(inputs) != wanted:
            raise InvalidInput(f"--data has arrays {sorted(inputs)}; {column.label} takes inputs {wanted}")
    truth = None
    if labels is not None:
        try:
            truth = np.load(labels, allow_pickle=False).reshape(-1)
        except (ValueError, OSError) as error:
            raise InvalidInput(f"--labels {labels} is not a .npy array: {error}") from None
    return inputs, truth


def static_rows(columns: list[Column]) -> list[tuple[str, list[str]]]:
    """(what, one value per column) from the manifests; the table highlights rows that differ."""

    def signature(m: Manifest) -> str:
        def tensors(items: Any) -> str:
            return ", ".join(f"{t.name} {t.datatype}{t.shape}" for t in items)

        return f"{tensors(m.signature.inputs)} → {tensors(m.signature.outputs)}"

    def data_hashes(m: Manifest) -> str:
        return ", ".join(f"{Path(d.path).name}:{d.sha256[:12]}" for d in m.provenance.data) or "-"

    rows: list[tuple[str, Callable[[Column], str]]] = [
        ("source", lambda c: c.where),
        ("size", lambda c: f"{c.size:,} bytes"),
        ("digest", lambda c: c.digest[:12]),
        ("framework", lambda c: f"{c.manifest.framework.name} {c.manifest.framework.version}"),
        ("converter", lambda c: f"{c.manifest.framework.converter} (opset {c.manifest.framework.opset})"),
        ("signature", lambda c: signature(c.manifest)),
        ("parity", lambda c: parity(c.manifest)),
        ("optimisation", lambda c: optimisation(c.manifest)),
        ("gates", gates),
        ("data", lambda c: data_hashes(c.manifest)),
        ("code commit", lambda c: (c.manifest.provenance.code_commit or "-")[:12]),
        ("parent", lambda c: (c.manifest.provenance.parent_digest or "-")[:12]),
        ("created", lambda c: c.manifest.provenance.created_at.isoformat()[:19].replace("T", " ")),
    ]
    table = [(what, [value(column) for column in columns]) for what, value in rows]
    for name in sorted({name for c in columns for name in c.manifest.metrics}):
        table.append((f"recorded {name}", [_number(c.manifest.metrics.get(name)) for c in columns]))
    return table


def gates(column: Column) -> str:
    """The latest recorded evaluation: its verdict and each gate's value."""
    evaluation = column.evaluation
    if evaluation is None:
        return "-"
    verdict = {True: "passed", False: "FAILED", None: "measured"}[evaluation["passed"]]
    judged = ", ".join(f"{g['gate']} ({_number(g['value'])})" for g in evaluation["gates"])
    return f"{verdict} {judged}".strip() + f" on {evaluation['rows']} rows"


def optimisation(manifest: Manifest) -> str:
    record = manifest.optimization
    if record is None:
        return "-"
    what = [f"{record.quantization} int8"] if record.quantization else []
    if record.graph_optimized:
        what.append("graph optimised")
    parent, agreement = record.float_model_sha256[:12], record.agreement_with_float
    text = f"{' + '.join(what)}; agrees with float {parent} on {agreement:.1%}"
    if record.accuracy_delta is not None:
        text += f", accuracy {record.accuracy_delta:+.4f}"
    return text


def parity(manifest: Manifest) -> str:
    check = manifest.parity
    verdict = "pass" if check.passed else "FAIL"
    return f"{verdict}, max |Δ| {check.max_abs_error:.2g} (tolerance {check.tolerance:g})"


MEASURED = ("accuracy", "logloss", "agreement", "p50_ms", "p99_ms", "rows_per_s")


def measured_rows(columns: list[Column]) -> list[tuple[str, list[str]]]:
    return [(name, [_number(c.measured.get(name)) for c in columns]) for name in MEASURED]


def live_rows(columns: list[Column]) -> list[tuple[str, list[str]]]:
    def figure(column: Column, name: str) -> str:
        if column.live is None:
            return "-"
        value = column.live.get(name)
        if name == "mean_reward" and value is not None and column.live.get("reward_ci95"):
            low, high = column.live["reward_ci95"]
            return f"{value:.3f} [{low:.3f}, {high:.3f}]"
        if name == "error_rate" and value is not None:
            return f"{value:.1%}"
        return _number(value) if not isinstance(value, str) else value

    names = ("role", "requests", "error_rate", "p99_ms", "mean_reward")
    return [(f"live {name}", [figure(c, name) for c in columns]) for name in names]


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def report(columns: list[Column]) -> dict[str, Any]:
    """The comparison as JSON."""
    return {
        "versions": [
            {
                "reference": c.label,
                "source": c.where,
                "digest": c.digest,
                "size": c.size,
                "manifest": c.manifest.model_dump(mode="json"),
                "measured": c.measured,
                "unmeasured": c.unmeasured,
                "live": c.live,
                "evaluation": c.evaluation,
            }
            for c in columns
        ]
    }
