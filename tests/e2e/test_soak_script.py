"""The soak script, shortened: locust with feedback and rollbacks against a real gateway, no failure.

The issue's soak runs 10 minutes (``python -m loadtests.locust.soak``); CI runs 15 seconds of it so
the script, its locust users and the rollback schedule keep working.
"""

from __future__ import annotations

import subprocess
import sys

from loadtests.common.paths import ROOT


def test_a_short_soak_with_rollbacks_loses_no_request() -> None:
    command = [sys.executable, "-m", "loadtests.locust.soak", "--duration", "15", "--users", "8"]
    command += ["--rollback-every", "4", "--max-growth", "0.5"]  # memory is judged by the long run
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS  zero failed requests" in done.stdout
    assert "rollbacks" in done.stdout
