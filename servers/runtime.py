"""onnxruntime sessions: execution providers, threads, and the model's own signature."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime as ort

from mdeploy.errors import ModelLoadError
from mdeploy.signature import Signature, TensorSpec
from protos import datatypes
from protos.generated import model_config_pb2 as mc

log = logging.getLogger(__name__)

Provider = str | tuple[str, dict[str, Any]]

# Accelerator names of Triton's execution_accelerators for the onnxruntime backend.
_ACCELERATORS = {"tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in available_providers()


def check_device(device: str) -> None:
    """Fail at start, with the fix, when the device setting asks for CUDA that is not there."""
    if device.startswith("cuda") and not cuda_available():
        raise ModelLoadError(
            f"device '{device}' needs onnxruntime's CUDAExecutionProvider, which this installation "
            f"lacks (available: {', '.join(available_providers())}); install the `gpu` extra "
            "(onnxruntime-gpu) or use --device cpu"
        )


def _device_for(device: str, config: mc.ModelConfig) -> tuple[str, int]:
    """('cpu'|'cuda', gpu id) from the server setting, overridden by the instance group."""
    kind, gpu = ("cuda", 0) if device.startswith("cuda") else (device, 0)
    if device.startswith("cuda:"):
        gpu = int(device[5:])
    if kind == "auto":
        kind = "cuda" if cuda_available() else "cpu"
    if config.instance_group:
        group = config.instance_group[0]
        if group.kind == mc.ModelInstanceGroup.KIND_CPU:
            kind = "cpu"
        elif group.kind == mc.ModelInstanceGroup.KIND_GPU:
            check_device("cuda")
            kind, gpu = "cuda", (group.gpus[0] if group.gpus else gpu)
    return kind, gpu


def providers_for(device: str, config: mc.ModelConfig) -> list[Provider]:
    """Execution providers in priority order: configured accelerators, CUDA or CPU, CPU last."""
    kind, gpu = _device_for(device, config)
    available = set(available_providers())
    accelerators = config.optimization.execution_accelerators
    wanted = (
        accelerators.gpu_execution_accelerator if kind == "cuda" else accelerators.cpu_execution_accelerator
    )
    providers: list[Provider] = []
    for accelerator in wanted:
        provider = _ACCELERATORS.get(accelerator.name)
        if provider is None or provider not in available:
            raise ModelLoadError(
                f"model '{config.name}': execution accelerator '{accelerator.name}' is not available "
                f"in this onnxruntime (available: {', '.join(sorted(available))})"
            )
        providers.append((provider, dict(accelerator.parameters)))
    if kind == "cuda":
        providers.append(("CUDAExecutionProvider", {"device_id": gpu}))
    providers.append("CPUExecutionProvider")
    return providers


def create_session(
    path: Path,
    config: mc.ModelConfig,
    *,
    device: str,
    intra_op_threads: int,
    inter_op_threads: int,
    allow_spinning: bool = False,
) -> ort.InferenceSession:
    """Open ``path``; any onnxruntime failure becomes a ModelLoadError with its reason."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    spinning = "1" if allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    options.log_severity_level = 3
    providers = providers_for(device, config)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises several unrelated exception types
        raise ModelLoadError(f"model '{config.name}': onnxruntime cannot load {path.name}: {error}") from None
    log.info("model %s uses %s", path.parent.parent.name, ", ".join(session.get_providers()))
    return session


def _shape(dims: list[int | str | None]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


def session_signature(session: ort.InferenceSession, model: str) -> Signature:
    """The model's inputs and outputs as onnxruntime sees them."""
    try:
        inputs = tuple(
            TensorSpec(i.name, datatypes.from_onnxruntime(i.type), _shape(i.shape))
            for i in session.get_inputs()
        )
        outputs = tuple(
            TensorSpec(o.name, datatypes.from_onnxruntime(o.type), _shape(o.shape))
            for o in session.get_outputs()
        )
    except Exception as error:
        raise ModelLoadError(f"model '{model}': {error}") from None
    return Signature(inputs, outputs)
