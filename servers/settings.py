"""Settings of one inference server process.

Read, highest precedence first, from command-line flags (``servers.cli``), environment
variables prefixed ``MDEPLOY_SERVER_``, and an optional JSON or TOML file named by
``--settings-file`` / ``MDEPLOY_SERVER_SETTINGS_FILE``. Each field is documented once, here.
"""

from __future__ import annotations

import ipaddress
import tempfile
from enum import StrEnum
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
# Values of --execution-provider: what GPU-placed models run on (CUDA under TensorRT).
EXECUTION_PROVIDERS = ("cuda", "tensorrt")


class ModelControlMode(StrEnum):
    """How models get loaded (the meaning of tritonserver's ``--model-control-mode``)."""

    NONE = "none"
    """Load every model of the repository at start; load/unload RPCs are refused."""
    EXPLICIT = "explicit"
    """Load only ``load_models`` at start; clients load and unload with the repository RPCs."""


class ServerSettings(BaseSettings):
    """Everything an ``mdeploy-server`` process can be told."""

    model_config = SettingsConfigDict(env_prefix="MDEPLOY_SERVER_", extra="forbid")

    model_repository: Path | None = None
    """Triton-layout repository: ``<repo>/<model>/config.pbtxt``, ``<repo>/<model>/<version>/model.onnx``.
    None serves an empty repository (models arrive with RepositoryModelLoad file overrides)."""
    grpc_address: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 to accept connections from other machines."""
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """Port to listen on; 0 picks a free one (the chosen port is logged)."""
    auth_token_file: Path | None = None
    """File holding the token every call must carry (``authorization: Bearer <token>``); None:
    no token, and then the server listens on loopback addresses only."""
    tls_cert_file: Path | None = None
    """PEM certificate (chain) to serve TLS with, for clients on other hosts; None: plaintext."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""
    tls_client_ca_file: Path | None = None
    """With TLS: accept only clients with a certificate signed by this CA (mutual TLS)."""
    allow_unauthenticated_health: bool = True
    """With a token: let grpc.health.v1 checks pass without it (for orchestrators' probes)."""
    model_control_mode: ModelControlMode = ModelControlMode.NONE
    load_models: list[str] = Field(default_factory=list)
    """Models loaded at start in explicit mode; ``*`` loads all."""
    device: str = "auto"
    """Execution provider: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:<n>``."""
    intra_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads inside one operator; 0 lets onnxruntime choose (one per core)."""
    inter_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads across independent operators; 0 lets onnxruntime choose."""
    allow_spinning: bool = False
    """Let idle onnxruntime threads spin. Off by default: spinning threads take the CPU that the
    gRPC event loop needs to decode the next requests, so batches stay small."""
    inline_batch_us: float = Field(default=200.0, ge=0)
    """Batches whose model run has taken less than this (microseconds, moving average) run on
    the event loop itself: for tiny models a hand-off to a worker thread costs more than the run."""
    default_max_batch_size: int = Field(default=64, ge=0)
    """max_batch_size given to models without config.pbtxt whose ONNX has a dynamic batch dimension,
    when they run on the CPU."""
    gpu_default_max_batch_size: int = Field(default=1024, ge=0)
    """The same for models that run on a GPU: its throughput keeps growing with the batch far past
    where a CPU's stops (``loadtests/gpu_check.sh`` measures the curve)."""
    execution_provider: str = "cuda"
    """What models placed on a GPU run on: ``cuda``, or ``tensorrt`` (onnxruntime's TensorRT
    provider, CUDA under it for what TensorRT does not take; engines cached under the work dir)."""
    default_max_queue_size: int = Field(default=1024, ge=1)
    """Requests that may wait per model version when the config sets no max_queue_size."""
    max_receive_message_mb: int = Field(default=256, ge=1, le=2047)
    """Largest gRPC message accepted, in MiB (a load request carries the whole model)."""
    max_send_message_mb: int = Field(default=256, ge=1, le=2047)
    """Largest gRPC message sent, in MiB."""
    max_elements_per_input: int = Field(default=64 * MiB, ge=1)
    """Largest element count of one input tensor; larger requests get INVALID_ARGUMENT."""
    exit_timeout_secs: float = Field(default=30.0, ge=0)
    """Grace period on SIGTERM/SIGINT: in-flight requests may finish for this long."""
    work_dir: Path | None = None
    """Where models received over the wire are written; None uses a temporary folder."""
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _tls_files_go_together(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        return self

    @model_validator(mode="after")
    def _unauthenticated_only_on_loopback(self) -> ServerSettings:
        if self.auth_token_file is None and not _loopback(self.grpc_address):
            raise ValueError(
                f"refusing to listen on {self.grpc_address} without --auth-token-file: a server that "
                "checks no token must stay on a loopback address (127.0.0.1, ::1)"
            )
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:<n>, not {value!r}")

    @field_validator("execution_provider")
    @classmethod
    def _known_execution_provider(cls, value: str) -> str:
        if value in EXECUTION_PROVIDERS:
            return value
        raise ValueError(f"execution_provider must be cuda or tensorrt, not {value!r}")

    @property
    def tensorrt_engine_cache(self) -> Path:
        """Where TensorRT engines are kept: under the work dir, else the system's temporary folder."""
        base = self.work_dir if self.work_dir is not None else Path(tempfile.gettempdir())
        return base / "tensorrt-engines"

    @property
    def max_receive_message_bytes(self) -> int:
        return self.max_receive_message_mb * MiB

    @property
    def max_send_message_bytes(self) -> int:
        return self.max_send_message_mb * MiB


def _loopback(address: str) -> bool:
    host = address.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
