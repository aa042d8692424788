"""--backend names: plaintext, a server token, TLS files; bad names say what to write."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.errors import InvalidInput
from gateway.backend_address import BackendTls, parse_backend
from gateway.settings import GatewaySettings


def test_a_plain_host_port_is_plaintext_without_a_token() -> None:
    backend = parse_backend("127.0.0.1:8001")
    assert (backend.address, backend.token_file, backend.tls) == ("127.0.0.1:8001", None, None)
    assert backend.metadata() == ()


def test_grpcs_takes_its_own_files_else_the_gateways(tmp_path: Path) -> None:
    defaults = BackendTls(Path("/ca.pem"), Path("/client.pem"), Path("/client.key"))
    own = parse_backend("grpcs://10.0.0.5:8001?ca_file=/mine.pem&token_file=/t", defaults)
    assert own.address == "10.0.0.5:8001"
    assert own.tls == BackendTls(Path("/mine.pem"), Path("/client.pem"), Path("/client.key"))
    assert own.token_file == Path("/t")
    assert parse_backend("grpcs://h:1").tls == BackendTls()  # the system's CAs, no client certificate


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nohostport", "names no host:port"),
        ("http://h:1", "grpc[s]://host:port"),
        ("grpc://h:1?colour=blue", "unknown option 'colour'"),
        ("grpc://h:1?ca_file=/ca.pem", "TLS files need a grpcs:// address"),
        ("grpcs://h:1?cert_file=/c.pem", "needs both cert_file and key_file"),
    ],
)
def test_bad_backend_names_are_refused_saying_what_to_write(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse_backend(text)


def test_settings_refuse_a_bad_backend_and_half_a_tls_pair() -> None:
    with pytest.raises(ValidationError, match="names no host:port"):
        GatewaySettings(backends=["nohostport"])
    with pytest.raises(ValidationError, match="needs both --tls-cert and --tls-key"):
        GatewaySettings(tls_cert_file=Path("cert.pem"))
    with pytest.raises(ValidationError, match="--backend-tls-cert and --backend-tls-key"):
        GatewaySettings(backend_tls_key_file=Path("key.pem"))


def test_an_unreadable_token_file_names_the_backend(tmp_path: Path) -> None:
    backend = parse_backend(f"grpc://h:1?token_file={tmp_path / 'missing'}")
    with pytest.raises(InvalidInput, match="backend h:1: cannot read the server token file"):
        backend.metadata()
