"""What the registry commands (push, list, info, pull) share: gateway flags, the client,
``NAME[:VERSION]`` references, and a transfer progress bar on stderr."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from core.errors import InvalidInput
from mdeploy.client import DEFAULT_TIMEOUT, ClientConfig, GatewayClient

MODELS_PATH = "/v1/admin/models"
PACKAGES_PATH = "/v1/admin/packages"


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", metavar="URL", help="the gateway (MDEPLOY_GATEWAY, config file)")
    parser.add_argument("--api-key", metavar="KEY", help="an admin API key (MDEPLOY_API_KEY, config file)")


class RegistryClient(GatewayClient):
    """The gateway client, plus a streamed GET for downloads of any size."""

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        """GET ``path`` without reading the body; failures raise the client's ClientError."""
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise self._refused(response)
                yield response
        except httpx.TransportError as error:
            raise self._unreachable(error) from None


def connect(args: argparse.Namespace, timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> RegistryClient:
    return RegistryClient(ClientConfig.resolve(args.gateway, args.api_key), timeout=timeout)


@dataclass(frozen=True)
class Reference:
    """``NAME`` or ``NAME:VERSION`` as typed on the command line."""

    name: str
    version: str | None

    @classmethod
    def parse(cls, text: str, *, version_required: bool) -> Reference:
        name, colon, version = text.partition(":")
        if not name or (colon and not version):
            raise InvalidInput(f"'{text}' is not NAME or NAME:VERSION (e.g. digits-sklearn:2)")
        if version_required and not version:
            raise InvalidInput(f"'{text}' names no version; write NAME:VERSION (e.g. {name}:1)")
        if version and not version.isdecimal():
            raise InvalidInput(
                f"version '{version}' is not a number; use the gateway's version number "
                f"as 'mdeploy info {name}' lists it"
            )
        return cls(name, version or None)

    @property
    def model_path(self) -> str:
        return f"{MODELS_PATH}/{quote(self.name, safe='')}"

    @property
    def version_path(self) -> str:
        return f"{self.model_path}/versions/{self.version}"

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


def transfer_progress(console: Console) -> Progress:
    """A byte progress bar with speed and time left, on ``console`` (stderr) when it is a terminal.

    Off for a pipe or a file: a log gains nothing from a bar, and rich would end it with a blank line.
    """
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
