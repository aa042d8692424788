"""The server token file: made once, owner-only, refused when it is missing or too short."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.server_token import ensure_token, read_token


def test_a_short_or_missing_token_file_stops_the_server_naming_it(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 32 random bytes"):
        read_token(short)
    with pytest.raises(ValueError, match="cannot read the server token file"):
        read_token(tmp_path / "missing")


def test_the_token_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "server-token"
    token = ensure_token(path)
    assert len(token) == 64
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_token(path) == token
