"""The README's main command: ``mdeploy serve --demo`` serves, pushes the demo, and its curl line works."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from core.child_process import spawn
from core.ports import free_port
from gateway.process import gateway_command

CURL = re.compile(r"curl -s -H \"Authorization: Bearer \$\(cat (\S+)\)\" -d '(.+)' '(http://\S+)'")


def test_serve_demo_pushes_both_models_starts_a_canary_answers_its_curl_line_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    grpc_port = free_port()
    command = [*gateway_command(), "serve", "--demo", "--data-dir", str(tmp_path), "--port", "0"]
    command += ["--grpc-port", str(grpc_port)]
    child, curl = spawn(command, CURL, timeout_s=300)
    try:
        key_file, body, url = curl.groups()
        key = Path(key_file).read_text().strip()
        answer = httpx.post(url, content=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["labels"] == ["2"]
        assert "pushed digits-sklearn, digits-keras" in child.log
        # Something to look at in the console: a canary of a second version, with traffic and rewards.
        canary = "rollout of digits-sklearn: canary 1:80%/2:20% (stable 1); sent 80 demo predictions"
        assert canary in child.log
        headers = {"Authorization": f"Bearer {key}"}
        gateway = url.split("/v1/")[0]
        status = httpx.get(f"{gateway}/v1/admin/deployments/digits-sklearn", headers=headers)
        assert status.status_code == 200, status.text
        deployment = status.json()
        assert deployment["policy"]["kind"] == "canary"
        assert {arm["version"]: arm["weight"] for arm in deployment["arms"]} == {"1": 0.8, "2": 0.2}
        assert sum(arm["pulls"] for arm in deployment["arms"]) >= 40
        assert sum(arm["rewards"] for arm in deployment["arms"]) >= 40
        models = httpx.get(f"{gateway}/v1/models", headers=headers).json()["models"]
        assert {m["name"]: m["serving"]["summary"] for m in models}["digits-keras"] == "version 1"
        assert "admin API key (shown once" in child.log
        assert f"gRPC API (KServe v2, tritonclient.grpc) on 127.0.0.1:{grpc_port}" in child.log
        local = re.search(r"inference server listening on (\S+) \(closed by server-token\)", child.log)
        assert local is not None
        assert (tmp_path / "server-token").stat().st_mode & 0o777 == 0o600
        with pytest.raises(InferenceServerException, match="server token"):
            triton.InferenceServerClient(local.group(1)).get_model_repository_index()
        through_gateway = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        index = through_gateway.get_model_repository_index(headers={"authorization": f"Bearer {key}"})
        assert {m.name for m in index.models} == {"digits-sklearn", "digits-keras"}
        assert "INFO httpx" not in child.log
        assert "INFO tensorflow" not in child.log
    finally:
        child.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = child.process.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            raise
        child.stop()
    assert code == 0, child.log[-3000:]
    assert "error" not in child.log.splitlines()[-1]
