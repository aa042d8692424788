"""``MANIFEST.json``: what a package holds, validated by one schema.

The manifest is the package's contract with the serving side: the signature the servers
check requests against, the labels and serving hints the gateway uses, and the provenance
and parity result that tell a reviewer where the model came from and how faithful its ONNX
form is. Dumped with sorted keys and fixed separators so equal manifests are equal bytes.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from core.datatypes import V2_DATATYPES
from core.errors import PackageError

FORMAT_VERSION: Final = 1
MANIFEST_ENTRY: Final = "MANIFEST.json"
MODEL_ENTRY: Final = "model.onnx"
SAMPLES_ENTRY: Final = "samples.npz"
SOURCE_PREFIX: Final = "source/"

# Names end up in URLs, file paths of the model repository and Triton configs.
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
VersionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")]
TENSOR_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
TensorName = Annotated[str, StringConstraints(pattern=TENSOR_NAME.pattern)]
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/=-]{0,63}$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:/@-]{0,63}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestTensor(_Model):
    """One input or output: v2 datatype name and shape, -1 for a variable dimension."""

    name: TensorName
    datatype: str
    shape: list[Annotated[int, Field(ge=-1)]] = Field(max_length=32)

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in V2_DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {', '.join(V2_DATATYPES)}")
        return value


class ManifestSignature(_Model):
    """The tensors the model takes and returns, named as clients will name them."""

    inputs: list[ManifestTensor] = Field(min_length=1, max_length=256)
    outputs: list[ManifestTensor] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _unique_names(self) -> ManifestSignature:
        names = [spec.name for spec in [*self.inputs, *self.outputs]]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tensor names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def output(self, name: str) -> ManifestTensor | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


class Labels(_Model):
    """Class names; ``names[i]`` is the meaning of index ``i`` of the last dimension of ``output``."""

    output: TensorName
    names: list[Annotated[str, StringConstraints(max_length=256)]] = Field(min_length=1, max_length=100_000)


class Framework(_Model):
    """Where the model came from and what turned it into ONNX."""

    name: Literal["keras", "savedmodel", "sklearn", "onnx"]
    version: ShortText
    converter: ShortText
    opset: int = Field(ge=1)


class ServingHints(_Model):
    """Defaults for the server's model config; the gateway may override them per deployment."""

    max_batch_size: int = Field(default=64, ge=0, le=1_000_000)
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, max_length=64)
    max_queue_delay_us: int = Field(default=500, ge=0, le=60_000_000)
    instances: int = Field(default=1, ge=1, le=1024)
    device: Literal["auto", "cpu", "gpu"] = "auto"

    @model_validator(mode="after")
    def _preferred_within_max(self) -> ServingHints:
        too_big = [size for size in self.preferred_batch_sizes if size > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred batch sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        return self


class DataFile(_Model):
    """A training or evaluation data file, identified by its content."""

    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    sha256: Sha256
    size: int = Field(ge=0)


class Provenance(_Model):
    """Who built the package, when, from what data and code."""

    data: list[DataFile] = Field(default_factory=list, max_length=10_000)
    code_commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40,64}$")] | None = None
    code_dirty: bool | None = None
    parent_digest: Sha256 | None = None
    created_at: AwareDatetime
    created_by: ShortText

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class OutputParity(_Model):
    """How far one ONNX output is from the original model's output on the samples."""

    max_abs_error: NonNegativeFloat
    max_rel_error: NonNegativeFloat
    mismatches: int = Field(ge=0)


class Parity(_Model):
    """Agreement of the ONNX model with the original on the samples.

    An element agrees when its absolute or its relative error is within ``tolerance``;
    ``max_rel_error`` is taken over elements whose expected value is not zero.
    """

    rows: int = Field(ge=1)
    tolerance: NonNegativeFloat
    max_abs_error: NonNegativeFloat
    max_rel_error: NonNegativeFloat
    passed: bool
    outputs: dict[TensorName, OutputParity]


