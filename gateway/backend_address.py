"""What ``--backend`` (``MDEPLOY_BACKENDS``) names: an inference server and how to reach it.

``host:port`` is a server that checks no token (NVIDIA Triton, or mdeploy-server on loopback).
``grpc://host:port?token_file=PATH`` carries the server token its calls must present
(``core.server_token``); ``mdeploy serve`` names its local server so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from core.errors import InvalidInput
from core.server_token import read_token, token_metadata

_OPTIONS = {"token_file"}


@dataclass(frozen=True)
class BackendAddress:
    address: str
    """host:port, as gRPC dials it (and as logs and metrics name the server)."""
    token_file: Path | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call to this server carries (its token, read now)."""
        if self.token_file is None:
            return ()
        try:
            return token_metadata(read_token(self.token_file))
        except ValueError as error:
            raise InvalidInput(f"backend {self.address}: {error}") from None


def parse_backend(text: str) -> BackendAddress:
    """``host:port`` or ``grpc://host:port[?token_file=PATH]``; InvalidInput says what to write."""
    if "://" not in text:
        return BackendAddress(_host_port(text, text))
    parts = urlsplit(text)
    if parts.scheme != "grpc":
        raise InvalidInput(f"backend {text!r}: write host:port or grpc://host:port[?token_file=PATH]")
    options = parse_qs(parts.query)
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidInput(f"backend {text!r}: unknown option {sorted(unknown)[0]!r}; known: token_file")
    token_file = options.get("token_file", [None])[-1]
    return BackendAddress(_host_port(parts.netloc, text), Path(token_file) if token_file else None)


def _host_port(netloc: str, text: str) -> str:
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(f"backend {text!r} names no host:port")
    return netloc
