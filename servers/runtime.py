"""onnxruntime sessions: execution providers, threads, and the model's own signature.

Where a model runs is decided once per version (:func:`placement`): the server's ``--device``,
overridden by the config's instance group. The session is then checked against that decision:
onnxruntime quietly drops a provider it cannot start (a missing CUDA library, say) and runs on
the CPU, so a version asked to run on a GPU that did not get one fails to load with the reason.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from core import datatypes
from core.errors import ModelLoadError
from core.signature import Signature, TensorSpec
from protos.generated import model_config_pb2 as mc

log = logging.getLogger(__name__)

Provider = str | tuple[str, dict[str, Any]]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# Accelerator names of Triton's execution_accelerators for the onnxruntime backend.
_ACCELERATORS = {"tensorrt": TENSORRT, "openvino": "OpenVINOExecutionProvider"}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def cuda_available() -> bool:
    return CUDA in available_providers()


def check_device(device: str, execution_provider: str = "cuda") -> None:
    """Fail at start, with the fix, when the settings ask for a provider that is not there."""
    if device.startswith("cuda") and not cuda_available():
        raise ModelLoadError(
            f"device '{device}' needs onnxruntime's {CUDA}, which this installation "
            f"lacks (available: {', '.join(available_providers())}); install the `gpu` extra "
            "(pip install 'mdeploy[gpu]', onnxruntime-gpu) or use --device cpu"
        )
    if execution_provider == "tensorrt" and TENSORRT not in available_providers():
        raise ModelLoadError(
            f"--execution-provider tensorrt needs onnxruntime's {TENSORRT}, which this installation "
            f"lacks (available: {', '.join(available_providers())}); use --execution-provider cuda"
        )


_preload_lock = threading.Lock()
_preloaded = False


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels beside onnxruntime-gpu, once per process.

    ``mdeploy[gpu]`` installs those libraries as wheels, where the dynamic loader does not look;
    onnxruntime's own ``preload_dlls`` finds them. It prints what fails: that goes to the log.
    """
    global _preloaded
    with _preload_lock:
        if _preloaded or not hasattr(ort, "preload_dlls"):
            return
        _preloaded = True
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            try:
                ort.preload_dlls()
            except (OSError, RuntimeError) as error:
                print(f"preload_dlls failed: {error}")
        for line in printed.getvalue().splitlines():
            log.warning("onnxruntime: %s", line)


@dataclass(frozen=True)
class Placement:
    """Where one model version runs, before onnxruntime has been asked."""

    kind: str  # "cpu" or "cuda"
    device_id: int
    explicit: bool  # a GPU was asked for by name (--device cuda[:N] or KIND_GPU), not by `auto`

    @property
    def on_gpu(self) -> bool:
        return self.kind == "cuda"


def placement(device: str, config: mc.ModelConfig) -> Placement:
    """The server setting, overridden by the model's instance group as Triton does."""
    kind, gpu, explicit = ("cuda", 0, True) if device.startswith("cuda") else (device, 0, False)
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
            kind, gpu, explicit = "cuda", (group.gpus[0] if group.gpus else gpu), True
    return Placement(kind, gpu, explicit)


def providers_for(
    device: str,
    config: mc.ModelConfig,
    execution_provider: str = "cuda",
    engine_cache: Path | None = None,
) -> list[Provider]:
    """Execution providers in priority order: accelerators, CUDA or CPU, CPU last."""
    return _providers(placement(device, config), config, execution_provider, engine_cache)


def _providers(
    where: Placement, config: mc.ModelConfig, execution_provider: str, engine_cache: Path | None
) -> list[Provider]:
    available = set(available_providers())
    configured = config.optimization.execution_accelerators
    wanted = configured.gpu_execution_accelerator if where.on_gpu else configured.cpu_execution_accelerator
    providers: list[Provider] = []
    for accelerator in wanted:
        provider = _ACCELERATORS.get(accelerator.name)
        if provider is None or provider not in available:
            raise ModelLoadError(
                f"model '{config.name}': execution accelerator '{accelerator.name}' is not available "
                f"in this onnxruntime (available: {', '.join(sorted(available))})"
            )
        providers.append((provider, dict(accelerator.parameters)))
    if where.on_gpu:
        if execution_provider == "tensorrt" and TENSORRT not in map(provider_name, providers):
            providers.append((TENSORRT, _tensorrt_options(where.device_id, engine_cache)))
        providers.append((CUDA, {"device_id": where.device_id}))
    providers.append(CPU)
    return providers


def _tensorrt_options(device_id: int, engine_cache: Path | None) -> dict[str, Any]:
    # Building an engine takes seconds to minutes; the cache keeps it across restarts.
    options: dict[str, Any] = {"device_id": device_id}
    if engine_cache is not None:
        engine_cache.mkdir(parents=True, exist_ok=True)
        options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_cache)}
    return options


def provider_name(provider: Provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def create_session(
    path: Path,
    config: mc.ModelConfig,
    *,
    device: str,
    intra_op_threads: int,
    inter_op_threads: int,
    allow_spinning: bool = False,
    execution_provider: str = "cuda",
    engine_cache: Path | None = None,
) -> ort.InferenceSession:
    """Open ``path`` on the providers its placement asks for; raises ModelLoadError with the reason."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    spinning = "1" if allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    options.log_severity_level = 3
    where = placement(device, config)
    providers = _providers(where, config, execution_provider, engine_cache)
    if len(providers) > 1:
        preload_cuda_libraries()
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises several unrelated exception types
        raise ModelLoadError(f"model '{config.name}': onnxruntime cannot load {path.name}: {error}") from None
    check_providers(config.name, where, providers, session.get_providers())
    log.info(
        "model %s version %s runs on %s",
        config.name or path.parent.parent.name,
        path.parent.name,
        ", ".join(session.get_providers()),
    )
    return session


def check_providers(model: str, where: Placement, wanted: list[Provider], active: list[str]) -> None:
    """Refuse a session that silently left out a provider it was asked for; warn under ``auto``."""
    missing = [name for name in map(provider_name, wanted) if name not in active]
    if not missing:
        return
    message = (
        f"model '{model}': onnxruntime could not start {', '.join(missing)} and would run on "
        f"{', '.join(active)}; check that the GPU is visible and that CUDA 13 and cuDNN 9 "
        "libraries are installed (the `gpu` extra brings them)"
    )
    if where.explicit or any(name != CUDA for name in missing):
        raise ModelLoadError(message)
    log.warning("%s (--device auto: serving on the CPU)", message)


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
