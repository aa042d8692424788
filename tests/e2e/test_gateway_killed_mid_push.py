"""SIGKILL to the gateway in the middle of a push: after a restart the registry holds the whole
version or none of it, no partial upload is left behind, and the live versions serve again.

(Every phase of a push, from upload to commit, is crashed at in tests/gateway/test_registry_recovery.py;
this test does it to the real ``mdeploy serve`` process, with the upload still streaming.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from core.server_process import start_server_process
from gateway.process import start_gateway_process
from tests.e2e.arms import GOOD, MODEL, build_arm_packages

CHUNK = 1024


def _uploads(data_dir: Path) -> list[Path]:
    return [path for path in data_dir.rglob("*.upload") if path.is_file()]


def test_a_gateway_killed_mid_push_keeps_the_live_versions_and_nothing_partial(tmp_path: Path) -> None:
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    data_dir = tmp_path / "gateway"
    gateway = start_gateway_process(data_dir, [server.address])
    packages = build_arm_packages(tmp_path)
    admin = {"Authorization": f"Bearer {gateway.admin_key}", "Content-Type": "application/octet-stream"}
    try:
        first = httpx.post(
            f"{gateway.url}/v1/admin/packages", content=packages["a"].read_bytes(), headers=admin
        )
        assert first.status_code == 201, first.text
        killed = threading.Event()
        payload = packages["b"].read_bytes()

        def stalling_body() -> Iterator[bytes]:
            yield payload[:CHUNK]  # part of the package, then the upload stalls
            killed.wait(timeout=60)
            yield payload[CHUNK:]

        def push() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the gateway dies under it
                httpx.post(
                    f"{gateway.url}/v1/admin/packages", content=stalling_body(), headers=admin, timeout=60
                )

        pusher = threading.Thread(target=push)
        pusher.start()
        deadline = time.monotonic() + 30
        while not _uploads(data_dir):  # the gateway is writing the upload
            assert time.monotonic() < deadline, "the upload never reached the gateway"
            time.sleep(0.01)
        gateway.kill()
        killed.set()
        pusher.join(timeout=60)

        gateway = start_gateway_process(data_dir, [server.address])
        admin["Authorization"] = f"Bearer {gateway.admin_key}"
        listing = httpx.get(f"{gateway.url}/v1/admin/models/{MODEL}", headers=admin).json()
        assert [(v["version"], v["state"]) for v in listing["versions"]] == [
            (first.json()["version"], "live")
        ]
        assert _uploads(data_dir) == []
        answer = httpx.post(
            f"{gateway.url}/v1/models/{MODEL}:predict", json={"instances": [GOOD]}, headers=admin
        )
        assert answer.status_code == 200, answer.text
        again = httpx.post(f"{gateway.url}/v1/admin/packages", content=payload, headers=admin, timeout=60)
        assert again.status_code == 201, again.text  # the interrupted push can simply be repeated
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)
