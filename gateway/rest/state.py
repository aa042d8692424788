"""The objects a request handler reaches through ``request.app.state``."""

from __future__ import annotations

from starlette.requests import Request

from gateway.state import GatewayState


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state
