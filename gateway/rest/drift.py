"""``GET /v1/models/{model}/drift``: how far a version's live traffic moved from its reference.

Admin scope: the answer describes other clients' inputs (their distribution, not their rows).
Without ``version``, the version that requests naming none get; ``window`` is 5m, 1h or 24h.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.drift.live import WINDOWS
from gateway.drift.report import DriftReport
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state

DEFAULT_WINDOW = "1h"


@documented(
    Operation(
        "Drift of a version's live inputs and outputs from its reference profile (PSI, KS, classes)",
        answer=DriftReport,
        errors=(400, 404),
        params=(
            Param("version", {"type": "string", "maxLength": 32}),
            Param("window", {"type": "string", "enum": list(WINDOWS)}),
        ),
    )
)
@requires(KeyScope.ADMIN)
async def drift(request: Request) -> Response:
    state = gateway_state(request)
    model = request.path_params["model"]
    version = request.query_params.get("version") or state.router.live_version(model)
    state.catalog.resolve(model, version)  # NotFound names the loaded versions
    window = request.query_params.get("window") or DEFAULT_WINDOW
    return ModelResponse(state.drift.report(model, version, window))


def routes() -> list[Route]:
    return [Route("/v1/models/{model}/drift", drift, methods=["GET"])]
