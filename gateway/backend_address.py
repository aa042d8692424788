"""What ``--backend`` (``MDEPLOY_BACKENDS``) names: an inference server and how to reach it.

* ``host:port`` or ``grpc://host:port``: plaintext, for servers on this host (NVIDIA Triton,
  or mdeploy-server, which listens on loopback unless it checks a token);
* ``grpcs://host:port``: TLS, for servers on other hosts, verified against ``ca_file`` (else the
  gateway's ``backend_tls_ca_file``, else the system's CAs), presenting ``cert_file`` and
  ``key_file`` when the server wants a client certificate (mutual TLS);
* ``?token_file=PATH`` on either: the server token every call presents (``core.server_token``);
  ``mdeploy serve`` names its local server so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc

from core.errors import InvalidInput
from core.server_token import read_token, token_metadata

_OPTIONS = {"token_file", "ca_file", "cert_file", "key_file"}
_HELP = "write host:port or grpc[s]://host:port[?token_file=PATH&ca_file=PATH&cert_file=PATH&key_file=PATH]"


@dataclass(frozen=True)
class BackendTls:
    """PEM files for TLS to the inference servers: the CA to verify them, and a client pair."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self, address: str) -> grpc.ChannelCredentials:
        try:
            ca = self.ca_file.read_bytes() if self.ca_file else None
            key = self.key_file.read_bytes() if self.key_file else None
            cert = self.cert_file.read_bytes() if self.cert_file else None
        except OSError as error:
            raise InvalidInput(f"backend {address}: cannot read a TLS file: {error}") from None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


@dataclass(frozen=True)
class BackendAddress:
    address: str
    """host:port, as gRPC dials it (and as logs and metrics name the server)."""
    token_file: Path | None = None
    tls: BackendTls | None = None
    """None: plaintext."""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call to this server carries (its token, read now)."""
        if self.token_file is None:
            return ()
        try:
            return token_metadata(read_token(self.token_file))
        except ValueError as error:
            raise InvalidInput(f"backend {self.address}: {error}") from None

    def channel(self, options: list[tuple[str, int]]) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, self.tls.credentials(self.address), options=options)


def parse_backend(text: str, default_tls: BackendTls | None = None) -> BackendAddress:
    """``text`` as above; ``default_tls`` fills the TLS files a ``grpcs://`` address leaves out."""
    if "://" not in text:
        return BackendAddress(_host_port(text, text))
    parts = urlsplit(text)
    if parts.scheme not in ("grpc", "grpcs"):
        raise InvalidInput(f"backend {text!r}: {_HELP}")
    options = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidInput(f"backend {text!r}: unknown option {sorted(unknown)[0]!r}; {_HELP}")
    tls_options = {
        name: Path(options[name]) for name in ("ca_file", "cert_file", "key_file") if name in options
    }
    if parts.scheme == "grpc" and tls_options:
        raise InvalidInput(f"backend {text!r}: TLS files need a grpcs:// address")
    tls = None
    if parts.scheme == "grpcs":
        base = default_tls or BackendTls()
        tls = BackendTls(
            tls_options.get("ca_file", base.ca_file),
            tls_options.get("cert_file", base.cert_file),
            tls_options.get("key_file", base.key_file),
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            raise InvalidInput(f"backend {text!r}: a client certificate needs both cert_file and key_file")
    token_file = options.get("token_file")
    return BackendAddress(_host_port(parts.netloc, text), Path(token_file) if token_file else None, tls)


def _host_port(netloc: str, text: str) -> str:
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(f"backend {text!r} names no host:port")
    return netloc
