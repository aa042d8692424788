"""Query parameters the admin routes share."""

from __future__ import annotations

from starlette.requests import Request

from core.errors import InvalidInput

_TRUE = {"1", "true", "yes"}
_FALSE = {"", "0", "false", "no"}


def flag(request: Request, name: str) -> bool:
    """A boolean query parameter (absent: false); 400 naming it for anything else."""
    value = request.query_params.get(name, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInput(f"query parameter '{name}' must be true or false, not {value!r}")
