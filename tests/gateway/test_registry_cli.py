"""``mdeploy push``, ``list``, ``info`` and ``pull`` against a real gateway and inference server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.ports import free_port
from mdeploy.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from tests.gateway.registry_support import (
    LiveGatewayRig,
    live_gateway_with_server,
    renamed,
    same_bytes,
    variant,
)
from tests.modelpkg.zips import entries, zipped

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGatewayRig]:
    with live_gateway_with_server(tmp_path_factory.mktemp("gateway"), free_port()) as live:
        yield live


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the flags count: no config file, gateway or key from the environment."""
    monkeypatch.setenv("MDEPLOY_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.delenv("MDEPLOY_GATEWAY", raising=False)
    monkeypatch.delenv("MDEPLOY_API_KEY", raising=False)


@pytest.fixture(scope="module")
def pushed(
    rig: LiveGatewayRig, demo_packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A package of its own model, pushed once for the read-only commands."""
    package = renamed(
        demo_packages["digits-sklearn"], tmp_path_factory.mktemp("pushed") / "cli-read.pkg", "cli-read"
    )
    assert main(["push", str(package), "--gateway", rig.url, "--api-key", rig.admin_key]) == EXIT_OK
    return package


def mdeploy(rig: LiveGatewayRig, *args: str, key: str | None = None) -> int:
    return main([*args, "--gateway", rig.url, "--api-key", key or rig.admin_key])


def test_push_uploads_and_reports_the_new_version(
    rig: LiveGatewayRig, demo_packages: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = renamed(demo_packages["digits-sklearn"], tmp_path / "cli-push.pkg", "cli-push")

    assert mdeploy(rig, "push", str(package)) == EXIT_OK
    first = capsys.readouterr().out
    assert mdeploy(rig, "push", str(package)) == EXIT_OK
    second = capsys.readouterr().out

    assert "✓ pushed model 'cli-push' version 1" in first
    assert "cli-push:1 (live)  sha256:" in first
    assert "= package sha256:" in second
    assert "already loaded as model 'cli-push' version 1" in second


def test_push_shows_the_gateways_reason_for_a_bad_package(
    rig: LiveGatewayRig, demo_packages: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = entries(demo_packages["digits-sklearn"])
    files["model.onnx"] = b"not onnx at all"
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(zipped(files))

    assert mdeploy(rig, "push", str(bad)) == EXIT_FAILURE

    error = capsys.readouterr().err
    assert "422" in error
    assert "'model.onnx' does not match its sha256" in error


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "needs an API key"),
        ("mdk_0123456789abcdef_" + "x" * 43, "rejected API key mdk_0123456789abcdef_..."),
    ],
)
def test_push_explains_an_authentication_failure(
    rig: LiveGatewayRig, pushed: Path, key: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["push", str(pushed), "--gateway", rig.url, "--api-key", key]) == EXIT_FAILURE
    error = capsys.readouterr().err
    assert says in " ".join(error.split())


def test_push_explains_an_unreachable_gateway(pushed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert main(["push", str(pushed), "--gateway", nowhere, "--api-key", "k"]) == EXIT_FAILURE
    error = capsys.readouterr().err
    assert error.startswith(f"mdeploy: error: cannot reach the gateway at {nowhere}")  # no blank line first


def test_push_of_a_missing_file_is_a_usage_error(
    rig: LiveGatewayRig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mdeploy(rig, "push", "no-such.pkg") == EXIT_USAGE
    assert capsys.readouterr().err.startswith("mdeploy: error: no-such.pkg: no such file")


def test_list_shows_each_version_and_marks_the_default(
    rig: LiveGatewayRig, pushed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mdeploy(rig, "list") == EXIT_OK
    table = capsys.readouterr().out
    assert mdeploy(rig, "list", "--json") == EXIT_OK
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}

    line = next(line for line in table.splitlines() if "cli-read" in line)
    assert "1 *" in line
    assert "live" in line
    assert models["cli-read"]["default_version"] == "1"


def test_info_shows_a_model_and_a_version(
    rig: LiveGatewayRig, pushed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mdeploy(rig, "info", "cli-read") == EXIT_OK
    model = capsys.readouterr().out
    assert mdeploy(rig, "info", "cli-read:1") == EXIT_OK
    version = capsys.readouterr().out

    assert "1 *" in next(line for line in model.splitlines() if "cli-read" in line)
    assert "cli-read version 1 (live)" in version
    assert "pixels" in version
    assert "FP32" in version
    assert "[-1, 64]" in version
    assert "probabilities: 0, 1, 2" in version


def test_info_of_an_unknown_model_names_the_known_ones(
    rig: LiveGatewayRig, pushed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mdeploy(rig, "info", "nope") == EXIT_FAILURE
    error = " ".join(capsys.readouterr().err.split())
    assert "404" in error
    assert "there is no model 'nope'; models:" in error
    assert "cli-read" in error


def test_pull_downloads_the_package_byte_for_byte(
    rig: LiveGatewayRig, pushed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "pulled.pkg"

    assert mdeploy(rig, "pull", "cli-read:1", "-o", str(target)) == EXIT_OK
    assert same_bytes(target, pushed)
    assert "cli-read:1" in capsys.readouterr().out

    assert mdeploy(rig, "pull", "cli-read:1", "-o", str(target)) == EXIT_USAGE
    assert "--force" in capsys.readouterr().err
    assert mdeploy(rig, "pull", "cli-read:7", "-o", str(tmp_path / "x.pkg")) == EXIT_FAILURE
    assert "has no version 7" in capsys.readouterr().err
    assert not (tmp_path / "x.pkg").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pulled.pkg"]


def test_pull_without_a_version_takes_the_live_one(
    rig: LiveGatewayRig, pushed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert mdeploy(rig, "pull", "cli-read") == EXIT_OK
    assert same_bytes(tmp_path / "cli-read-1.pkg", pushed)


def test_delete_retires_a_version_and_a_whole_model_only_with_force(
    rig: LiveGatewayRig, demo_packages: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = renamed(demo_packages["digits-sklearn"], tmp_path / "d1.pkg", "cli-delete")
    second = variant(first, tmp_path / "d2.pkg", lambda manifest: manifest.update(description="v2"))
    assert mdeploy(rig, "push", str(first)) == EXIT_OK
    assert mdeploy(rig, "push", str(second)) == EXIT_OK
    capsys.readouterr()

    assert mdeploy(rig, "delete", "cli-delete") == EXIT_USAGE
    assert "stops serving it (live versions: 1, 2); pass --force" in capsys.readouterr().err
    assert mdeploy(rig, "delete", "cli-delete:1") == EXIT_FAILURE  # the live version
    assert "it is live" in " ".join(capsys.readouterr().err.split())
    assert mdeploy(rig, "delete", "cli-delete:2", "--reason", "old") == EXIT_OK  # staged
    assert "✓ deleted cli-delete:2" in capsys.readouterr().out
    assert mdeploy(rig, "delete", "cli-delete", "--force") == EXIT_OK
    assert "✓ deleted cli-delete:1" in capsys.readouterr().out
    assert mdeploy(rig, "info", "cli-delete") == EXIT_OK
    states = [line.split()[3] for line in capsys.readouterr().out.splitlines() if "cli-delete" in line]
    assert states == ["deleted", "deleted"]
