"""``build``: a trained model -> a checked, deterministic ``model.pkg``.

Steps: validate the metadata (cheap, first), convert to ONNX, run the original model on the
sample rows, rename inputs/outputs to the signature's names, run the ONNX model on the same
rows with onnxruntime and compare (parity), then write the archive and read it back with the
same reader the gateway uses. The converters are imported lazily by ``converters.dispatch``:
importing this module loads neither TensorFlow nor scikit-learn.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, Protocol, cast

import numpy as np
import onnx
from pydantic import ValidationError

from converters.base import Converted
from converters.dispatch import FRAMEWORKS, Framework, convert, detect_framework
from converters.onnx_model import default_opset
from converters.parity import ParityReport, compare, first_line, run_onnx
from converters.rename import dynamic_batch, graph_inputs, rename_io
from core.errors import ConversionError, InvalidInput, MdeployError
from modelpkg import provenance
from modelpkg.archive import sha256_of, write_archive
from modelpkg.inputs import SamplesLike, bind_samples, load_samples, storable
from modelpkg.manifest import (
    FORMAT_VERSION,
    MANIFEST_ENTRY,
    MODEL_ENTRY,
    SAMPLES_ENTRY,
    SOURCE_PREFIX,
    TENSOR_NAME,
    Labels,
    Manifest,
    ManifestSignature,
    Metadata,
    Optimization,
    Provenance,
    ReferenceSummary,
    ServingHints,
    dump_manifest,
    first_error,
)
from modelpkg.manifest import (
    Framework as FrameworkInfo,
)
from modelpkg.optimization import QUANTIZED_TOLERANCE, OptimizationRequest, optimize_model
from modelpkg.reader import read_package
from modelpkg.reference import REFERENCE_ENTRY, Reduction, build_profile, dump_profile, parse_profile
from modelpkg.samples import Samples, dump_samples
from modelpkg.signature import fill_output_shapes, signature_of
from modelpkg.verify import parity_record

DEFAULT_TOLERANCE: Final = 1e-5
DEFAULT_SAMPLE_ROWS: Final = 16
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Steps(Protocol):
    """Progress reporting for the slow steps; the CLI shows them with rich."""

    def step(self, description: str) -> AbstractContextManager[None]: ...


class _Quiet:
    def step(self, description: str) -> AbstractContextManager[None]:
        return nullcontext()


@dataclass(frozen=True)
class BuiltPackage:
    """A package written to ``path``; ``digest`` is the sha256 of its bytes."""

    path: Path
    digest: str
    manifest: Manifest


@dataclass(frozen=True)
class _Model:
    """A converted model with public names, its ONNX bytes and the parity evidence."""

    converted: Converted
    renamed: dict[str, str]
    """The converter's tensor names -> the signature's."""
    onnx: onnx.ModelProto
    onnx_bytes: bytes
    samples: Samples
    parity: ParityReport


def build(
    model: object,
    output: str | Path,
    *,
    name: str,
    samples: SamplesLike,
    version: str = "1",
    framework: str = "auto",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    labels_output: str | None = None,
    description: str = "",
    tags: Sequence[str] = (),
    metrics: Mapping[str, float] | None = None,
    serving: ServingHints | None = None,
    data_files: Sequence[str | Path] = (),
    parent: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    trust_pickle: bool = False,
    trusted_types: Sequence[str] = (),
    include_source: bool = False,
    created_at: datetime | None = None,
    created_by: str | None = None,
    code_dir: str | Path | None = ".",
    steps: Steps | None = None,
    optimization: OptimizationRequest | None = None,
    reference: SamplesLike | None = None,
    reference_reduction: Reduction = "channel-mean",
) -> BuiltPackage:
    """Convert ``model``, check parity on ``samples`` and write the package to ``output``.

    ``model`` is a Keras model, a scikit-learn estimator, an ``onnx.ModelProto``, or a path
    (``.keras``, SavedModel directory, ``.skops``, ``.pkl``/``.joblib`` with ``trust_pickle``,
    ``.onnx``); ``framework="auto"`` tells which from it. ``samples`` are a few input rows (an
    array, arrays by input name, or a ``.npy``/``.npz`` path); the first ``sample_rows`` are
    kept. ``input_names``/``output_names`` rename the model's tensors in graph order.
    ``labels`` name the classes indexed by the last dimension of ``labels_output`` (guessed
    when there is one such output). ``parent`` is the digest or path of the package this one
    follows. ``created_at`` defaults to ``SOURCE_DATE_EPOCH``, then the newest modification time of
    the model, samples and data files, then (objects in memory only) now; the code commit is
    read from the git checkout at ``code_dir`` (None: not recorded). ``optimization`` then
    optimises or quantises the checked float model (``modelpkg.optimization``): the package holds
    the result, checked against the original model's outputs with ``tolerance`` (for a quantised
    model, QUANTIZED_TOLERANCE unless ``tolerance`` is given), its float model's sha256 as the
    parent, and the manifest records what it changed. ``reference`` (training rows, as samples
    are given) becomes the package's reference profile (``modelpkg.reference``); without it the
    samples are profiled, a weak reference (the CLI says so).

    Raises InvalidInput for bad arguments and ConversionError when conversion fails or the
    ONNX model disagrees with the original beyond ``tolerance``.
    """
    steps = steps or _Quiet()
    target = _output_path(output)
    metadata = _metadata(
        name=name,
        version=version,
        description=description,
        tags=tags,
        metrics=metrics,
        serving=serving,
        data_files=data_files,
        parent=parent,
        created_at=created_at,
        created_by=created_by,
        code_dir=code_dir,
        inputs=[Path(p) for p in (model, samples) if isinstance(p, str | Path)],
    )
    arrays = load_samples(samples, sample_rows)
    kind = _framework(model, framework)
    action = "Reading the ONNX model" if kind == "onnx" else f"Converting the {kind} model to ONNX"
    with steps.step(action):
        converted = convert(
            model,
            kind,
            sample=next(iter(arrays.values())),
            opset=opset,
            trust_pickle=trust_pickle,
            trusted_types=trusted_types,
        )
    checked = _check_parity(converted, arrays, input_names, output_names, tolerance, steps)
    chosen = _labels(labels, labels_output, checked)
    record = None
    if optimization is not None and optimization.wanted:
        checked, record = _optimized(checked, optimization, chosen, tolerance, steps)
        if metadata.provenance.parent_digest is None:
            provenance = metadata.provenance.model_copy(update={"parent_digest": record.float_model_sha256})
            metadata = metadata.model_copy(update={"provenance": provenance})
    with steps.step("Profiling the reference rows"):
        profile = _profile(checked, reference, reference_reduction, chosen)
    manifest, entries = _contents(metadata, checked, chosen, include_source, record, profile)
    with steps.step("Writing the package"):
        digest = _write(target, entries)
    return BuiltPackage(target, digest, manifest)


def _output_path(output: str | Path) -> Path:
    target = Path(output)
    if target.is_dir():
        raise InvalidInput(f"output {target} is a directory; name the package file (e.g. model.pkg)")
    if not target.parent.is_dir():
        raise InvalidInput(f"output folder {target.parent} does not exist")
    return target


def _metadata(
    *,
    name: str,
    version: str,
    description: str,
    tags: Sequence[str],
    metrics: Mapping[str, float] | None,
    serving: ServingHints | None,
    data_files: Sequence[str | Path],
    parent: str | Path | None,
    created_at: datetime | None,
    created_by: str | None,
    code_dir: str | Path | None,
    inputs: Sequence[Path] = (),
) -> Metadata:
    commit, dirty = provenance.git_state(Path(code_dir) if code_dir is not None else None)
    try:
        return Metadata(
            name=name,
            version=version,
            description=description,
            tags=list(tags),
            serving=serving or ServingHints(),
            metrics=dict(metrics or {}),
            provenance=Provenance(
                data=[provenance.data_file(Path(path)) for path in data_files],
                code_commit=commit,
                code_dirty=dirty,
                parent_digest=_parent_digest(parent),
                created_at=provenance.created_at(created_at, [*inputs, *map(Path, data_files)]),
                created_by=created_by or provenance.default_creator(),
            ),
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid package metadata: {first_error(exc)}") from None


def _parent_digest(parent: str | Path | None) -> str | None:
    """A parent given as a digest, or as the path of the parent package file."""
    if parent is None or (isinstance(parent, str) and _DIGEST.match(parent)):
        return parent
    path = Path(parent)
    if not path.is_file():
        raise InvalidInput(f"parent {parent} is neither a sha256 digest nor a package file")
    return sha256_of(path)


def _framework(model: object, framework: str) -> Framework:
    if isinstance(model, str | Path) and not Path(model).exists():
        raise InvalidInput(f"model {model} does not exist")
    if framework == "auto":
        return detect_framework(model)
    if framework in FRAMEWORKS:
        return cast(Framework, framework)
    raise InvalidInput(f"unknown framework {framework!r}; expected auto or one of {', '.join(FRAMEWORKS)}")


def _check_parity(
    converted: Converted,
    arrays: Mapping[str, np.ndarray],
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    tolerance: float,
    steps: Steps,
) -> _Model:
    if not tolerance >= 0:
        raise InvalidInput(f"tolerance must be a non-negative number, got {tolerance}")
    graph = converted.model.graph
    in_map = _name_map(
        "input", [value.name for value in graph_inputs(graph)], input_names or converted.input_names
    )
    out_map = _name_map(
        "output", [value.name for value in graph.output], output_names or converted.output_names
    )
    feeds = bind_samples(arrays, converted.model, list(in_map.values()))
    with steps.step(f"Running the original model on {_rows(feeds)} sample rows"):
        expected = _original_outputs(converted, feeds, out_map)
    public = _public_model(converted.model, in_map | out_map, expected)
    raw = public.SerializeToString(deterministic=True)
    inputs = {in_map[name]: array for name, array in feeds.items()}
    with steps.step("Checking parity with onnxruntime"):
        report = compare(expected, run_onnx(raw, inputs), tolerance)
    if not report.passed:
        raise ConversionError(f"{report.failure_message()}; the tolerance can be raised if this is expected")
    return _Model(converted, in_map | out_map, public, raw, Samples(inputs, expected), report)


def _optimized(
    checked: _Model,
    request: OptimizationRequest,
    labels: tuple[list[str], str] | None,
    tolerance: float,
    steps: Steps,
) -> tuple[_Model, Optimization]:
    """The checked float model optimised or quantised, and checked again against the original."""
    what = f"{request.quantize} quantization" if request.quantize else "graph optimisation"
    public = [value.name for value in graph_inputs(checked.onnx.graph)]

    def bound(rows: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        return None if rows is None else bind_samples(rows, checked.onnx, public)

    request = dataclasses.replace(
        request, calibration=bound(request.calibration), evaluation=bound(request.evaluation)
    )
    with steps.step(f"Applying {what} with onnxruntime"):
        names, output = (labels[0], labels[1]) if labels else ([], None)
        raw, record = optimize_model(checked.onnx_bytes, request, checked.samples.inputs, output, names)
    limit = QUANTIZED_TOLERANCE if request.quantize and tolerance == DEFAULT_TOLERANCE else tolerance
    with steps.step("Checking parity of the optimised model with the original"):
        report = compare(checked.samples.outputs, run_onnx(raw, checked.samples.inputs), limit)
    if not report.passed:
        raise ConversionError(
            f"after {what}, {report.failure_message()}; "
            "the optimised model answers differently on the samples: raise --tolerance or leave it out"
        )
    model = onnx.load_from_string(raw)
    return _Model(checked.converted, checked.renamed, model, raw, checked.samples, report), record


MAX_REFERENCE_ROWS = 1_000_000


def _profile(
    checked: _Model,
    reference: SamplesLike | None,
    reduction: Reduction,
    labels: tuple[list[str], str] | None,
) -> bytes:
    """The reference profile's bytes: of ``reference`` rows, or of the samples."""
    inputs = checked.samples.inputs
    if reference is not None:
        public = [value.name for value in graph_inputs(checked.onnx.graph)]
        inputs = bind_samples(load_samples(reference, MAX_REFERENCE_ROWS), checked.onnx, public)
    outputs = run_onnx(checked.onnx_bytes, inputs)
    names, output = (labels[0], labels[1]) if labels else ([], None)
    source: Literal["reference", "samples"] = "reference" if reference is not None else "samples"
    return dump_profile(build_profile(inputs, outputs, source, reduction, output, names))


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _name_map(kind: str, onnx_names: list[str], wanted: Sequence[str]) -> dict[str, str]:
    if len(wanted) != len(onnx_names):
        raise InvalidInput(
            f"the model has {len(onnx_names)} {kind}s ({', '.join(onnx_names)}); got {len(wanted)} names"
        )
    for name in wanted:
        if not TENSOR_NAME.match(name):
            raise InvalidInput(
                f"{kind} name {name!r} must start with a letter or '_' and hold only letters, digits, '_.-'"
            )
    if len(set(wanted)) != len(wanted):
        raise InvalidInput(f"{kind} names must be unique, got {list(wanted)}")
    return dict(zip(onnx_names, wanted, strict=True))


