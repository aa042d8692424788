"""What `mdeploy logs` reads from its options and prints from the gateway's answer."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from mdeploy.cli.logs_cmd import seconds, status_lines


@pytest.mark.parametrize(
    ("text", "expected"), [("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("2d", 172_800.0), ("90", 90.0)]
)
def test_durations_are_a_number_and_a_unit(text: str, expected: float) -> None:
    assert seconds(text, "--since") == expected


@pytest.mark.parametrize("text", ["1y", "h", "-1h", "1 hour", ""])
def test_other_durations_are_refused_with_the_form(text: str) -> None:
    with pytest.raises(InvalidInput, match="--since is a number and a unit"):
        seconds(text, "--since")


def test_the_status_says_what_is_logged_and_where_the_files_are() -> None:
    status = {
        "model": "digits",
        "enabled": True,
        "sample_rate": 0.1,
        "max_mb": 1024,
        "updated_at": "2025-01-02T03:04:05Z",
        "updated_by": "key:abc",
        "files": 1,
        "bytes": 3 * 2**20,
        "rows": 12_345,
        "rewards": 7,
        "oldest": "2025-01-02T03:04:05Z",
        "newest": "2025-01-02T04:00:00Z",
    }
    assert status_lines(status) == [
        "digits: logging 10% of answered requests, files capped at 1024 MiB "
        "(set 2025-01-02 03:04:05 by key:abc)",
        "  1 file, 3.0 MiB: 12,345 rows and 7 rewards, 2025-01-02 03:04:05 to 2025-01-02 04:00:00 UTC",
        "  in the gateway's data folder: prediction-logs/digits/",
    ]
    off = status | {"enabled": False, "files": 0}
    assert status_lines(off) == [
        "digits: not logging (start with: mdeploy logs enable digits)",
        "  no log files",
    ]
