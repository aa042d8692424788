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


def test_serve_demo_pushes_both_models_answers_its_curl_line_and_stops_cleanly(tmp_path: Path) -> None:
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
