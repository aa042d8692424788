"""Every route of the application's route table refuses a missing, malformed, revoked or under-scoped key.

The walk takes the routes from the application itself, so a route added later is checked too.
Health, metrics and the OpenAPI document are public and must answer without a key.
"""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Route

from gateway.app import all_routes
from gateway.auth.authorization import accepted_scopes
from gateway.auth.scopes import KeyScope
from gateway.process import GatewayProcess
from tests.e2e.test_end_to_end import create_key
from tests.gateway.test_openapi import PUBLIC

PARAMS = {"model": "arms", "version": "1", "key_id": "0123456789abcdef"}


def guarded_calls() -> list[tuple[str, str, tuple[KeyScope, ...]]]:
    """(method, path, the scopes that let a key through) of every guarded route."""
    calls = []
    for route in all_routes():
        assert isinstance(route, Route)
        scopes = accepted_scopes(route.endpoint)
        if route.path in PUBLIC:
            assert not scopes, route.path
            continue
        assert scopes, f"{route.path} has no scope"
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS[m.group(1)], route.path)
        calls += [(method, path, scopes) for method in sorted(route.methods or ()) if method != "HEAD"]
    return calls


@pytest.fixture(scope="module")
def keys(gateway: GatewayProcess) -> dict[str, str]:
    revoked = create_key(gateway, "predict", "feedback", "admin")
    answer = httpx.delete(
        f"{gateway.url}/v1/admin/keys/{revoked.split('_')[1]}",
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
    )
    assert answer.status_code == 200, answer.text
    without = {
        scope: create_key(gateway, *(s.value for s in KeyScope if s is not scope)) for scope in KeyScope
    }
    return {"revoked": revoked, **{f"without-{scope.value}": key for scope, key in without.items()}}


def test_the_walk_covers_every_guarded_route() -> None:
    calls = guarded_calls()
    assert {scopes[0] for _, _, scopes in calls} == set(KeyScope)
    assert len(calls) >= 25


def test_every_guarded_route_refuses_bad_keys(gateway: GatewayProcess, keys: dict[str, str]) -> None:
    attempts: dict[str, dict[str, str]] = {
        "missing": {},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "malformed scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "unknown": {"X-API-Key": "mdk_0123456789abcdef_" + "x" * 43},
        "revoked": {"Authorization": f"Bearer {keys['revoked']}"},
    }
    wrong: list[str] = []
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for method, path, scopes in guarded_calls():
            scope = scopes[0]
            for what, headers in attempts.items():
                answer = http.request(method, path, headers=headers)
                if answer.status_code != 401 or "error" not in answer.json():
                    wrong.append(f"{method} {path} with a {what} key: {answer.status_code}")
            lacking = keys[f"without-{scope.value}"]
            if len(scopes) > 1:  # a key with none of the scopes that let it through
                lacking = create_key(gateway, *(s.value for s in KeyScope if s not in scopes))
            under = http.request(method, path, headers={"Authorization": f"Bearer {lacking}"})
            if under.status_code != 403 or scope.value not in under.json()["error"]:
                wrong.append(f"{method} {path} without scope {scope.value}: {under.status_code} {under.text}")
        for path in PUBLIC:
            assert http.get(path).status_code in (200, 503), path  # ready may be 503 without models
    assert not wrong, "\n".join(wrong)
