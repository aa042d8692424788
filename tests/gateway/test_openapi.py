"""The OpenAPI document describes exactly the application's routes, and guarded ones say so."""

from __future__ import annotations

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
    documented = {(path, method) for path, item in openapi.document()["paths"].items() for method in item}
    assert documented == route_table()


def test_only_health_metrics_and_the_document_are_public() -> None:
    for route in all_routes():
        assert isinstance(route, Route)
        assert (required_scope(route.endpoint) is None) == (route.path in PUBLIC), route.path
    for path, item in openapi.document()["paths"].items():
        for operation in item.values():
            assert (operation["security"] == []) == (path in PUBLIC), path
