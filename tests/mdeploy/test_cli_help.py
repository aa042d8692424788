"""What `mdeploy --help` and each command's help tell a user."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest

from core import __version__
from mdeploy.cli import build_parser, main


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_version_is_printed_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mdeploy {__version__}"


def test_commands_are_listed_in_the_order_of_a_models_life(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys)
    lines = text.split("COMMAND\n", 1)[1].splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("    ") and line[4] != " "]
    assert listed == [
        "package", "inspect", "push", "list", "search", "info", "compare", "pull", "predict",
        "rollout", "status", "rollback", "promote", "history", "gates", "drift", "logs", "delete", "keys",
        "serve", "edge-config",
    ]  # fmt: skip


def test_keys_help_is_prose_not_a_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "keys")
    assert "``" not in text
    assert "KEY=$(mdeploy keys create --scope predict | tail -1)" in text


@pytest.mark.parametrize("command", ["status", "rollback", "promote", "history"])
def test_deployment_commands_describe_themselves_and_name(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_of(capsys, command)
    description = text.split("\n\n")[1]
    assert len(description) > 40
    assert not description.startswith("positional")
    assert "the model's name, as `mdeploy list` shows it" in text


def commands_of(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (sub)command parser below ``parser``, with its full name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from commands_of(sub, f"{prefix}{name} ")


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{name}: {'/'.join(action.option_strings) or action.dest}"
        for name, sub in commands_of(build_parser())
        for action in sub._actions
        if action.help is None and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_serve_help_points_at_settings_not_at_source_files(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "serve")
    assert ".py" not in text
    assert "MDEPLOY_SETTINGS_FILE" in text
