"""The objects a request handler reaches through ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from gateway.backends import BackendPool
from gateway.catalog import ModelCatalog
from gateway.dataplane import DataPlane
from gateway.metrics import Metrics
from gateway.routing.router import Router
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from gateway.registry.service import Registry


@dataclass
class GatewayState:
    settings: GatewaySettings
    pool: BackendPool
    catalog: ModelCatalog
    dataplane: DataPlane
    metrics: Metrics
    registry: Registry
    router: Router | None = None


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state
