"""The parts of one gateway process that every front end (HTTP, gRPC) works with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.backends import BackendPool
from gateway.catalog import ModelCatalog
from gateway.dataplane import DataPlane
from gateway.drift.alerts import AlertStore
from gateway.drift.monitor import DriftMonitor
from gateway.metrics import Metrics
from gateway.predictionlog.control import PredictionLogs
from gateway.registry.samples import SampleCache
from gateway.routing.router import Router
from gateway.settings import GatewaySettings
from gateway.timeseries.series import SeriesStore

if TYPE_CHECKING:
    from gateway.registry.service import Registry
    from gateway.releases import Releases


@dataclass
class GatewayState:
    settings: GatewaySettings
    pool: BackendPool
    catalog: ModelCatalog
    dataplane: DataPlane
    metrics: Metrics
    registry: Registry
    router: Router
    releases: Releases
    drift: DriftMonitor
    drift_alerts: AlertStore
    prediction_logs: PredictionLogs
    series: SeriesStore
    samples: SampleCache = field(default_factory=SampleCache)
    """Package sample rows for Try it (``GET /v1/models/{m}/samples``)."""
