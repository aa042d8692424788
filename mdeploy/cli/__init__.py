"""The ``mdeploy`` command line: one parser, one module per subcommand.

Every module named ``*_cmd`` in this package is a subcommand: it defines
``register(subparsers)``, which adds its parser and sets ``handler`` (``args -> exit
code``). A new subcommand is a new module; add it to ``COMMAND_ORDER`` for its place in --help.

Errors never show a traceback: bad input is one line and exit code 2, any other failure
one line and exit code 1. ``MDEPLOY_DEBUG=1`` re-raises unexpected errors for debugging.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from core import __version__
from core.errors import InvalidInput, MdeployError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_COMMAND_SUFFIX = "_cmd"
# How `--help` lists the commands: build a package, publish it, use it, steer it, run the service.
COMMAND_ORDER = (
    "package_cmd",
    "inspect_cmd",
    "push_cmd",
    "list_cmd",
    "search_cmd",
    "info_cmd",
    "compare_cmd",
    "pull_cmd",
    "predict_cmd",
    "deployment_cmd",
    "gates_cmd",
    "drift_cmd",
    "logs_cmd",
    "delete_cmd",
    "keys_cmd",
    "serve_cmd",
    "edge_cmd",
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the usage text is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(prog="mdeploy", description="Package, push and serve machine learning models.")
    parser.add_argument("--version", action="version", version=f"mdeploy {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(subparsers)
    return parser


def _command_modules() -> list[ModuleType]:
    """Every ``*_cmd`` module, in the order a model's life goes; any new one comes last."""
    found = {info.name for info in pkgutil.iter_modules(__path__) if info.name.endswith(_COMMAND_SUFFIX)}
    names = [name for name in COMMAND_ORDER if name in found] + sorted(found - set(COMMAND_ORDER))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits for --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.handler(args)
    except InvalidInput as exc:
        return _fail(exc.message, EXIT_USAGE)
    except MdeployError as exc:
        return _fail(exc.message, EXIT_FAILURE)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get("MDEPLOY_DEBUG"):
            raise
        return _fail(
            f"internal error ({type(exc).__name__}): {exc} (set MDEPLOY_DEBUG=1 for details)", EXIT_FAILURE
        )
    return code


def _fail(message: str, code: int) -> int:
    print(f"mdeploy: error: {' '.join(message.split())}", file=sys.stderr)
    return code
