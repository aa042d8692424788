"""Staged releases with real processes: what serves is one fact, and rollback always goes back.

A scripted sequence (push, push, canary, promote, rollback, push, bandit, guard rollback) runs
against a real gateway and inference server; after every step `mdeploy list`, ``/v1/models``,
``GET /v2/models/{m}``, `mdeploy status` and the ``X-Model-Version`` of requests that name no
version must tell the same story.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.arms import BAD, GOOD, MODEL, GatewayClient, build_arm_packages
from tests.e2e.conftest import run_cli
from tests.e2e.test_end_to_end import create_key

ENV = {
    "MDEPLOY_ROUTING_SEED": "5",
    "MDEPLOY_DEPLOYMENT_REFRESH_S": "0.2",
    "MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute",
    "MDEPLOY_RATE_LIMIT_ADMIN": "1000000/minute",
}


@dataclass
class Release:
    gateway: GatewayProcess
    client: GatewayClient
    packages: dict[str, Path]

    def push(self, arm: str, *, promote: bool = False) -> dict[str, Any]:
        response = httpx.post(
            f"{self.gateway.url}/v1/admin/packages",
            params={"promote": "true"} if promote else None,
            content=self.packages[arm].read_bytes(),
            headers={
                "Authorization": f"Bearer {self.gateway.admin_key}",
                "Content-Type": "application/octet-stream",
            },
            timeout=120,
        )
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def answering(self, requests: int = 60) -> set[str]:
        """The versions that answered ``requests`` predictions naming no version."""
        answers = [self.client.predict() for _ in range(requests)]
        assert {a.status_code for a in answers} == {200}, [a.text for a in answers if a.status_code != 200]
        return {a.headers["x-model-version"] for a in answers}

    def rollback(self, to: str | None = None) -> httpx.Response:
        return self.client.http.post(
            f"/v1/admin/deployments/{MODEL}/rollback",
            json={"to": to, "reason": "test"},
            headers=self.client.admin_headers,
        )


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Release]:
    server: ServerProcess = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    gateway = start_gateway_process(tmp_path / "gateway", [server.address], env=ENV)
    key = create_key(gateway, "predict", "feedback")
    client = GatewayClient(gateway.url, key, gateway.admin_key)
    try:
        yield Release(gateway, client, build_arm_packages(tmp_path))
    finally:
        client.close()
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def surfaces(release: Release) -> dict[str, Any]:
    """What serves, as each surface says it: list, /v1/models, /v2/models/{m} and status."""
    listed = json.loads(run_cli(release.gateway, "list", "--json").stdout)
    (model,) = [m for m in listed if m["name"] == MODEL]
    roles = {v["version"]: v["role"] for v in model["versions"]}
    public = release.client.http.get("/v1/models", headers=release.client.user).json()["models"]
    (served,) = [m for m in public if m["name"] == MODEL]
    metadata = release.client.http.get(f"/v2/models/{MODEL}", headers=release.client.user).json()
    status = json.loads(run_cli(release.gateway, "status", MODEL, "--json").stdout)
    assert model["serving"] == served["serving"] == metadata["serving"] == status["serving"]
    assert model["default_version"] == served["default_version"] == status["serving"]["live_version"]
    serving: dict[str, Any] = status["serving"]
    assert roles == {
        **{v: "staged" for v in serving["staged"]},
        **{arm["version"]: arm["role"] for arm in serving["arms"]},
    }
    return serving


def test_a_staged_push_takes_no_unversioned_traffic(release: Release) -> None:
    first = release.push("a")
    assert (first["version"], first["role"]) == ("1", "live")
    second = release.push("b")
    assert (second["version"], second["role"]) == ("2", "staged")
    assert "staged" in second["message"]
    assert "mdeploy promote arms 2" in second["message"]
    assert release.answering() == {"1"}
    named = release.client.predict(version="2")
    assert (named.status_code, named.headers["x-model-version"]) == (200, "2")  # staged answers when named
    serving = surfaces(release)
    assert (serving["live_version"], serving["staged"]) == ("1", ["2"])
    listed = run_cli(release.gateway, "list")
    assert "1 *" in listed.stdout
    assert "staged" in listed.stdout
    promoted = release.push("faulty", promote=True)
    assert (promoted["version"], promoted["role"]) == ("3", "live")
    assert release.answering() == {"3"}


def test_list_v1_models_status_and_answers_agree_through_a_release(release: Release) -> None:
    admin = release.client
    release.push("a")
    release.push("b")
    assert release.answering() == {"1"}
    assert surfaces(release)["live_version"] == "1"

    admin.rollout({"kind": "canary", "versions": ["1", "2"], "weights": {"1": 50, "2": 50}})
    serving = surfaces(release)
    assert serving["live_version"] is None
    assert serving["stable"] == "1"
    assert {a["version"]: (a["role"], a["share"]) for a in serving["arms"]} == {
        "1": ("stable", 0.5),
        "2": ("candidate", 0.5),
    }
    assert release.answering() == {"1", "2"}

    admin.admin("POST", "promote", {"version": "2"})
    assert surfaces(release)["live_version"] == "2"
    assert release.answering() == {"2"}

    assert release.rollback().status_code == 200  # undoes the promotion: the canary is back
    assert surfaces(release)["policy"] == "canary"
    assert release.answering() == {"1", "2"}
    assert release.rollback().status_code == 200  # undoes the canary
    assert surfaces(release)["live_version"] == "1"
    assert release.answering() == {"1"}
    nothing = release.rollback()
    assert nothing.status_code == 409
    assert "nothing to roll back" in nothing.json()["error"]

    release.push("faulty")  # version 3, staged: the live version and the stable one stay 1
    assert surfaces(release)["live_version"] == "1"
    assert release.answering() == {"1"}

    admin.rollout(
        {"kind": "epsilon-greedy", "versions": ["1", "3"], "epsilon": 0.5},
        guard={"min_requests": 10, "max_error_rate_delta": 0.1},
    )
    serving = surfaces(release)
    assert serving["policy"] == "epsilon-greedy"
    assert serving["stable"] == "1"
    assert serving["staged"] == ["2"]
    rows = random.Random(3)
    for _ in range(400):
        admin.predict(BAD if rows.random() < 0.5 else GOOD)
        if admin.status()["policy"]["kind"] == "pinned":
            break
    serving = surfaces(release)
    assert serving["live_version"] == "1", "the guard rolled the faulty version back"
    assert release.answering() == {"1"}
    events = json.loads(
        run_cli(release.gateway, "history", MODEL, "--kind", "auto-rollback", "--json").stdout
    )
    assert events
    assert set(events[0]["details"]["ended"]) == {"1", "3"}


def test_rollback_without_a_target_undoes_each_kind_of_change(release: Release) -> None:
    admin = release.client
    release.push("a")
    release.push("b")
    changes: dict[str, Callable[[], object]] = {
        "promote": lambda: admin.admin("POST", "promote", {"version": "2"}),
        "canary": lambda: admin.rollout(
            {"kind": "canary", "versions": ["1", "2"], "weights": {"1": 9, "2": 1}}
        ),
        "shadow": lambda: admin.rollout({"kind": "shadow", "versions": ["1"], "candidate": "2"}),
        "bandit": lambda: admin.rollout({"kind": "thompson", "versions": ["1", "2"]}),
        "rollback --to": lambda: release.rollback(to="2"),
        "push --promote": lambda: release.push("faulty", promote=True),
    }
    for kind, change in changes.items():
        before = surfaces(release)
        change()
        assert surfaces(release)["arms"] != before["arms"], kind
        answer = release.rollback()
        assert answer.status_code == 200, (kind, answer.text)
        after = surfaces(release)
        assert (after["policy"], after["live_version"], after["arms"]) == (
            before["policy"],
            before["live_version"],
            before["arms"],
        ), kind
        assert release.answering(20) == {"1"}, kind


def test_the_audit_log_names_versions_digests_and_key_changes(release: Release) -> None:
    pushed = release.push("a")
    key = create_key(release.gateway, "predict")
    key_id = key.split("_")[1]
    made = release.client.http.post(
        "/v1/admin/keys", json={"scopes": ["predict"], "name": "ci"}, headers=release.client.admin_headers
    )
    assert made.status_code == 201, made.text
    new_id = made.json()["id"]
    revoked = release.client.http.delete(f"/v1/admin/keys/{new_id}", headers=release.client.admin_headers)
    assert revoked.status_code == 200, revoked.text

    history = json.loads(run_cli(release.gateway, "history", "--json").stdout)
    push = next(e for e in history if e["action"] == "push")
    assert push["version"] == "1"
    assert pushed["digest"][:12] in push["to"]
    assert push["details"]["digest"] == pushed["digest"]
    created = [e for e in history if e["action"] == "key-create"]
    assert {e["details"]["key_id"] for e in created} >= {key_id, new_id}
    revoke = next(e for e in history if e["action"] == "key-revoke")
    assert revoke["details"]["key_id"] == new_id
    assert revoke["actor"].startswith("key:")
    assert made.json()["key"] not in json.dumps(history)  # never the secret

    only = json.loads(run_cli(release.gateway, "history", "--kind", "key-revoke", "--json").stdout)
    assert [e["action"] for e in only] == ["key-revoke"]
    by_actor = json.loads(run_cli(release.gateway, "history", "--actor", revoke["actor"], "--json").stdout)
    assert {e["actor"] for e in by_actor} == {revoke["actor"]}
    of_model = json.loads(run_cli(release.gateway, "history", MODEL, "--json").stdout)
    assert {e["model"] for e in of_model} == {MODEL}