def _original_outputs(
    converted: Converted, feeds: Mapping[str, np.ndarray], out_map: Mapping[str, str]
) -> dict[str, np.ndarray]:
    try:
        results = converted.predict(feeds)
    except MdeployError:
        raise
    except Exception as exc:  # whatever the framework raises on these inputs
        raise ConversionError(f"the original model fails on the samples: {first_line(exc)}") from None
    missing = [name for name in out_map if name not in results]
    if missing:
        raise ConversionError(f"the original model did not produce {missing}")
    return {out_map[name]: storable(name, results[name]) for name in out_map}


def _public_model(
    model: onnx.ModelProto, names: Mapping[str, str], outputs: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    public = onnx.ModelProto()
    public.CopyFrom(model)
    rename_io(public, names)
    dynamic_batch(public)
    fill_output_shapes(public, outputs)
    return public


def _labels(names: Sequence[str] | None, output: str | None, checked: _Model) -> tuple[list[str], str] | None:
    converted = checked.converted
    chosen = list(names) if names is not None else list(converted.labels or [])
    if not chosen:
        if output is not None:
            raise InvalidInput("labels_output was given without labels")
        return None
    if output is None and converted.labels_output is not None:
        output = checked.renamed.get(converted.labels_output)
    return chosen, output or _guess_labels_output(signature_of(checked.onnx), len(chosen))


def _guess_labels_output(signature: ManifestSignature, count: int) -> str:
    candidates = [spec.name for spec in signature.outputs if spec.shape and spec.shape[-1] in (count, -1)]
    if len(candidates) == 1:
        return candidates[0]
    if "probabilities" in candidates:
        return "probabilities"
    if len(signature.outputs) == 1:
        return signature.outputs[0].name
    raise InvalidInput(f"say which output the {count} labels index (labels_output / --labels-output)")


def _contents(
    metadata: Metadata,
    checked: _Model,
    labels: tuple[list[str], str] | None,
    include_source: bool,
    optimization: Optimization | None = None,
    profile: bytes | None = None,
) -> tuple[Manifest, dict[str, bytes | Path]]:
    entries: dict[str, bytes | Path] = {
        MODEL_ENTRY: checked.onnx_bytes,
        SAMPLES_ENTRY: dump_samples(checked.samples),
    }
    reference = None
    if profile is not None:
        entries[REFERENCE_ENTRY] = profile
        parsed = parse_profile(profile)
        reference = ReferenceSummary(
            sha256=hashlib.sha256(profile).hexdigest(),
            rows=parsed.rows,
            source=parsed.source,
            input_features=len(parsed.inputs),
            output_features=len(parsed.outputs),
        )
    if include_source:
        entries |= _source_entries(checked.converted.source)
    converted = checked.converted
    try:
        manifest = Manifest(
            **dict(metadata),
            format_version=FORMAT_VERSION,
            framework=FrameworkInfo(
                name=converted.framework,
                version=converted.framework_version,
                converter=converted.converter,
                opset=default_opset(checked.onnx),
            ),
            signature=signature_of(checked.onnx),
            labels=Labels(names=labels[0], output=labels[1]) if labels else None,
            parity=parity_record(checked.parity),
            files={name: _sha256(value) for name, value in entries.items()},
            optimization=optimization,
            reference=reference,
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid package metadata: {first_error(exc)}") from None
    entries[MANIFEST_ENTRY] = dump_manifest(manifest)
    return manifest, entries


def _source_entries(source: Path | None) -> dict[str, bytes | Path]:
    if source is None:
        raise InvalidInput("include_source needs the model given as a file or directory path")
    if source.is_file():
        return {f"{SOURCE_PREFIX}{source.name}": source}
    root = f"{SOURCE_PREFIX}{source.resolve().name}/"
    entries: dict[str, bytes | Path] = {}
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            raise InvalidInput(f"{path} is a symbolic link; a source folder must hold plain files")
        if path.is_file():
            entries[root + path.relative_to(source).as_posix()] = path
    return entries


def _sha256(value: bytes | Path) -> str:
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return sha256_of(value)


def _write(target: Path, entries: Mapping[str, bytes | Path]) -> str:
    """Write next to the target, read it back as the gateway will, then rename into place.

    A reader never sees half a package, and a package the gateway would refuse is not kept.
    """
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write_archive(stream, entries)
        read_package(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return sha256_of(target)
