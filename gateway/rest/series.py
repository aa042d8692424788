"""``GET /v1/models/{model}/series``: the model's per-version time series, for the console.

Request and error rates, p50/p99 latency and mean reward per version, in 10 s buckets over the
last hour (``window=1h``, the default) or 1 min buckets over the day (``window=24h``), over every
gateway process's traffic (``gateway.timeseries.series``). A key that may call the model may read
them (``predict`` with the model in its list), and so may an ``admin`` key.
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
from gateway.timeseries.series import RESOLUTIONS, SeriesAnswer


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


def routes() -> list[Route]:
    return [Route("/v1/models/{model}/series", series, methods=["GET"])]
