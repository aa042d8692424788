"""Drift windows: named by their span, kept in ten buckets."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from gateway.drift.windows import window_of, windows_of


def test_a_window_is_a_span_in_ten_buckets() -> None:
    assert (window_of("5m").span_s, window_of("5m").bucket_s) == (300, 30)
    assert window_of("24h").bucket_s == 8640
    assert list(windows_of(["24h", "10s", "1h"])) == ["10s", "1h", "24h"]  # shortest first
    five = window_of("5m")
    assert five.bucket_start(1_000_017) == 999_990
    assert five.holds(999_990, 999_990 + 329)  # its last second overlaps the window
    assert not five.holds(999_990, 999_990 + 330)


@pytest.mark.parametrize("name", ["5", "0m", "5 m", "1w", "5s", "31d", "-1h"])
def test_a_bad_window_says_what_a_window_looks_like(name: str) -> None:
    with pytest.raises(InvalidInput, match="drift window"):
        window_of(name)
