"""The OpenAPI document describes exactly the application's routes, and guarded ones say so."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from gateway.app import all_routes
from gateway.auth.authorization import required_scope
from gateway.rest import openapi

PUBLIC = {"/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json"}


def route_table() -> set[tuple[str, str]]:
    pairs = set()
    for route in all_routes():
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                pairs.add((route.path, method.lower()))
    return pairs


def test_every_route_is_documented_and_nothing_else() -> None:
    documented = {
        (path, method) for path, item in openapi.document(all_routes())["paths"].items() for method in item
    }
    assert documented == route_table()


def test_only_health_metrics_and_the_document_are_public() -> None:
    for route in all_routes():
        assert isinstance(route, Route)
        assert (required_scope(route.endpoint) is None) == (route.path in PUBLIC), route.path
    for path, item in openapi.document(all_routes())["paths"].items():
        for operation in item.values():
            assert (operation["security"] == []) == (path in PUBLIC), path


def test_the_document_is_built_from_the_endpoints_models() -> None:
    built = openapi.document(all_routes())
    listing = built["paths"]["/v1/admin/keys"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"] == {"$ref": "#/components/schemas/KeyList"}
    assert built["components"]["schemas"]["KeyList"]["properties"]["keys"]["items"] == {
        "$ref": "#/components/schemas/KeyInfo"
    }
    rollout = built["paths"]["/v1/admin/deployments/{model}"]["put"]
    assert rollout["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Rollout"
    }
    assert rollout["description"] == "Needs an API key with the `admin` scope."
    assert {"401", "403", "429", "409"} <= set(rollout["responses"])


def test_a_route_without_an_operation_is_refused() -> None:
    async def undocumented(request: object) -> None: ...

    with pytest.raises(LookupError, match="/v1/extra declares no Operation"):
        openapi.document([*all_routes(), Route("/v1/extra", undocumented)])
