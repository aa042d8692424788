"""``mdeploy-loadtest``: locust, headless, with mdeploy's locustfile (installed with the loadtest extra).

Every argument goes to locust, so ``mdeploy-loadtest --host URL --model NAME -u 16 -t 30s`` load-tests
any pushed model; see ``loadtests/locust/locustfile.py`` for the keys it reads.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def main() -> int:
    if importlib.util.find_spec("locust") is None:
        print("mdeploy-loadtest: locust is not installed; pip install 'mdeploy[loadtest]'", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", *sys.argv[1:]]
    os.execv(sys.executable, command)
    return 0  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
