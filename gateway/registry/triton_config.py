"""A model's Triton configuration (config.pbtxt), built from its newest live version's manifest.

Triton configures a *model*, not a version: one config.pbtxt serves every version folder.
The registry keeps the versions of a model interchangeable (same signature and labels, see
:mod:`gateway.registry.admission`), so the newest live version's manifest describes them all;
its serving hints (batching, instances, device) apply to the whole model.

Rules, as Triton's model-config validation wants them:

* ``max_batch_size`` is the hint when every input and output has a variable first dimension
  (the batch dimension), else 0; dims then leave out the batch dimension.
* A tensor whose only dimension is the batch dimension gets ``dims: [1]`` with an empty
  ``reshape`` (Triton refuses empty dims).
* Dynamic batching only when batching; the instance group from the hints' count and device.
* ``label_filename`` names ``labels.txt`` in the model folder when the package has labels.
"""

from __future__ import annotations

from google.protobuf import json_format, text_format

from core import datatypes
from core.errors import PackageError
from modelpkg import Manifest, ManifestTensor
from protos.generated import model_config_pb2 as mc

PLATFORM = "onnxruntime_onnx"
MODEL_FILENAME = "model.onnx"
LABELS_FILENAME = "labels.txt"
_KINDS = {
    "auto": mc.ModelInstanceGroup.KIND_AUTO,
    "cpu": mc.ModelInstanceGroup.KIND_CPU,
    "gpu": mc.ModelInstanceGroup.KIND_GPU,
}


def batchable(manifest: Manifest) -> bool:
    """Whether every tensor's first dimension is the variable batch dimension."""
    tensors = [*manifest.signature.inputs, *manifest.signature.outputs]
    return all(spec.shape and spec.shape[0] == -1 for spec in tensors)


def max_batch_size(manifest: Manifest) -> int:
    return manifest.serving.max_batch_size if batchable(manifest) else 0


def model_config(name: str, manifest: Manifest, versions: list[int]) -> mc.ModelConfig:
    """The configuration serving ``versions`` of ``name``, described by ``manifest``."""
    config = mc.ModelConfig(name=name, platform=PLATFORM, default_model_filename=MODEL_FILENAME)
    config.max_batch_size = max_batch_size(manifest)
    config.version_policy.specific.versions.extend(sorted(versions))
    batched = config.max_batch_size > 0
    labelled = manifest.labels.output if manifest.labels else None
    for spec in manifest.signature.inputs:
        _tensor(config.input.add(), spec, batched)
    for spec in manifest.signature.outputs:
        output = config.output.add()
        _tensor(output, spec, batched)
        if spec.name == labelled:
            output.label_filename = LABELS_FILENAME
    if batched:
        _dynamic_batching(config.dynamic_batching, manifest)
    group = config.instance_group.add(count=manifest.serving.instances)
    group.kind = _KINDS[manifest.serving.device]
    return config


def _tensor(tensor: mc.ModelInput | mc.ModelOutput, spec: ManifestTensor, batched: bool) -> None:
    tensor.name = spec.name
    tensor.data_type = mc.DataType.Value(datatypes.to_config_enum_name(spec.datatype))
    dims = spec.shape[1:] if batched else spec.shape
    if dims:
        tensor.dims.extend(dims)
    elif batched:
        tensor.dims.append(1)
        tensor.reshape.SetInParent()
    else:
        raise PackageError(
            f"tensor '{spec.name}' is a scalar (shape []); a model server needs at least one "
            "dimension: give it shape [1], or [-1] to batch it"
        )


def _dynamic_batching(batching: mc.ModelDynamicBatching, manifest: Manifest) -> None:
    batching.SetInParent()
    batching.preferred_batch_size.extend(manifest.serving.preferred_batch_sizes)
    batching.max_queue_delay_microseconds = manifest.serving.max_queue_delay_us


def config_text(config: mc.ModelConfig) -> str:
    """The config.pbtxt form."""
    return str(text_format.MessageToString(config))


def wire_config_json(config: mc.ModelConfig) -> str:
    """RepositoryModelLoad's ``config`` parameter: the JSON form, without the labels file.

    Labels are the gateway's business (each version's own, from its manifest); leaving
    ``label_filename`` out means a load needs no file beside the version folders.
    """
    wire = mc.ModelConfig()
    wire.CopyFrom(config)
    for output in wire.output:
        output.ClearField("label_filename")
    return str(json_format.MessageToJson(wire, preserving_proto_field_name=True))


def labels_text(names: list[str]) -> str:
    """labels.txt: one class name a line (a line break inside a name becomes a space)."""
    return "".join(" ".join(name.splitlines()) + "\n" for name in names)
