"""TensorFlow-Serving JSON (``:predict``) ⇄ the data plane's request and result.

Row format: ``{"instances": [row, ...]}`` (a row is the input's value for one example, or an
object of input name → value when the model has several inputs), answered with
``{"predictions": [...]}``. Columnar format: ``{"inputs": value}`` or ``{"inputs": {name:
value}}``, answered with ``{"outputs": ...}``. Without type information in the JSON, each
value takes its input's datatype from the model signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from core.errors import InvalidInput
from gateway.catalog import ServedVersion
from gateway.dataplane import InferenceResult
from gateway.rest.arrays import to_array, to_json_data


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class V1Request:
    inputs: dict[str, np.ndarray]
    rows: bool


def parse_request(body: bytes, served: ServedVersion) -> V1Request:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the request body must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in document) == ("inputs" in document):
        raise InvalidInput("give exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    if "instances" in document:
        return V1Request(_rows(document["instances"], served), rows=True)
    return V1Request(_columns(document["inputs"], served), rows=False)


def _rows(instances: Any, served: ServedVersion) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list of examples")
    if served.max_batch_size == 0:
        raise InvalidInput(
            f"model '{served.name}' takes no batch dimension; use the columnar 'inputs' format"
        )
    specs = served.signature.inputs
    # One input and plain rows (no row is an object): the common case, checked in C.
    if len(specs) == 1 and dict not in map(type, instances):
        return {specs[0].name: to_array(f"input '{specs[0].name}'", specs[0].datatype, instances)}
    names = [spec.name for spec in specs]
    if len(specs) == 1 and not all(_named_inputs(row, names) for row in instances):
        return {names[0]: to_array(f"input '{names[0]}'", specs[0].datatype, instances)}
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, row in enumerate(instances):
        if not isinstance(row, dict) or set(row) != set(names):
            raise InvalidInput(f"instance {index} must be an object with exactly the inputs {names}")
        for name in names:
            columns[name].append(row[name])
    return {spec.name: to_array(f"input '{spec.name}'", spec.datatype, columns[spec.name]) for spec in specs}


def _named_inputs(row: Any, names: list[str]) -> bool:
    """Whether a row is an object of input name → value; ``{"b64": ...}`` is one BYTES value
    (TF-Serving's binary form) unless the model has an input named ``b64``."""
    return isinstance(row, dict) and (set(row) != {"b64"} or "b64" in names)


def _columns(inputs: Any, served: ServedVersion) -> dict[str, np.ndarray]:
    specs = served.signature.inputs
    if not isinstance(inputs, dict) or (len(specs) == 1 and specs[0].name not in inputs):
        if len(specs) != 1:
            raise InvalidInput(
                f"'inputs' must be an object of input name → value for inputs {[s.name for s in specs]}"
            )
        inputs = {specs[0].name: inputs}
    known = {spec.name: spec for spec in specs}
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise InvalidInput(f"unknown input {unknown[0]!r}; the model's inputs are {sorted(known)}")
    return {name: to_array(f"input '{name}'", known[name].datatype, value) for name, value in inputs.items()}


def _top_labels(result: InferenceResult) -> list[str] | None:
    served = result.served
    scores = result.outputs.get(served.label_output or "")
    if not served.labels or scores is None or scores.ndim != 2:
        return None
    return [served.labels[int(i)] for i in np.argmax(scores, axis=1)]


def render_response(request: V1Request, result: InferenceResult, with_labels: bool) -> bytes:
    outputs = result.outputs
    document: dict[str, Any] = {"model_version": result.version}
    if request.rows:
        if len(outputs) == 1:
            document["predictions"] = to_json_data(next(iter(outputs.values())))
        else:
            # Converted once per output, then indexed per row (a row of a C-ordered array is too).
            columns = [(name, to_json_data(array)) for name, array in outputs.items()]
            count = len(columns[0][1])
            document["predictions"] = [{name: column[i] for name, column in columns} for i in range(count)]
    elif len(outputs) == 1:
        document["outputs"] = to_json_data(next(iter(outputs.values())))
    else:
        document["outputs"] = {name: to_json_data(array) for name, array in outputs.items()}
    if with_labels:
        labels = _top_labels(result)
        if labels is None:
            raise InvalidInput(
                f"model '{result.model}' version {result.version} has no labels for its outputs"
            )
        document["labels"] = labels
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
