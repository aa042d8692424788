"""The CLI's HTTP client for a gateway: where it is, which key to send, and errors a person can act on.

Settings come from, highest first: command-line flags, ``MDEPLOY_GATEWAY`` / ``MDEPLOY_API_KEY``,
the TOML file ``~/.config/mdeploy/config.toml`` (``MDEPLOY_CONFIG`` names another) with keys
``gateway`` and ``api_key``, and the default gateway ``http://127.0.0.1:8000``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from core.errors import MdeployError

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_HOW_TO_SET_GATEWAY = "--gateway URL, MDEPLOY_GATEWAY or 'gateway = \"URL\"' in {config}"
_HOW_TO_SET_KEY = "--api-key KEY, MDEPLOY_API_KEY or 'api_key = \"KEY\"' in {config}"


PACKAGES_PATH = "/v1/admin/packages"


class ClientError(MdeployError):
    """A call to the gateway failed; the message says why and what to do."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The gateway's HTTP status; None when no answer came."""


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if named := environ.get("MDEPLOY_CONFIG"):
        return Path(named)
    config_home = environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "mdeploy" / "config.toml"


@dataclass(frozen=True)
class ClientConfig:
    """Which gateway to call and with which key."""

    gateway: str
    api_key: str | None
    config_file: Path = field(default_factory=config_path)
    """Where the config file is (or would be), for messages that say how to change a setting."""

    @classmethod
    def resolve(
        cls, gateway: str | None, api_key: str | None, *, environ: Mapping[str, str] | None = None
    ) -> ClientConfig:
        """Flags over environment over config file over the default."""
        environ = os.environ if environ is None else environ
        path = config_path(environ)
        from_file = _read_config(path)
        return cls(
            gateway=(gateway or environ.get("MDEPLOY_GATEWAY") or from_file.get("gateway") or DEFAULT_GATEWAY)
            .strip()
            .rstrip("/"),
            api_key=api_key or environ.get("MDEPLOY_API_KEY") or from_file.get("api_key") or None,
            config_file=path,
        )


class GatewayClient:
    """``httpx.Client`` with the key as Bearer token; every failure becomes a ClientError."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(
            base_url=config.gateway, headers=headers, timeout=timeout, transport=transport
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request (``kwargs`` as for httpx); a 4xx/5xx answer raises ClientError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if response.is_error:
            raise self._refused(response)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    def delete_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs).json()

    def push(self, package: Path, *, promote: bool = False) -> dict[str, Any]:
        """Upload a ``model.pkg`` (admin scope): the gateway's answer (``name``, ``version``,
        ``status``, ``role``: live or staged). ``promote`` makes the new version live."""
        answer: dict[str, Any] = self.request(
            "POST",
            PACKAGES_PATH,
            params={"promote": "true"} if promote else None,
            content=package.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        ).json()
        return answer

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _unreachable(self, error: httpx.TransportError) -> ClientError:
        url = self.config.gateway
        if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
            return ClientError(f"the gateway at {url} did not answer in time ({type(error).__name__})")
        how = _HOW_TO_SET_GATEWAY.format(config=self.config.config_file)
        return ClientError(
            f"cannot reach the gateway at {url} ({error or type(error).__name__}); set it with {how}"
        )

    def _refused(self, response: httpx.Response) -> ClientError:
        status, said = response.status_code, _error_message(response)
        how = _HOW_TO_SET_KEY.format(config=self.config.config_file)
        if status == 401 and not self.config.api_key:
            message = f"the gateway needs an API key ({said}); give one with {how}"
        elif status == 401:
            message = f"the gateway rejected API key {_key_hint(self.config.api_key)}: {said}; check {how}"
        elif status == 403:
            message = f"API key {_key_hint(self.config.api_key)} is not allowed to do this: {said}"
        elif status == 429:
            message = f"{said} (the gateway asks to retry after {response.headers.get('Retry-After', '?')} s)"
        else:
            message = f"the gateway answered {status} {response.reason_phrase}: {said}"
        return ClientError(message, status=status)


def _read_config(path: Path) -> dict[str, str]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ClientError(f"cannot read the config file {path}: {error}") from None
    settings: dict[str, str] = {}
    for name in ("gateway", "api_key"):
        value = document.get(name)
        if value is not None and not isinstance(value, str):
            raise ClientError(f"{name} in the config file {path} must be a string")
        if value:
            settings[name] = value
    return settings


def _error_message(response: httpx.Response) -> str:
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        return message
    return response.text.strip()[:200] or "no message"


def _key_hint(api_key: str | None) -> str:
    """The key's public part only: the secret never reaches a terminal or log."""
    if not api_key:
        return "(none)"
    parts = api_key.split("_")
    return f"{parts[0]}_{parts[1]}_..." if len(parts) >= 3 else "(malformed key)"
