"""A child process whose log is collected in the background and whose start is awaited.

``mdeploy-server`` and ``mdeploy serve`` are started this way by tests, benchmarks and
``mdeploy serve`` itself: wait for the log line that announces the address, then stop with
SIGTERM (the child drains) and SIGKILL only when the grace period runs out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChildProcess:
    process: subprocess.Popen[str]
    log_lines: deque[str]
    log_reader: threading.Thread

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it outlives ``timeout_s``; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no drain, as when a machine dies."""
        self.process.kill()
        self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        self.log_reader.join(timeout=5)
        stream = self.process.stdout or self.process.stderr
        if stream is not None:
            stream.close()


def spawn(
    command: list[str],
    ready: re.Pattern[str],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    log_to_stderr: bool = False,
    cwd: Path | None = None,
) -> tuple[ChildProcess, re.Match[str]]:
    """Start ``command``; wait for a line of its log (stdout+stderr, or stderr alone) matching ``ready``."""
    process = subprocess.Popen(
        command,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.DEVNULL if log_to_stderr else subprocess.PIPE,
        stderr=subprocess.PIPE if log_to_stderr else subprocess.STDOUT,
    )
    stream = process.stderr if log_to_stderr else process.stdout
    assert stream is not None
    lines: deque[str] = deque(maxlen=5000)
    found: list[re.Match[str]] = []
    announced = threading.Event()

    def drain() -> None:
        for line in stream:
            lines.append(line)
            if not found and (match := ready.search(line)):
                found.append(match)
                announced.set()
        announced.set()

    reader = threading.Thread(target=drain, daemon=True, name=f"log-{os.path.basename(command[0])}")
    reader.start()
    child = ChildProcess(process, lines, reader)
    if not announced.wait(timeout_s) or not found:
        child.stop(timeout_s=5)
        raise RuntimeError(f"{' '.join(command[:2])} did not start:\n{child.log}")
    return child, found[0]
