"""Valid keys' latency while a flood of bad keys hits the gateway (1,000 requests/s by default).

One run: wrk sends 1-row predictions of the tiny MLP with a valid key at ``--concurrency``
connections, first alone, then while ``loadtests.gateway.bad_key_flood`` (its own process) sends
``--rate`` requests per second with random unknown keys from the same address. The gateway
counts failed authentications per address; past ``MDEPLOY_AUTH_FAILURES_PER_MINUTE`` it answers
the flood 429 at once, without a key-store lookup, while the remembered valid key keeps being
served. The table gives the valid key's req/s, p50 and p99 in both windows and the flood's
answers. Run: ``python -m loadtests.gateway.bench_auth_flood [--rate 1000] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from rich.console import Console

from core.server_process import start_server_process
from core.server_token import ensure_token
from gateway.process import start_gateway_process
from loadtests.common.paths import ROOT
from loadtests.common.tables import table
from loadtests.gateway import httpload
from loadtests.gateway.bad_key_flood import bad_key
from loadtests.gateway.bench_grpc import MODEL, WIDTH, tiny_package
from loadtests.gateway.stack import LOAD_TEST_ENV, create_key, push


def wait_until_refused(url: str, timeout_s: float = 30.0) -> None:
    """Until a bad key from this address gets 429 (the flood has used up the allowance)."""
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {bad_key()}"}
    while httpx.post(url, content=b"{}", headers=headers, timeout=10).status_code != 429:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway never refused the flood with 429")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_auth_flood", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="bad-key requests per second (default 1000)"
    )
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per window (default 5)")
    parser.add_argument("--concurrency", type=int, default=16, help="valid-key connections (default 16)")
    args = parser.parse_args(argv)
    httpload.check_wrk()
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-flood-") as folder:
        work = Path(folder)
        token_file = work / "server-token"
        ensure_token(token_file)
        server = start_server_process(
            ["--grpc-port", "0", "--model-control-mode", "explicit", "--auth-token-file", str(token_file)]
        )
        try:
            backend = f"grpc://{server.address}?token_file={token_file}"
            gateway = start_gateway_process(work / "gateway", [backend], env=dict(LOAD_TEST_ENV))
            try:
                push(gateway.url, gateway.admin_key, tiny_package(work))
                key = create_key(work / "gateway")
                url = f"{gateway.url}/v1/models/{MODEL}:predict"
                body = orjson.dumps({"instances": [[0.5] * WIDTH]})
                target = httpload.Target(
                    "valid key", url, body, {"Authorization": f"Bearer {key}"}, (gateway.process.pid,)
                )
                httpload.run_wrk(target, args.concurrency, 1)  # warm-up
                alone = httpload.run_wrk(target, args.concurrency, args.duration)
                flood = subprocess.Popen(
                    [sys.executable, "-m", "loadtests.gateway.bad_key_flood", f"--url={url}",
                     f"--rate={args.rate}", f"--duration={args.duration + 2}"],
                    cwd=ROOT, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                wait_until_refused(url)  # the flood is past the allowance: answered 429 at once
                flooded = httpload.run_wrk(target, args.concurrency, args.duration)
                sent = json.loads(flood.communicate(timeout=60)[0])
            finally:
                gateway.stop(timeout_s=10)
        finally:
            server.stop(timeout_s=10)
    console = Console(width=140)
    shown = table(
        f"valid key, {args.concurrency} connections, {args.duration} s windows",
        ("window", "req/s", "p50 ms", "p99 ms", "errors", "gateway cores"),
        1,
    )
    for name, result in (("alone", alone), (f"during {sent['rate']:,.0f} bad keys/s", flooded)):
        shown.add_row(
            name,
            f"{result.rps:,.0f}",
            f"{result.p50_ms:.2f}",
            f"{result.p99_ms:.2f}",
            str(result.errors),
            f"{result.pid_cpu_s[0] / result.window_s:.2f}",
        )
    console.print(shown)
    answers = ", ".join(f"{status}: {count:,}" for status, count in sorted(sent["answers"].items()))
    console.print(f"the flood's {sent['sent']:,} requests were answered {answers}")
    console.print(f"valid-key p99 during the flood / alone: {flooded.p99_ms / alone.p99_ms:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
