"""Traffic between versions, with real processes: bandits, canary, sticky keys, guard, rollback, restart."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton

from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.arms import BAD, GOOD, MODEL, GatewayClient, build_arm_packages
from tests.e2e.conftest import run_cli
from tests.e2e.test_end_to_end import create_key
from tests.services import PostgresServer

_databases = itertools.count(1)
ENV = {
    "MDEPLOY_ROUTING_SEED": "11",
    "MDEPLOY_DEPLOYMENT_REFRESH_S": "0.2",
    "MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute",
    "MDEPLOY_RATE_LIMIT_FEEDBACK": "1000000/minute",
    "MDEPLOY_RATE_LIMIT_ADMIN": "1000000/minute",
}


@dataclass
class Stack:
    server: ServerProcess
    data_dir: Path
    gateway: GatewayProcess
    client: GatewayClient
    versions: dict[str, str] = field(default_factory=dict)  # arm name: registry version
    key: str = ""
    env: dict[str, str] = field(default_factory=lambda: dict(ENV))

    def restart_gateway(self) -> None:
        self.client.close()
        assert self.gateway.stop(timeout_s=30) == 0
        self.gateway = start_gateway_process(self.data_dir, [self.server.address], env=self.env)
        self.client = GatewayClient(self.gateway.url, self.key, self.gateway.admin_key)


def push_arms(gateway: GatewayProcess, directory: Path) -> dict[str, str]:
    versions = {}
    for arm, package in build_arm_packages(directory).items():
        response = httpx.post(
            f"{gateway.url}/v1/admin/packages",
            content=package.read_bytes(),
            headers={
                "Authorization": f"Bearer {gateway.admin_key}",
                "Content-Type": "application/octet-stream",
            },
            timeout=120,
        )
        assert response.status_code == 201, response.text
        versions[arm] = response.json()["version"]
    return versions


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole routing and feedback suite runs on the data folder's SQLite, then on PostgreSQL."""
    env = dict(ENV)
    if request.param == "postgresql":
        cluster: PostgresServer = request.getfixturevalue("postgres_cluster")
        env["MDEPLOY_DATABASE_URL"] = cluster.create_database(f"deployments_{next(_databases)}")
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    data_dir = tmp_path_factory.mktemp("routing-gateway")
    gateway = start_gateway_process(data_dir, [server.address], env=env)
    versions = push_arms(gateway, tmp_path_factory.mktemp("arms"))
    key = create_key(gateway, "predict", "feedback", database_url=env.get("MDEPLOY_DATABASE_URL"))
    built = Stack(
        server, data_dir, gateway, GatewayClient(gateway.url, key, gateway.admin_key), versions, key, env
    )
    yield built
    built.client.close()
    built.gateway.stop(timeout_s=10)
    server.stop(timeout_s=10)


