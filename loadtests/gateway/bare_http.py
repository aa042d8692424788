"""The HTTP ceiling: a bare Starlette endpoint on the gateway's own server stack.

uvicorn with uvloop and httptools, one worker, no access log: what ``mdeploy serve`` runs
(``gateway/local.py``). The endpoint has the gateway's path, reads the body, parses it with
orjson (as the gateway's codecs do) and returns a fixed reply of the same shape and size as
the gateway's answer to a 1-row digits-sklearn ``:predict``. No middleware, auth, metrics,
batching or backend: whatever the gateway reaches over this is its own cost.

Run alone: ``python -m loadtests.gateway.bare_http --port 0`` (prints uvicorn's "running on" line);
``--workers N``: uvicorn's own worker processes, sharing the socket its parent binds.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.child_process import spawn
from loadtests.common.paths import ROOT

RUNNING = re.compile(r"Uvicorn running on (http://[\d.]+:\d+)")
_PROBABILITIES = [0.0007520925, 2.634052e-06, 0.0013899654, 5.924592e-05, 0.9953745]
REPLY = orjson.dumps(
    {
        "model_version": "1",
        "predictions": [{"label": [4], "probabilities": _PROBABILITIES + _PROBABILITIES[::-1]}],
    }
)


async def predict(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(REPLY, media_type="application/json")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/v1/models/{model}:predict", predict, methods=["POST"])])


@dataclass(frozen=True)
class BareHttp:
    url: str
    pid: int


@contextmanager
def bare_http(workers: int = 1) -> Iterator[BareHttp]:
    """The bare endpoint in a process of its own (as the gateway is), stopped on exit; with
    ``workers`` > 1, ``pid`` is uvicorn's supervisor and the workers are its children."""
    command = [sys.executable, "-m", "loadtests.gateway.bare_http", "--port", "0", "--workers", str(workers)]
    child, running = spawn(command, RUNNING, cwd=ROOT)
    try:
        yield BareHttp(running.group(1), child.process.pid)
    finally:
        child.stop(timeout_s=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bare_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    uvicorn.run(
        # Several workers each import the app: uvicorn needs where, not the object.
        create_app() if args.workers == 1 else "loadtests.gateway.bare_http:create_app",
        factory=args.workers > 1,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=False,
        lifespan="off",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
