"""The prediction routes' request and answer bodies, as models for the OpenAPI document.

The codecs (``v1_codec``, ``v2_codec``) parse and write these bodies by hand, for speed and
for the binary-data extension; a test checks real answers against these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from gateway.rest.api_doc import Operation, Param

V2Datatype = Literal[
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class V2InputParameters(BaseModel):
    binary_data_size: int | None = Field(default=None, ge=0)
    """Binary-data extension: this input's raw bytes follow the JSON part."""


class V2Input(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: V2Datatype
    parameters: V2InputParameters | None = None
    data: Any = None
    """Row-major values, flat or nested; strings for BYTES."""


class V2OutputParameters(BaseModel):
    binary_data: bool | None = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: V2OutputParameters | None = None


class V2RequestParameters(BaseModel):
    binary_data_output: bool | None = None


class V2InferRequest(BaseModel):
    """KServe v2 inference request."""

    id: str | None = None
    parameters: V2RequestParameters | None = None
    inputs: list[V2Input] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2Output(BaseModel):
    name: str
    datatype: V2Datatype
    shape: list[int]
    data: Any = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    """KServe v2 inference answer."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Output]


class V1PredictRequest(BaseModel):
    """TF-Serving predict: exactly one of ``instances`` (rows) or ``inputs`` (columns)."""

    signature_name: str | None = None
    instances: list[Any] | None = Field(default=None, min_length=1)
    inputs: Any = None


class V1PredictResponse(BaseModel):
    """TF-Serving predict answer: ``predictions`` for rows, ``outputs`` for columns."""

    model_version: str
    predictions: list[Any] | None = None
    outputs: Any = None
    labels: list[str] | None = None
    """With ``?labels=true`` on a classifier: the class names."""


_ROUTING_KEY = Param(
    "X-Routing-Key",
    {"type": "string", "maxLength": 256},
    where="header",
    description="Requests with the same key get the same version under canary and shadow policies",
    unversioned_only=True,
)

V2_OPERATION = Operation(
    "KServe v2 inference (JSON, or Triton's binary-data extension)",
    answer=V2InferResponse,
    errors=(400, 404, 413, 501, 503, 504),
    body=V2InferRequest,
    body_media={"application/octet-stream": {"type": "string", "format": "binary"}},
    params=(
        _ROUTING_KEY,
        Param(
            "Inference-Header-Content-Length",
            {"type": "integer", "minimum": 0},
            where="header",
            description="Binary-data extension: the byte length of the JSON part; raw tensors follow it",
        ),
    ),
)

V1_OPERATION = Operation(
    "TF-Serving predict (instances rows or inputs columns)",
    answer=V1PredictResponse,
    errors=(400, 404, 413, 503, 504),
    body=V1PredictRequest,
    params=(Param("labels", {"type": "boolean"}), _ROUTING_KEY),
)
