"""The registry against real mdeploy-server processes and the real digits packages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import Conflict, ModelLoadError, NotFound, PackageError, Unavailable
from core.ports import free_port
from core.server_process import ServerProcess, start_server_process
from gateway.registry import tables
from gateway.registry.records import PushStatus
from gateway.registry.tables import State
from tests.gateway.registry_support import (
    Rig,
    described,
    expected_outputs,
    infer_samples,
    running_registry,
    same_bytes,
    served_versions,
    variant,
    wait_until,
)
from tests.modelpkg.zips import entries, make_zip, relisted, zipped

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier. Every test runs
# on SQLite and on PostgreSQL (``gateway_database``).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("gateway_database")]

SERVER_ARGS = ["--grpc-address", "127.0.0.1", "--model-control-mode", "explicit"]


def start_server(port: int = 0) -> ServerProcess:
    return start_server_process(["--grpc-port", str(port), *SERVER_ARGS])


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = start_server()
    yield process
    process.stop(timeout_s=10)


@pytest.fixture
def sklearn_pkg(demo_packages: dict[str, Path]) -> Path:
    return demo_packages["digits-sklearn"]


async def assert_empty(rig: Rig) -> None:
    """Nothing registered, stored, laid out or left behind in the work folder."""
    data = rig.settings.data_dir
    assert await rig.count("registry_versions") == 0
    assert await rig.stored_packages() == set()
    assert list(rig.settings.repository_dir.iterdir()) == []
    assert list(rig.registry.storage.session.folder.iterdir()) == []
    assert rig.registry.model_names() == []
    assert await rig.count("audit_log") == 0, data


async def test_a_push_is_loaded_and_answers_over_grpc(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    async with running_registry(tmp_path, [server.address]) as rig:
        result = await rig.push(sklearn_pkg)

        assert result.status is PushStatus.CREATED
        assert (result.record.model, result.record.version, result.record.state) == (
            "digits-sklearn",
            1,
            State.LIVE,
        )
        assert served_versions(server.address, "digits-sklearn") == {"1"}
        outputs = infer_samples(server.address, "digits-sklearn", "1", sklearn_pkg)
        expected = expected_outputs(sklearn_pkg)
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(outputs["label"], expected["label"])
        served = rig.registry.resolve("digits-sklearn", None)
        assert (served.version, served.max_batch_size, served.label_output) == ("1", 64, "probabilities")
        assert served.labels == tuple(str(digit) for digit in range(10))
        model_dir = rig.settings.repository_dir / "digits-sklearn"
        assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
        assert (model_dir / "1" / "model.onnx").is_file()
        assert same_bytes(await rig.registry.package_path("digits-sklearn", 1), sklearn_pkg)


async def test_pushing_the_same_package_again_changes_nothing(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    async with running_registry(tmp_path, [server.address]) as rig:
        first = await rig.push(sklearn_pkg)
        again = await rig.push(sklearn_pkg)

        assert again.status is PushStatus.UNCHANGED
        assert again.record.version == first.record.version
        assert "already loaded" in again.message
        assert await rig.count("registry_versions") == 1
        assert await rig.count("audit_log") == 1
        assert len(await rig.stored_packages()) == 1


def tampered_hash(package: Path) -> bytes:
    files = entries(package)
    model = files["model.onnx"]
    files["model.onnx"] = model[:100] + bytes([model[100] ^ 0xFF]) + model[101:]
    return zipped(files)


def zip_slip(package: Path) -> bytes:
    files = entries(package)
    return make_zip([*sorted(files.items()), ("../../escape.txt", b"owned")])


def not_onnx(package: Path) -> bytes:
    files = entries(package)
    files["model.onnx"] = b"this is not an ONNX model"
    return zipped(relisted(files))


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (tampered_hash, "does not match its sha256"),
        (zip_slip, "escapes the package"),
        (not_onnx, "not a valid ONNX model"),
    ],
)
async def test_bad_packages_are_refused_and_change_nothing(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path, make: Any, problem: str
) -> None:
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(make(sklearn_pkg))
    async with running_registry(tmp_path / "data", [server.address]) as rig:
        with pytest.raises(PackageError, match=problem) as refused:
            await rig.push(bad)

        assert refused.value.http_status == 422
        await assert_empty(rig)
        assert served_versions(server.address, "digits-sklearn") == set()


async def test_versions_take_the_package_version_when_free_else_the_next_number(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    async with running_registry(tmp_path / "data", [server.address]) as rig:
        first = await rig.push(sklearn_pkg)  # the manifest says "1"
        retrained = await rig.push(described(sklearn_pkg, tmp_path / "b.pkg", "retrained", version="1"))
        seventh = await rig.push(described(sklearn_pkg, tmp_path / "c.pkg", "pinned", version="7"))
        semantic = await rig.push(described(sklearn_pkg, tmp_path / "d.pkg", "semver", version="2.0.0"))

        numbers = [r.record.version for r in (first, retrained, seventh, semantic)]
        assert numbers == [1, 2, 7, 8]
        assert [r.record.package_version for r in (first, retrained, seventh, semantic)] == [
            "1",
            "1",
            "7",
            "2.0.0",
        ]
        assert rig.registry.resolve("digits-sklearn", None).version == "8"
        assert [v.version for v in rig.registry.served_versions("digits-sklearn")] == ["1", "2", "7", "8"]
        assert served_versions(server.address, "digits-sklearn") == {"1", "2", "7", "8"}


async def test_a_deleted_version_leaves_the_catalog_the_backends_and_the_repository(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    async with running_registry(tmp_path / "data", [server.address]) as rig:
        await rig.push(sklearn_pkg)
        await rig.push(described(sklearn_pkg, tmp_path / "v2.pkg", "v2"))

        deleted = await rig.registry.delete_version("digits-sklearn", 1, "key:tester", reason="superseded")
        assert deleted.state is State.RETIRED
        assert served_versions(server.address, "digits-sklearn") == {"2"}
        assert not (rig.settings.repository_dir / "digits-sklearn" / "1").exists()
        with pytest.raises(NotFound, match="no live version '1'"):
            rig.registry.resolve("digits-sklearn", "1")

        await rig.registry.delete_version("digits-sklearn", 2, "key:tester", forced=True, reason="withdrawn")

        assert served_versions(server.address, "digits-sklearn") == set()
        assert rig.registry.model_names() == []
        assert not (rig.settings.repository_dir / "digits-sklearn").exists()
        # Deleted packages stay downloadable.
        assert same_bytes(await rig.registry.package_path("digits-sklearn", 1), sklearn_pkg)
        events = await rig.registry.audit_events(model="digits-sklearn")
        digests = {e.version: e.details.get("digest", "")[:12] for e in events if e.action == "push"}
        assert [(e.action, e.version, e.from_value, e.to_value, e.reason) for e in events] == [
            ("delete", "2", "version 2", "retired", "withdrawn"),
            ("delete", "1", "version 1", "retired", "superseded"),
            ("push", "2", None, f"version 2, sha256:{digests['2']}", ""),
            ("push", "1", None, f"version 1, sha256:{digests['1']}", ""),
        ]
        assert events[0].details["forced"] is True
        assert {e.actor for e in events} == {"key:tester"}


async def test_pushing_a_deleted_package_again_restores_its_version(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    async with running_registry(tmp_path / "data", [server.address]) as rig:
        await rig.push(sklearn_pkg)
        await rig.registry.delete_version("digits-sklearn", 1, "key:tester", forced=True)

        restored = await rig.push(sklearn_pkg)

        assert (restored.status, restored.record.version, restored.record.state) == (
            PushStatus.RESTORED,
            1,
            State.LIVE,
        )
        assert served_versions(server.address, "digits-sklearn") == {"1"}
        assert (await rig.registry.audit_events(limit=1))[0].action == "restore"


async def test_a_package_with_another_signature_is_refused_for_an_existing_model(
    tmp_path: Path, server: ServerProcess, demo_packages: dict[str, Path]
) -> None:
    def rename(manifest: dict[str, Any]) -> None:
        manifest["name"] = "digits-sklearn"

    keras_as_sklearn = variant(demo_packages["digits-keras"], tmp_path / "k.pkg", rename)
    async with running_registry(tmp_path / "data", [server.address]) as rig:
        await rig.push(demo_packages["digits-sklearn"])

        with pytest.raises(Conflict, match=r"differs from live version 1.*outputs"):
            await rig.push(keras_as_sklearn)

        assert await rig.count("registry_versions") == 1
        assert len(await rig.stored_packages()) == 1


async def test_without_a_healthy_backend_nothing_is_registered(tmp_path: Path, sklearn_pkg: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    async with running_registry(tmp_path, [nobody]) as rig:
        with pytest.raises(Unavailable, match="no inference server is available"):
            await rig.push(sklearn_pkg)

        await assert_empty(rig)


async def test_a_version_the_backend_refuses_is_not_registered_and_the_live_one_stays(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    """The CPU-only onnxruntime of the test servers cannot honour an instance group of kind GPU."""

    def on_gpu(manifest: dict[str, Any]) -> None:
        manifest["serving"]["device"] = "gpu"
        manifest["description"] = "needs a GPU"

    gpu_pkg = variant(sklearn_pkg, tmp_path / "gpu.pkg", on_gpu)
    async with running_registry(tmp_path / "data", [server.address]) as rig:
        await rig.push(sklearn_pkg)

        with pytest.raises(ModelLoadError, match=f"{server.address} refused.*nothing was registered"):
            await rig.push(gpu_pkg)

        assert [row["version"] for row in await rig.registry.storage.rows()] == [1]
        assert len(await rig.stored_packages()) == 1
        assert sorted(p.name for p in (rig.settings.repository_dir / "digits-sklearn").iterdir()) == [
            "1",
            "config.pbtxt",
            "labels.txt",
        ]
        assert served_versions(server.address, "digits-sklearn") == {"1"}
        assert infer_samples(server.address, "digits-sklearn", "1", sklearn_pkg)["label"].shape == (16,)


async def test_a_restarted_backend_gets_the_live_versions_back(tmp_path: Path, sklearn_pkg: Path) -> None:
    first = start_server()
    port = first.port
    async with running_registry(tmp_path, [first.address]) as rig:
        await rig.push(sklearn_pkg)
        first.kill()
        replacement = start_server(port)
        try:
            assert served_versions(replacement.address, "digits-sklearn") == set()
            await wait_until(
                lambda: served_versions(replacement.address, "digits-sklearn") == {"1"},
                "the reconcile loop to load version 1 on the restarted server",
            )
            infer_samples(replacement.address, "digits-sklearn", "1", sklearn_pkg)
        finally:
            replacement.stop(timeout_s=10)


async def test_reconcile_unloads_versions_that_are_not_live(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    async with running_registry(tmp_path / "data", [server.address], reconcile_interval_s=3600) as rig:
        await rig.push(sklearn_pkg)
        v2 = await rig.push(described(sklearn_pkg, tmp_path / "v2.pkg", "v2"))
        # Another process retires version 2 behind this registry's back (a shared database).
        await rig.database.run(tables.retire, "digits-sklearn", v2.record.version, "key:elsewhere")
        assert served_versions(server.address, "digits-sklearn") == {"1", "2"}

        await rig.registry.reconcile()

        assert served_versions(server.address, "digits-sklearn") == {"1"}
        assert [v.version for v in rig.registry.served_versions("digits-sklearn")] == ["1"]
        assert not (rig.settings.repository_dir / "digits-sklearn" / "2").exists()


async def test_a_replica_that_died_unnoticed_does_not_block_a_push(tmp_path: Path, sklearn_pkg: Path) -> None:
    alive, dead = start_server(), start_server()
    try:
        backends = [alive.address, dead.address]
        async with running_registry(tmp_path, backends, health_interval_s=3600) as rig:
            dead.kill()  # the pool still believes it healthy: the next check is an hour away

            result = await rig.push(sklearn_pkg)

            assert result.status is PushStatus.CREATED
            assert served_versions(alive.address, "digits-sklearn") == {"1"}
            assert [b.address for b in rig.pool.healthy()] == [alive.address]
    finally:
        alive.stop(timeout_s=10)
