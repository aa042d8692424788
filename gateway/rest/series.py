"""``GET /v1/models/{model}/series``: the model's per-version time series, for the console.

Request and error rates, p50/p99 latency and mean reward per version, in 10 s buckets over the
last hour (``window=1h``, the default) or 1 min buckets over the day (``window=24h``), over every
gateway process's traffic (``gateway.timeseries.series``). A key that may call the model may read
them (``predict`` with the model in its list), and so may an ``admin`` key.

``GET /v1/series/summary?window=5m``: the same numbers at a glance for the console's models page,
one request rate, p99 and error rate per model and version over the last few minutes, for every
model the key may call (under the same rule), in one cheap read.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state
from gateway.timeseries.series import GLANCE_WINDOW, RESOLUTIONS, GlanceAnswer, SeriesAnswer


@documented(
    Operation(
        "Per-version request rate, error rate, p50/p99 latency and mean reward over the last hour "
        "(10 s buckets) or day (1 min buckets)",
        answer=SeriesAnswer,
        errors=(400, 404),
        params=(Param("window", {"type": "string", "enum": list(RESOLUTIONS)}),),
    )
)
@requires(KeyScope.PREDICT, KeyScope.ADMIN, model_param="model")
async def series(request: Request) -> Response:
    state = gateway_state(request)
    model = request.path_params["model"]
    # Every loaded version, staged ones too; NotFound names an unknown model.
    versions = [served.version for served in state.catalog.served_versions(model)]
    window = request.query_params.get("window") or "1h"
    return ModelResponse(await state.series.series(model, versions, window))


@documented(
    Operation(
        "Request rate, p99 latency and error rate over the last window (1m to 1h, default 5m) of "
        "every model this key may call, and of each of its loaded versions",
        answer=GlanceAnswer,
        errors=(400,),
        params=(
            Param(
                "window",
                {"type": "string", "pattern": "^[1-9][0-9]{0,3}[smh]$", "default": GLANCE_WINDOW},
                description="how far back: 1m to 1h in whole 10 s steps, such as 5m or 300s",
            ),
        ),
    )
)
@requires(KeyScope.PREDICT, KeyScope.ADMIN)
async def summary(request: Request) -> Response:
    state = gateway_state(request)
    key = request.state.api_key
    catalog = state.catalog
    served = {
        name: [version.version for version in catalog.served_versions(name)]
        for name in catalog.model_names()
        if key.allows_model(name)
    }
    window = request.query_params.get("window") or GLANCE_WINDOW
    return ModelResponse(await state.series.glance(served, window))


def routes() -> list[Route]:
    return [
        Route("/v1/models/{model}/series", series, methods=["GET"]),
        Route("/v1/series/summary", summary, methods=["GET"]),
    ]
