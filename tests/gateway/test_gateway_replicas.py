"""Several gateway processes on one Redis share one rate limit exactly and see revocations at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.auth.keys import with_keys
from gateway.process import GatewayProcess, start_gateway_process
from gateway.settings import GatewaySettings
from tests.services import RedisServer

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

LIMIT = 10


@pytest.fixture
def backend() -> Iterator[ServerProcess]:
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    yield server
    server.stop(timeout_s=10)


def start_replicas(
    data_dir: Path, backend: ServerProcess, redis: RedisServer, fail_open: bool
) -> list[GatewayProcess]:
    env = {
        "MDEPLOY_RATE_LIMIT_STORAGE": redis.uri,
        "MDEPLOY_RATE_LIMIT_PREDICT": f"{LIMIT}/minute",
        "MDEPLOY_RATE_LIMIT_FAIL_OPEN": "true" if fail_open else "false",
    }
    return [start_gateway_process(data_dir, [backend.address], env=env) for _ in range(2)]


def predictor_key(data_dir: Path) -> str:
    return with_keys(GatewaySettings(data_dir=data_dir), lambda keys: keys.create(["predict"])).key


def status(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def wait_for_status(gateways: list[GatewayProcess], key: str, wanted: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while {status(g, key).status_code for g in gateways} != {wanted}:
        assert time.monotonic() < deadline, f"gateways did not answer {wanted} within {timeout_s}s"
        time.sleep(0.1)


def test_two_gateways_share_one_limit_and_revocations(
    tmp_path: Path, backend: ServerProcess, redis_server: RedisServer
) -> None:
    replicas = start_replicas(tmp_path, backend, redis_server, fail_open=False)
    try:
        key = predictor_key(tmp_path)
        answers = [status(replicas[i % 2], key) for i in range(LIMIT + 4)]
        assert [a.status_code for a in answers] == [200] * LIMIT + [429] * 4
        assert all(int(a.headers["retry-after"]) > 0 for a in answers[LIMIT:])
        assert answers[LIMIT - 1].headers["x-ratelimit-remaining"] == "0"
        admin = replicas[0].admin_key
        other = predictor_key(tmp_path)
        assert status(replicas[1], other).status_code == 200
        revoked = httpx.delete(
            f"{replicas[0].url}/v1/admin/keys/{other.split('_')[1]}",
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert revoked.status_code == 200, revoked.text
        assert status(replicas[1], other).status_code == 401
    finally:
        for replica in replicas:
            replica.stop(timeout_s=10)


@pytest.mark.parametrize(("fail_open", "during_outage"), [(False, 503), (True, 200)], ids=["closed", "open"])
def test_redis_outage_follows_the_setting_and_recovers(
    tmp_path: Path, backend: ServerProcess, redis_server: RedisServer, fail_open: bool, during_outage: int
) -> None:
    replicas = start_replicas(tmp_path, backend, redis_server, fail_open=fail_open)
    try:
        key = predictor_key(tmp_path)
        wait_for_status(replicas, key, 200)
        redis_server.stop()
        wait_for_status(replicas, key, during_outage)
        redis_server.start()
        wait_for_status(replicas, key, 200)
    finally:
        for replica in replicas:
            replica.stop(timeout_s=10)