def test_each_bandit_sends_most_late_traffic_to_the_better_arm(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    truth = {a: 0.3, b: 0.6}
    for kind in ("epsilon-greedy", "ucb1", "thompson"):
        stack.client.rollout({"kind": kind, "versions": [a, b]})
        world = random.Random(2026)
        served = []
        for _ in range(3000):
            answer = stack.client.predict()
            assert answer.status_code == 200, answer.text
            version = answer.headers["x-model-version"]
            reward = 1.0 if world.random() < truth[version] else 0.0
            counted = stack.client.feedback(answer.headers["x-request-id"], reward)
            assert counted.status_code == 200, counted.text
            assert counted.json()["version"] == version
            served.append(version)
        late_share = served[-1000:].count(b) / 1000
        print(f"{kind}: {late_share:.1%} of the last 1000 of 3000 requests to the better arm")  # -s shows it
        assert late_share >= 0.8, f"{kind}: {late_share:.1%} of the last 1000 requests went to the better arm"
        arms = {arm["version"]: arm for arm in stack.client.status()["arms"]}
        assert arms[a]["pulls"] + arms[b]["pulls"] == 3000
        assert arms[b]["rewards"] == served.count(b)
        low, high = arms[b]["reward_ci95"]
        assert low < arms[b]["mean_reward"] < high
        assert abs(arms[b]["mean_reward"] - 0.6) < 0.05


def test_canary_weights_hold_within_binomial_tolerance(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    stack.client.rollout({"kind": "canary", "versions": [a, b], "weights": {a: 90, b: 10}})
    n, p = 2000, 0.1
    served = Counter(stack.client.predict().headers["x-model-version"] for _ in range(n))
    sigma = (n * p * (1 - p)) ** 0.5
    assert set(served) == {a, b}
    assert abs(served[b] - n * p) <= 4 * sigma, served
    arms = {arm["version"]: arm for arm in stack.client.status()["arms"]}
    assert arms[b]["traffic_share"] == pytest.approx(served[b] / n)
    assert arms[b]["weight"] == pytest.approx(0.1)  # its weight over the sum of weights


def test_routing_keys_are_sticky_under_canary_and_shadow(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    stack.client.rollout({"kind": "canary", "versions": [a, b], "weights": {a: 50, b: 50}})
    by_key = {
        f"user-{i}": {stack.client.predict(routing_key=f"user-{i}").headers["x-model-version"]}
        for i in range(100)
    }
    for _ in range(2):
        for key, seen in by_key.items():
            seen.add(stack.client.predict(routing_key=key).headers["x-model-version"])
    assert all(len(seen) == 1 for seen in by_key.values())
    assert {next(iter(seen)) for seen in by_key.values()} == {a, b}

    stack.client.rollout({"kind": "shadow", "versions": [a], "candidate": b})
    answers = [stack.client.predict(routing_key=key) for key in by_key]
    assert {r.headers["x-model-version"] for r in answers} == {a}  # the shadow's answers are never returned
    wait_for(
        lambda: _metric(stack, "mdeploy_shadow_requests_total", version=b, result="agree") >= 100,
        "shadow copies",
    )


def test_an_explicit_version_bypasses_the_policy_and_gets_no_feedback(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    stack.client.rollout({"kind": "pinned", "versions": [a]})
    assert stack.client.predict().headers["x-model-version"] == a
    direct = stack.client.predict(version=b)
    assert direct.headers["x-model-version"] == b
    assert stack.client.feedback(direct.headers["x-request-id"], 1.0).status_code == 404


def test_feedback_is_counted_once_and_bad_feedback_is_refused(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    stack.client.rollout({"kind": "thompson", "versions": [a, b]})
    request_id = stack.client.predict().headers["x-request-id"]
    assert stack.client.feedback(request_id, 1.5).status_code == 400
    unknown = stack.client.feedback("never-seen", 1.0)
    assert unknown.status_code == 404
    assert "unknown or expired" in unknown.json()["error"]
    assert stack.client.feedback(request_id, 1.0).status_code == 200
    duplicate = stack.client.feedback(request_id, 1.0)
    assert duplicate.status_code == 409
    assert "already counted" in duplicate.json()["error"]
    not_json = stack.client.http.post(
        f"/v1/models/{MODEL}/feedback",
        content=b'{"request_id": "x", "reward": NaN}',
        headers=stack.client.user,
    )
    assert not_json.status_code == 400
    predict_only = create_key(stack.gateway, "predict", database_url=stack.env.get("MDEPLOY_DATABASE_URL"))
    refused = httpx.post(
        f"{stack.gateway.url}/v1/models/{MODEL}/feedback",
        json={"request_id": request_id, "reward": 1.0},
        headers={"Authorization": f"Bearer {predict_only}"},
    )
    assert refused.status_code == 403
    rewards = sum(arm["rewards"] for arm in stack.client.status()["arms"])
    assert rewards == 1


def test_automatic_rewards_score_success_without_feedback(stack: Stack) -> None:
    a, faulty = stack.versions["a"], stack.versions["faulty"]
    policy = {
        "kind": "epsilon-greedy",
        "versions": [a, faulty],
        "epsilon": 0.5,
        "auto_reward_latency_ms": 60000,
    }
    stack.client.rollout(policy, guard={"enabled": False})
    rows = random.Random(5)
    for _ in range(300):
        stack.client.predict(BAD if rows.random() < 0.3 else GOOD)
    wait_for(lambda: sum(arm["rewards"] for arm in stack.client.status()["arms"]) == 300, "automatic rewards")
    arms = {arm["version"]: arm for arm in stack.client.status()["arms"]}
    assert arms[a]["mean_reward"] == 1.0
    assert 0.5 < arms[faulty]["mean_reward"] < 0.9


def _inference_count(stack: Stack, version: str) -> int:
    with triton.InferenceServerClient(stack.server.address) as client:
        statistics = client.get_inference_statistics(MODEL, version, as_json=True)
    return int(statistics["model_stats"][0]["inference_stats"]["success"].get("count", 0)) + int(
        statistics["model_stats"][0]["inference_stats"]["fail"].get("count", 0)
    )


def test_guard_rolls_back_a_candidate_failing_30_percent(stack: Stack) -> None:
    a, faulty = stack.versions["a"], stack.versions["faulty"]
    stack.client.rollout({"kind": "pinned", "versions": [a]})  # a is the stable version
    stack.client.rollout(
        {"kind": "canary", "versions": [a, faulty], "weights": {a: 50, faulty: 50}},
        guard={"min_requests": 20, "max_error_rate_delta": 0.1},
    )
    rows = random.Random(30)
    codes: Counter[tuple[str, int]] = Counter()
    for sent in range(1, 2001):
        answer = stack.client.predict(BAD if rows.random() < 0.3 else GOOD)
        codes[(answer.headers.get("x-model-version", "?"), answer.status_code)] += 1
        if sent % 10 == 0 and stack.client.status()["policy"]["kind"] == "pinned":
            break
    status = stack.client.status()
    assert status["policy"] == {**status["policy"], "kind": "pinned", "versions": [a]}, codes
    assert "failed" in status["guard"]["last_rollback"]
    reached = _inference_count(stack, faulty)
    after = [stack.client.predict(BAD if rows.random() < 0.3 else GOOD) for _ in range(200)]
    assert {(r.status_code, r.headers["x-model-version"]) for r in after} == {(200, a)}
    assert _inference_count(stack, faulty) == reached  # nothing reached the faulty version after the rollback
    events = run_cli(stack.gateway, "history", MODEL, "--json")
    assert events.returncode == 0, events.stderr
    rollback = next(e for e in json.loads(events.stdout) if e["action"] == "auto-rollback")
    assert rollback["actor"] == "gateway (guard)"
    assert f"version {faulty} failed" in rollback["reason"]
    assert _metric(stack, "mdeploy_rollbacks_total", kind="automatic") >= 1


def test_rollback_under_load_fails_no_request(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    changes = [
        lambda: stack.client.rollout({"kind": "canary", "versions": [a, b], "weights": {a: 50, b: 50}}),
        lambda: stack.client.admin("POST", "rollback", {"reason": "load test"}),
        lambda: stack.client.rollout({"kind": "thompson", "versions": [a, b]}),
        lambda: stack.client.admin("POST", "promote", {"version": b}),
        lambda: stack.client.admin("POST", "rollback", {"to": a}),
    ]
    stop = threading.Event()
    outcomes: list[Counter[tuple[int, str]]] = []

    def load() -> None:
        seen: Counter[tuple[int, str]] = Counter()
        with httpx.Client(base_url=stack.gateway.url, headers=stack.client.user, timeout=60) as http:
            while not stop.is_set():
                answer = http.post(f"/v1/models/{MODEL}:predict", json={"instances": [GOOD]})
                seen[(answer.status_code, answer.headers.get("x-model-version", ""))] += 1
        outcomes.append(seen)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for i in range(20):
            changes[i % len(changes)]()
            wait_for(_more_served(stack, 10), "requests between changes")  # some under each policy
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    total: Counter[tuple[int, str]] = sum(outcomes, Counter())
    assert {code for code, _ in total} == {200}, total
    assert {version for _, version in total} == {a, b}
    assert sum(total.values()) > 200


def test_cli_rollout_status_promote_rollback_and_history(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    started = run_cli(
        stack.gateway, "rollout", MODEL, "--policy", "ucb1", "--versions", f"{a},{b}", "--reason", "try b"
    )
    assert started.returncode == 0, started.stderr
    for _ in range(50):
        answer = stack.client.predict()
        stack.client.feedback(
            answer.headers["x-request-id"], 1.0 if answer.headers["x-model-version"] == b else 0.0
        )
    table = run_cli(stack.gateway, "status", MODEL)
    assert table.returncode == 0, table.stderr
    assert "ucb1" in table.stdout
    assert f"{b} (candidate) ★" in table.stdout  # the winning arm is marked
    assert (
        "watching" in json.loads(run_cli(stack.gateway, "status", MODEL, "--json").stdout)["guard"]["state"]
    )
    promoted = run_cli(stack.gateway, "promote", MODEL, b, "--json")
    assert json.loads(promoted.stdout)["stable"] == b
    back = run_cli(stack.gateway, "rollback", MODEL, "--to", a, "--reason", "customer complaint", "--json")
    assert json.loads(back.stdout)["policy"]["versions"] == [a]
    history = run_cli(stack.gateway, "history", MODEL)
    assert history.returncode == 0, history.stderr
    assert {"rollout", "promote", "rollback"} <= set(history.stdout.split())
    events = json.loads(run_cli(stack.gateway, "history", MODEL, "--json").stdout)
    assert [(e["action"], e["reason"]) for e in events[:3]] == [
        ("rollback", "customer complaint"),
        ("promote", ""),
        ("rollout", "try b"),
    ]
    assert events[0]["from"] == f"pinned {b}"
    assert events[0]["to"] == f"pinned {a}"
    bad = run_cli(stack.gateway, "rollout", MODEL, "--policy", "canary", "--versions", f"{a},{b}")
    assert bad.returncode != 0
    assert "one weight per version" in bad.stderr
    missing = run_cli(stack.gateway, "rollout", MODEL, "--policy", "thompson", "--versions", f"{a},99")
    assert missing.returncode != 0
    assert "no loaded version 99" in missing.stderr
    unknown = run_cli(stack.gateway, "rollback", "no-such-model")
    assert unknown.returncode != 0
    assert "404" in unknown.stderr
    assert "no deployment" not in unknown.stderr  # the model is unknown, not undeployed


def test_bandit_statistics_are_the_same_after_a_gateway_restart(stack: Stack) -> None:
    a, b = stack.versions["a"], stack.versions["b"]
    stack.client.rollout({"kind": "thompson", "versions": [a, b]})
    world = random.Random(9)
    for _ in range(200):
        answer = stack.client.predict()
        stack.client.feedback(answer.headers["x-request-id"], float(world.random() < 0.5))
    before = stack.client.status()
    stack.restart_gateway()
    after = stack.client.status()
    assert after["policy"] == before["policy"]
    keys = ("version", "pulls", "rewards", "mean_reward", "reward_ci95")
    assert [{k: arm[k] for k in keys} for arm in after["arms"]] == [
        {k: arm[k] for k in keys} for arm in before["arms"]
    ]
    assert sum(arm["pulls"] for arm in after["arms"]) == 200


def _served_requests(stack: Stack) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in stack.client.metrics().splitlines()
        if line.startswith("mdeploy_requests_total{") and 'code="200"' in line
    )


def _more_served(stack: Stack, count: int) -> Callable[[], bool]:
    target = _served_requests(stack) + count
    return lambda: _served_requests(stack) >= target


def _metric(stack: Stack, name: str, **labels: str) -> float:
    total = 0.0
    for line in stack.client.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
