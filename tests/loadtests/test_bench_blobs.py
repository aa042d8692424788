"""The blob store benchmark runs and prints a row per store."""

from __future__ import annotations

import pytest

from loadtests.gateway.bench_blobs import main


def test_the_benchmark_prints_put_and_read_rates_of_each_store(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    assert (
        main(["--size-mib", "2", "--chunk-kib", "256", "--repeat", "1", "--postgres-url", postgres_url]) == 0
    )
    printed = capsys.readouterr().out
    for store in ("folder", "sqlite", "postgresql"):
        assert f"│ {store} " in printed
