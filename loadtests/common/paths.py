"""Where things are: the repository root, which benchmarks run their child processes in."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
