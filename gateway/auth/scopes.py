"""What an API key may do. Scopes are independent: ``admin`` does not imply ``predict``."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from core.errors import InvalidInput


class KeyScope(StrEnum):
    PREDICT = "predict"
    """Call the inference routes (v1 predict, v2 infer) and read model metadata."""
    FEEDBACK = "feedback"
    """Report rewards for earlier predictions."""
    ADMIN = "admin"
    """Manage packages, versions, deployments, rollbacks and API keys."""


def parse_scopes(values: Iterable[str]) -> frozenset[KeyScope]:
    """Scopes named by ``values``; at least one, each known."""
    scopes: set[KeyScope] = set()
    for value in values:
        try:
            scopes.add(KeyScope(value.strip().lower()))
        except ValueError:
            raise InvalidInput(f"unknown scope {value!r}; use {_choices()}") from None
    if not scopes:
        raise InvalidInput(f"a key needs at least one scope: {_choices()}")
    return frozenset(scopes)


def _choices() -> str:
    return ", ".join(scope.value for scope in KeyScope)
