"""Model configuration: read config.pbtxt or JSON, complete it from the ONNX model, check it.

The rules follow Triton's for ONNX models, so one repository serves on both:

* A model folder may lack config.pbtxt; the configuration is then derived from the ONNX model
  (inputs, outputs, and batching when every tensor has a variable first dimension).
* A configuration listing no inputs and outputs gets them from the ONNX model.
* Listed tensors must exist in the model with the same datatype and compatible dims; with
  ``max_batch_size`` > 0 the dims exclude the batch dimension.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format, text_format

from core import datatypes
from core.errors import InvalidInput, ModelLoadError
from core.signature import Signature, TensorSpec, dims_compatible, narrower
from protos.generated import model_config_pb2 as mc

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
DEFAULT_MODEL_FILENAME = "model.onnx"
_ACCEPTED_PLATFORMS = ("", PLATFORM)
_ACCEPTED_BACKENDS = ("", BACKEND)


def read_config_file(path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt; a syntax error names the file and the line."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as error:
        raise ModelLoadError(f"{path}: {error}") from None
    except RecursionError:
        raise ModelLoadError(f"{path}: messages nest too deeply to be a model config") from None
    return config


def parse_config_json(text: str) -> mc.ModelConfig:
    """Parse the JSON form of a ModelConfig (RepositoryModelLoad's ``config`` parameter)."""
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config)
    except json_format.ParseError as error:
        raise InvalidInput(f"load parameter 'config' is not a valid model config: {error}") from None
    except RecursionError:
        raise InvalidInput("load parameter 'config' nests too deeply to be a model config") from None
    return config


def check_supported(config: mc.ModelConfig, name: str) -> None:
    """Refuse configurations for things these servers do not run."""
    if config.name and config.name != name:
        raise ModelLoadError(f"model '{name}': config names the model '{config.name}'")
    if config.platform not in _ACCEPTED_PLATFORMS or config.backend not in _ACCEPTED_BACKENDS:
        raise ModelLoadError(
            f"model '{name}': platform '{config.platform or config.backend}' is not served here; "
            f"mdeploy servers run ONNX models (platform '{PLATFORM}')"
        )
    scheduling = config.WhichOneof("scheduling_choice")
    if scheduling in ("sequence_batching", "ensemble_scheduling"):
        raise ModelLoadError(f"model '{name}': {scheduling} is not supported by mdeploy servers")
    if config.max_batch_size < 0:
        raise ModelLoadError(f"model '{name}': max_batch_size must be >= 0")


def _batchable(onnx: Signature) -> bool:
    tensors = onnx.inputs + onnx.outputs
    return bool(tensors) and all(spec.shape and spec.shape[0] == -1 for spec in tensors)


def _config_tensor_dims(spec: TensorSpec, batched: bool) -> tuple[int, ...]:
    return spec.shape[1:] if batched else spec.shape


def complete(
    config: mc.ModelConfig, name: str, onnx: Signature, default_max_batch_size: int
) -> mc.ModelConfig:
    """A copy of ``config`` with name, platform, tensors and batching filled in from the model."""
    check_supported(config, name)
    done = mc.ModelConfig()
    done.CopyFrom(config)
    done.name = name
    done.platform = PLATFORM
    done.backend = BACKEND
    if not done.default_model_filename:
        done.default_model_filename = DEFAULT_MODEL_FILENAME
    if not done.input and not done.output:
        if done.max_batch_size == 0 and default_max_batch_size > 0 and _batchable(onnx):
            done.max_batch_size = default_max_batch_size
            if not done.HasField("dynamic_batching"):
                done.dynamic_batching.SetInParent()
        batched = done.max_batch_size > 0
        for spec in onnx.inputs:
            done.input.add(
                name=spec.name,
                data_type=datatypes.to_config_enum_name(spec.datatype),
                dims=_config_tensor_dims(spec, batched),
            )
        for spec in onnx.outputs:
            done.output.add(
                name=spec.name,
                data_type=datatypes.to_config_enum_name(spec.datatype),
                dims=_config_tensor_dims(spec, batched),
            )
    return done


def _config_specs(tensors: list[mc.ModelInput] | list[mc.ModelOutput], batched: bool) -> list[TensorSpec]:
    specs = []
    for tensor in tensors:
        enum_name = mc.DataType.Name(tensor.data_type)
        datatype = datatypes.from_config_enum_name(enum_name)
        dims = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)
        specs.append(TensorSpec(tensor.name, datatype, ((-1,) if batched else ()) + dims))
    return specs


def _match(kind: str, name: str, declared: TensorSpec, actual: TensorSpec | None) -> TensorSpec:
    if actual is None:
        raise ModelLoadError(f"model '{name}': {kind} '{declared.name}' is not in the ONNX model")
    if declared.datatype != actual.datatype:
        raise ModelLoadError(
            f"model '{name}': {kind} '{declared.name}' is {declared.datatype} in the config "
            f"but {actual.datatype} in the ONNX model"
        )
    if not dims_compatible(declared.shape, actual.shape):
        raise ModelLoadError(
            f"model '{name}': {kind} '{declared.name}' has shape {list(declared.shape)} in the config "
            f"(batch dimension included) but {list(actual.shape)} in the ONNX model"
        )
    return TensorSpec(declared.name, declared.datatype, narrower(declared.shape, actual.shape))


def serving_signature(config: mc.ModelConfig, onnx: Signature) -> Signature:
    """Check a completed config against the ONNX model; the signature requests must meet."""
    name = config.name
    batched = config.max_batch_size > 0
    if batched and not _batchable_tensors(config, onnx):
        raise ModelLoadError(
            f"model '{name}': max_batch_size is {config.max_batch_size} but the ONNX model's "
            "first dimension is not variable; set max_batch_size: 0"
        )
    inputs = [
        _match("input", name, s, onnx.input(s.name)) for s in _config_specs(list(config.input), batched)
    ]
    missing = [spec.name for spec in onnx.inputs if spec.name not in {s.name for s in inputs}]
    if missing:
        raise ModelLoadError(f"model '{name}': the ONNX model needs inputs {missing} that the config lacks")
    outputs = [
        _match("output", name, s, onnx.output(s.name)) for s in _config_specs(list(config.output), batched)
    ]
    if not outputs:
        raise ModelLoadError(f"model '{name}': the config lists no outputs")
    return Signature(tuple(inputs), tuple(outputs))


def _batchable_tensors(config: mc.ModelConfig, onnx: Signature) -> bool:
    names = {t.name for t in config.input} | {t.name for t in config.output}
    specs = [s for s in onnx.inputs + onnx.outputs if s.name in names]
    return all(spec.shape and spec.shape[0] == -1 for spec in specs)


def select_versions(policy: mc.ModelVersionPolicy, available: list[int]) -> list[int]:
    """The versions a policy serves out of those present (Triton's default: the latest one)."""
    ordered = sorted(available)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return ordered
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in ordered if v in wanted]
    count = policy.latest.num_versions if choice == "latest" else 1
    return ordered[-max(count, 1) :]
