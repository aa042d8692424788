"""A flood of bad-key requests at a fixed rate: what an attacker guessing API keys sends.

Runs in its own process (its CPU apart from the gateway's): ``--rate`` requests per second
for ``--duration`` seconds, each with a random well-formed but unknown key, none waiting for
the one before; prints one JSON object with the answers by status code.
Run: ``python -m loadtests.gateway.bad_key_flood --url URL [--rate 1000] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import string
import time
from collections import Counter

import httpx

from loadtests.common import loop

_BASE62 = string.ascii_letters + string.digits


def bad_key() -> str:
    return f"mdk_{secrets.token_hex(8)}_{''.join(secrets.choice(_BASE62) for _ in range(43))}"


async def flood(url: str, rate: float, duration_s: float) -> dict[str, object]:
    answers: Counter[str] = Counter()
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def one() -> None:
            try:
                response = await client.post(
                    url, content=b"{}", headers={"Authorization": f"Bearer {bad_key()}"}
                )
                answers[str(response.status_code)] += 1
            except httpx.HTTPError as error:
                answers[type(error).__name__] += 1

        started = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - started) < duration_s:
            due = int(elapsed * rate) + 1
            while sent < due:
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
    return {"sent": sent, "seconds": duration_s, "rate": sent / duration_s, "answers": dict(answers)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bad_key_flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a prediction URL of the gateway")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second (default 1000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    args = parser.parse_args(argv)
    print(json.dumps(loop.run(flood(args.url, args.rate, args.duration))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
