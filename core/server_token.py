"""The token that closes inference servers to everyone but their gateway.

``mdeploy serve`` writes a token of 32 random bytes (as hex) to its data folder, readable by its
owner only, hands the file to the servers it starts (``mdeploy-server --auth-token-file``) and
sends ``authorization: Bearer <token>`` with every call to them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_BYTES = 32
METADATA_KEY = "authorization"


def read_token(path: Path) -> str:
    """The token in ``path``; ValueError naming the file when it is missing, unreadable or short."""
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise ValueError(f"cannot read the server token file {path}: {error.strerror}") from None
    if len(token) < 2 * TOKEN_BYTES or any(c not in "0123456789abcdef" for c in token):
        raise ValueError(f"{path} must hold a token of at least {TOKEN_BYTES} random bytes as hex digits")
    return token


def ensure_token(path: Path) -> str:
    """The token in ``path``, made (mode 0600) when there is none yet."""
    if path.exists():
        return read_token(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(TOKEN_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """What the gateway sends with every call to a server that holds ``token``."""
    return ((METADATA_KEY, f"Bearer {token}"),)
