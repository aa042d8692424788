"""The package admin API on a real gateway (``mdeploy serve`` under uvicorn) and inference server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.ports import free_port
from gateway.auth import KeyScope, route_scopes
from gateway.rest import admin_packages
from tests.gateway.registry_support import LiveGatewayRig, live_gateway_with_server, renamed, served_versions
from tests.modelpkg.zips import entries, zipped

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

UPLOAD_LIMIT = 256 * 1024
"""Larger than the demo packages (~20 KB), small enough to pass in a test."""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGatewayRig]:
    data_dir = tmp_path_factory.mktemp("gateway")
    with live_gateway_with_server(data_dir, free_port(), MDEPLOY_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT)) as live:
        yield live


@pytest.fixture
def package(demo_packages: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The sklearn demo package under a model name of this test's own."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:60]
    return renamed(demo_packages["digits-sklearn"], tmp_path / f"{name}.pkg", name)


def model_name(package: Path) -> str:
    return package.stem


def test_every_route_needs_the_admin_scope() -> None:
    scopes = route_scopes(admin_packages.routes())
    assert len(scopes) == 7
    assert set(scopes.values()) == {KeyScope.ADMIN}


def test_push_then_list_inspect_download_and_predict(rig: LiveGatewayRig, package: Path) -> None:
    name = model_name(package)
    with rig.client() as http:
        created = http.post("/v1/admin/packages", content=package.read_bytes())
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "created"
        assert (created.json()["name"], created.json()["version"]) == (name, "1")
        digest = created.json()["digest"]
        assert digest == hashlib.sha256(package.read_bytes()).hexdigest()

        again = http.post("/v1/admin/packages", content=package.read_bytes())
        assert (again.status_code, again.json()["status"]) == (200, "unchanged")

        listed = {m["name"]: m for m in http.get("/v1/admin/models").json()["models"]}
        assert listed[name]["default_version"] == "1"
        assert [v["digest"] for v in listed[name]["versions"]] == [digest]

        info = http.get(f"/v1/admin/models/{name}/versions/1").json()
        assert (info["state"], info["manifest"]["signature"]["inputs"][0]["name"]) == ("live", "pixels")

        download = http.get(f"/v1/admin/models/{name}/versions/1/package")
        assert download.content == package.read_bytes()
        assert download.headers["x-package-digest"] == digest

        prediction = http.post(f"/v1/models/{name}:predict", json={"instances": [[0.0] * 64]})
        assert prediction.status_code == 200, prediction.text
        assert prediction.json()["model_version"] == "1"
    assert served_versions(rig.server.address, name) == {"1"}


def test_a_tampered_package_is_refused_with_the_problem_and_nothing_kept(
    rig: LiveGatewayRig, package: Path
) -> None:
    files = entries(package)
    files["samples.npz"] = files["samples.npz"].replace(b"pixels", b"pixelz", 1)
    stored_before = sorted((rig.data_dir / "packages").iterdir())
    with rig.client() as http:
        refused = http.post("/v1/admin/packages", content=zipped(files))

        assert refused.status_code == 422
        assert "does not match its sha256" in refused.json()["error"]
        assert model_name(package) not in http.get("/v1/admin/models?all=true").text
    assert sorted((rig.data_dir / "packages").iterdir()) == stored_before
    assert rig.leftover_uploads() == []


def test_an_upload_over_the_limit_is_refused_with_413_and_leaves_no_file(rig: LiveGatewayRig) -> None:
    def stream() -> Iterator[bytes]:
        for _ in range(2 * UPLOAD_LIMIT // 65536):
            yield b"\0" * 65536

    with rig.client() as http:
        declared = http.post("/v1/admin/packages", content=b"\0" * (UPLOAD_LIMIT + 1))
        chunked = http.post("/v1/admin/packages", content=stream())

    for response in (declared, chunked):
        assert response.status_code == 413
        assert f"upload limit of {UPLOAD_LIMIT} bytes" in response.json()["error"]
    assert rig.leftover_uploads() == []


def test_form_uploads_and_empty_bodies_are_refused_with_what_to_send(
    rig: LiveGatewayRig, package: Path
) -> None:
    with rig.client() as http:
        form = http.post("/v1/admin/packages", files={"file": package.read_bytes()})
        empty = http.post("/v1/admin/packages", content=b"")

    assert (form.status_code, empty.status_code) == (400, 400)
    assert "--data-binary" in form.json()["error"]
    assert "empty" in empty.json()["error"]


def test_a_key_without_the_admin_scope_cannot_push(rig: LiveGatewayRig, package: Path) -> None:
    with rig.client(rig.make_key("predict")) as http:
        refused = http.post("/v1/admin/packages", content=package.read_bytes())

    assert refused.status_code == 403
    assert "'admin' scope" in refused.json()["error"]


def test_delete_refuses_the_live_version_unless_forced_and_is_audited(
    rig: LiveGatewayRig, package: Path
) -> None:
    name = model_name(package)
    with rig.client() as http:
        assert http.post("/v1/admin/packages", content=package.read_bytes()).status_code == 201

        refused = http.delete(f"/v1/admin/models/{name}/versions/1")
        assert refused.status_code == 409
        assert "force=true" in refused.json()["error"]

        deleted = http.delete(
            f"/v1/admin/models/{name}/versions/1", params={"force": "true", "reason": "bad"}
        )
        assert (deleted.status_code, deleted.json()["state"]) == (200, "retired")
        gone = http.post(f"/v1/models/{name}:predict", json={"instances": [[0.0] * 64]})
        assert (gone.status_code, f"model '{name}' is not served" in gone.json()["error"]) == (404, True)
        assert http.get(f"/v1/admin/models/{name}/versions/1").json()["state"] == "retired"
        assert http.get(f"/v1/admin/models/{name}/versions/9").status_code == 404

        events = http.get("/v1/admin/audit", params={"model": name}).json()["events"]
    digest = events[-1]["details"]["digest"]
    assert (
        [(e["action"], e["from"], e["to"], e["reason"]) for e in events]
        == [
            ("delete", "version 1", "retired", "bad"),
            ("repoint", "pinned 1", None, "bad"),  # its last version: the deployment goes too
            ("go-live", None, "pinned 1", "version 1 is the model's first"),
            ("push", None, f"version 1, sha256:{digest[:12]}", ""),
        ]
    )
    assert served_versions(rig.server.address, name) == set()
