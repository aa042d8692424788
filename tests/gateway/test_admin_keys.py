"""The admin API for keys: create shows the key once, list never shows secrets, delete revokes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.auth import KeyStore

KEYS = "/v1/admin/keys"


@pytest.fixture
async def admin(key_store: KeyStore) -> dict[str, str]:
    return {"Authorization": f"Bearer {(await key_store.create(['admin'], name='root')).key}"}


async def test_create_answers_201_with_a_working_key(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {"scopes": ["predict"], "models": ["iris"], "rate_limit": "5/second", "expires_at": "30d"}
    response = await http.post(KEYS, json={**body, "name": "web app"}, headers=admin)
    assert response.status_code == 201
    created = response.json()
    assert created["key"].startswith(f"mdk_{created['id']}_")
    assert created["scopes"] == ["predict"]
    assert (created["models"], created["rate_limit"]) == (["iris"], "5/second")
    assert created["status"] == "active"
    assert created["expires_at"].endswith("Z")
    predicted = await http.post("/v1/models/iris:predict", headers={"X-API-Key": created["key"]})
    assert predicted.status_code == 200
    assert predicted.headers["X-RateLimit-Limit"] == "5"


async def test_list_shows_keys_without_secrets(
    http: httpx.AsyncClient, admin: dict[str, str], key_store: KeyStore
) -> None:
    created = await key_store.create(["predict"], name="listed")
    response = await http.get(KEYS, headers=admin)
    assert response.status_code == 200
    listed = {entry["name"]: entry for entry in response.json()["keys"]}
    assert set(listed) == {"root", "listed"}
    assert listed["listed"]["id"] == created.record.id
    assert created.key.rsplit("_", 1)[1] not in response.text
    assert all("key" not in entry for entry in listed.values())


async def test_delete_revokes_the_key_at_once(
    http: httpx.AsyncClient, admin: dict[str, str], key_store: KeyStore
) -> None:
    created = await key_store.create(["predict"])
    response = await http.delete(f"{KEYS}/{created.record.id}", headers=admin)
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    predicted = await http.post("/v1/models/iris:predict", headers={"X-API-Key": created.key})
    assert predicted.status_code == 401
    fetched = await http.get(f"{KEYS}/{created.record.id}", headers=admin)
    assert fetched.json()["revoked_at"] is not None


async def test_delete_of_an_unknown_key_is_404(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.delete(f"{KEYS}/0123456789abcdef", headers=admin)
    assert response.status_code == 404
    assert "no API key" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"scopes": ["predict"], "colour": "red"}, "unknown field 'colour'"),
        ({}, "field 'scopes' is required"),
        ({"scopes": "predict"}, "field 'scopes'"),
        ({"scopes": ["superuser"]}, "unknown scope 'superuser'"),
        ({"scopes": ["predict"], "rate_limit": "100/fortnight"}, "'100/fortnight' is not understood"),
        ({"scopes": ["predict"], "expires_at": "2020-01-01"}, "in the past"),
        ({"scopes": ["predict"], "expires_at": "soon"}, "neither a date"),
        ({"scopes": ["predict"], "models": []}, "models list is empty"),
        (["predict"], "must be a JSON object"),
    ],
)
async def test_bad_create_bodies_are_400_saying_what_to_fix(
    http: httpx.AsyncClient, admin: dict[str, str], body: Any, message: str
) -> None:
    response = await http.post(KEYS, json=body, headers=admin)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_body_that_is_not_json_is_400(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.post(KEYS, content=b"{scopes:", headers=admin)
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]


async def test_oversized_body_is_413(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.post(KEYS, json={"scopes": ["predict"], "name": "x" * 70_000}, headers=admin)
    assert response.status_code == 413


async def test_admin_routes_need_the_admin_scope(http: httpx.AsyncClient, key_store: KeyStore) -> None:
    headers = {"Authorization": f"Bearer {(await key_store.create(['predict', 'feedback'])).key}"}
    for method, path in (("GET", KEYS), ("POST", KEYS), ("DELETE", f"{KEYS}/0123456789abcdef")):
        response = await http.request(method, path, headers=headers, json={"scopes": ["admin"]})
        assert response.status_code == 403, (method, path)
        assert "'admin' scope" in response.json()["error"]