class Optimization(_Model):
    """What was traded for latency (``modelpkg.optimization``), and what it cost.

    ``agreement_with_float`` is the share of ``evaluated_on`` rows where the optimised model
    answers as the float one does; with labels, both accuracies and their difference.
    """

    quantization: Literal["dynamic", "static"] | None
    graph_optimized: bool
    float_model_sha256: Sha256
    """The float model.onnx this one was made from (also the provenance's parent)."""
    float_model_bytes: int = Field(ge=0)
    calibration_rows: int | None = Field(default=None, ge=1)
    calibration_source: Literal["calibration", "samples"] | None = None
    evaluated_on: Literal["samples", "evaluation data"]
    evaluation_rows: int = Field(ge=1)
    agreement_with_float: float = Field(ge=0.0, le=1.0)
    max_abs_error_vs_float: NonNegativeFloat
    accuracy_float: float | None = Field(default=None, ge=0.0, le=1.0)
    accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    accuracy_delta: float | None = Field(default=None, ge=-1.0, le=1.0)


class ReferenceSummary(_Model):
    """The reference profile the package carries (``modelpkg.reference``, entry reference.json)."""

    sha256: Sha256
    rows: int = Field(ge=1)
    source: Literal["reference", "samples"]
    """Rows given for it, or the package's samples (a weak reference)."""
    input_features: int = Field(ge=0)
    output_features: int = Field(ge=0)


class Metadata(_Model):
    """What the person packaging the model states about it."""

    name: ModelName
    version: VersionName
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    serving: ServingHints = Field(default_factory=ServingHints)
    metrics: dict[MetricName, FiniteFloat] = Field(default_factory=dict, max_length=256)
    provenance: Provenance


class Manifest(Metadata):
    """The whole ``MANIFEST.json``: the metadata plus what conversion established."""

    format_version: Literal[1]
    framework: Framework
    signature: ManifestSignature
    labels: Labels | None = None
    parity: Parity
    files: dict[str, Sha256]
    optimization: Optimization | None = None
    """Set when the model was optimised or quantised after conversion."""
    reference: ReferenceSummary | None = None
    """The reference profile's digest and rows; None for packages made before profiles."""

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for required in (MODEL_ENTRY, SAMPLES_ENTRY):
            if required not in self.files:
                raise ValueError(f"files must list {required!r}")
        if MANIFEST_ENTRY in self.files:
            raise ValueError(f"files must not list {MANIFEST_ENTRY!r} itself")
        if self.labels is not None:
            _check_labels(self.labels, self.signature)
        return self


def _check_labels(labels: Labels, signature: ManifestSignature) -> None:
    spec = signature.output(labels.output)
    if spec is None:
        raise ValueError(f"labels index output {labels.output!r}, which is not in the signature")
    width = spec.shape[-1] if spec.shape else -1
    if width != -1 and width != len(labels.names):
        raise ValueError(
            f"{len(labels.names)} labels for output {labels.output!r} whose last dimension is {width}"
        )


def dump_manifest(manifest: Manifest) -> bytes:
    """Canonical JSON bytes: sorted keys, fixed separators, trailing newline."""
    # Optional parts a package lacks have no key: its bytes are what they were before the fields.
    left_out = {name for name in ("optimization", "reference") if getattr(manifest, name) is None}
    data = manifest.model_dump(mode="json", exclude=left_out)
    return (
        json.dumps(data, sort_keys=True, indent=2, separators=(",", ": "), ensure_ascii=False) + "\n"
    ).encode()


def parse_manifest(raw: bytes) -> Manifest:
    """Validate ``MANIFEST.json`` bytes; PackageError says which field is wrong."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{MANIFEST_ENTRY} is not valid JSON: {exc}") from None
    except RecursionError:
        raise PackageError(
            f"{MANIFEST_ENTRY} nests too deeply to read; a manifest is a few levels deep"
        ) from None
    if not isinstance(data, dict):
        raise PackageError(f"{MANIFEST_ENTRY} must be a JSON object")
    _check_format_version(data.get("format_version"))
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise PackageError(f"{MANIFEST_ENTRY} is invalid: {first_error(exc)}") from None


def _check_format_version(version: Any) -> None:
    if version == FORMAT_VERSION and not isinstance(version, bool):
        return
    if version is None:
        raise PackageError(f"{MANIFEST_ENTRY} has no format_version; this is not an mdeploy package")
    raise PackageError(
        f"package format version {version!r} is not supported; this mdeploy reads format version "
        f"{FORMAT_VERSION} (a newer package needs a newer mdeploy)"
    )


def first_error(exc: ValidationError) -> str:
    """The first validation problem as ``field.path: message``, counting the others."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "manifest"
    got = f" (got {error['input']!r})" if isinstance(error.get("input"), str | int | float) else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{got}{more}"
