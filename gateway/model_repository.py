"""Triton's model-repository and statistics extensions, for both front ends (HTTP and gRPC).

What a key sees: admin keys every model, other keys the models they may use. Load and unload
act on the registry through ``gateway.releases``, audited, never around it.
"""

from __future__ import annotations

from pydantic import BaseModel

from gateway.auth.keys import KeyRecord
from gateway.auth.scopes import KeyScope
from gateway.registry.service import Registry
from gateway.registry.tables import State
from gateway.state import GatewayState
from protos.generated import inference_pb2 as pb

INDEX_SCOPES = (KeyScope.ADMIN, KeyScope.PREDICT)
"""The repository index counts in the admin scope for admin keys, else in predict."""


class IndexEntry(BaseModel):
    """One version in the repository index (Triton's ``RepositoryIndexResponse.ModelIndex``)."""

    name: str
    version: str
    state: str
    """READY (live) or UNAVAILABLE (deleted)."""
    reason: str


async def index(registry: Registry, key: KeyRecord, ready_only: bool) -> list[IndexEntry]:
    entries = []
    for summary in await registry.models(include_retired=not ready_only):
        if not (key.has_scope(KeyScope.ADMIN) or key.allows_model(summary.name)):
            continue
        for record in summary.versions:
            live = record.state is State.LIVE
            entries.append(
                IndexEntry(
                    name=record.model,
                    version=str(record.version),
                    state="READY" if live else "UNAVAILABLE",
                    reason="" if live else "deleted",
                )
            )
    return entries


async def statistics(
    state: GatewayState, key: KeyRecord, name: str = "", version: str = ""
) -> pb.ModelStatisticsResponse:
    """The backends' statistics, summed, of the models ``key`` may use (or of ``name``)."""
    if name:
        state.catalog.resolve(name, version or None)  # NotFound for what is not served
    answer = await state.pool.statistics(pb.ModelStatisticsRequest(name=name, version=version))
    allowed = [stats for stats in answer.model_stats if key.allows_model(stats.name)]
    return pb.ModelStatisticsResponse(model_stats=allowed)
