"""Two gateway processes on one Redis share bandit statistics, feedback and deployment changes."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.process import start_gateway_process
from tests.e2e.arms import GatewayClient
from tests.e2e.test_deployments import ENV, push_arms, wait_for
from tests.e2e.test_end_to_end import create_key
from tests.services import RedisServer


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    yield process
    process.stop(timeout_s=10)


def test_two_gateways_share_statistics_feedback_and_changes(
    tmp_path: Path, server: ServerProcess, redis_server: RedisServer
) -> None:
    env = {**ENV, "MDEPLOY_SHARED_STATE_URL": redis_server.uri}
    data_dir = tmp_path / "gateway"
    first = start_gateway_process(data_dir, [server.address], env=env)
    second = None
    clients: list[GatewayClient] = []
    try:
        versions = push_arms(first, tmp_path)
        a, b = versions["a"], versions["b"]
        second = start_gateway_process(data_dir, [server.address], env=env)
        key = create_key(first, "predict", "feedback")
        clients = [GatewayClient(g.url, key, first.admin_key) for g in (first, second)]
        one, two = clients
        one.rollout({"kind": "thompson", "versions": [a, b]})
        wait_for(
            lambda: (two.status()["policy"] or {}).get("kind") == "thompson", "the rollout to reach gateway 2"
        )

        for i in range(40):
            answer = clients[i % 2].predict()
            assert answer.status_code == 200, answer.text
            counted = clients[(i + 1) % 2].feedback(answer.headers["x-request-id"], 1.0)  # the other gateway
            assert counted.status_code == 200, counted.text
            assert counted.json()["version"] == answer.headers["x-model-version"]
            assert clients[i % 2].feedback(answer.headers["x-request-id"], 1.0).status_code == 409

        for client in clients:  # pulls are written every 0.1 s, rewards at once
            wait_for(functools.partial(_counted_all, client, 40), "both gateways to see every pull")

        two.admin("POST", "rollback", {"to": b})
        wait_for(lambda: one.status()["policy"]["versions"] == [b], "the rollback to reach gateway 1")
        assert {one.predict().headers["x-model-version"] for _ in range(20)} == {b}
        deleted = one.http.delete(f"/v1/admin/models/arms/versions/{b}", headers=one.admin_headers)
        assert deleted.status_code == 409
        assert "it is live" in deleted.json()["error"]
    finally:
        for client in clients:
            client.close()
        for gateway in (first, second):
            if gateway is not None:
                gateway.stop(timeout_s=10)


def _counted_all(client: GatewayClient, requests: int) -> bool:
    arms = client.status()["arms"]
    return (sum(arm["pulls"] for arm in arms), sum(arm["rewards"] for arm in arms)) == (requests, requests)
