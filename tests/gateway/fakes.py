"""In-process stand-ins for what the data plane and router reach over the network.

``FakeBackends`` answers ModelInfer as an inference server would for a model computing
``y = 2 * x`` (per version, ``y = 2 * x + version - 1``, so answers tell versions apart), and
records every call; ``Catalog`` serves fixed versions from memory as the registry does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from core.errors import MdeployError, NotFound
from core.signature import Signature, TensorSpec
from gateway.catalog import ServedVersion
from protos import codecs
from protos.generated import inference_pb2 as pb

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 4)),))


def served(version: str, model: str = "m", max_batch_size: int = 64) -> ServedVersion:
    return ServedVersion(model, version, SIGNATURE, max_batch_size)


@dataclass
class Catalog:
    """Live versions by model; the highest is the default."""

    versions: dict[str, list[ServedVersion]] = field(default_factory=dict)

    def resolve(self, name: str, version: str | None) -> ServedVersion:
        live = self.served_versions(name)
        if version is None:
            return max(live, key=lambda v: int(v.version))
        for candidate in live:
            if candidate.version == version:
                return candidate
        raise NotFound(f"model '{name}' has no live version {version}")

    def served_versions(self, name: str) -> list[ServedVersion]:
        if name not in self.versions:
            raise NotFound(f"model '{name}' is not served")
        return self.versions[name]

    def model_names(self) -> list[str]:
        return list(self.versions)


@dataclass
class FakeBackends:
    """ModelInfer answered in this process; ``hold`` keeps calls waiting until it is set."""

    calls: list[pb.ModelInferRequest] = field(default_factory=list)
    fail_with: MdeployError | None = None
    failing_versions: set[str] = field(default_factory=set)
    hold: asyncio.Event | None = None
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        self.calls.append(request)
        self.called.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_with is not None and (
            not self.failing_versions or request.model_version in self.failing_versions
        ):
            raise self.fail_with
        inputs = codecs.decode_request_inputs(request)
        x = inputs["x"]
        response = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version)
        codecs.encode_output(response, "y", (2 * x + int(request.model_version) - 1).astype(np.float32))
        return response
