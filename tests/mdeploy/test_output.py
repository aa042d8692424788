"""Tables printed to a pipe or a file keep every name and date whole."""

from __future__ import annotations

import pytest

from mdeploy.cli.list_cmd import versions_table
from mdeploy.cli.output import table_console

NAME = "digits-keras-with-a-rather-long-name-for-the-pipe"


def test_list_into_a_pipe_cuts_no_name_or_date(capsys: pytest.CaptureFixture[str]) -> None:
    version = {
        "version": "12",
        "package_version": "2026.12.04-rc1",
        "state": "live",
        "pushed_at": "2026-12-04T19:45:12.123456+00:00",
        "pushed_by": "ci-pipeline@example.org",
        "digest": "ab" * 32,
    }
    models = [{"name": NAME, "default_version": "12", "versions": [version]}]
    table_console().print(versions_table(models))
    printed = capsys.readouterr().out
    assert NAME in printed
    assert "2026-12-04 19:45:12" in printed
    assert "ci-pipeline@example.org" in printed
    assert "…" not in printed
