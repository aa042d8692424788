"""Backend version numbers: Triton names version folders with positive integers.

A package's own version is free text (``1``, ``2.3.0``, ``2024-05-rc1``). The registry gives
each version of a model a number:

* the package's version, when it is a positive integer written plainly (``7``, not ``07``)
  that this model has never used;
* otherwise the next number after the highest this model has ever used.

Numbers are never reused, even after a delete, so a number names one package forever (logs,
audit events and client pins stay unambiguous). Listings show both: ``version`` is the
number, ``package_version`` the package's own string.
"""

from __future__ import annotations

from collections.abc import Collection

from core.errors import Conflict

MAX_VERSION = 2**63 - 1
"""Triton keeps version numbers in an int64."""


def choose_version(package_version: str, used: Collection[int]) -> int:
    """The number of a new version whose package says ``package_version``."""
    wanted = _plain_positive(package_version)
    if wanted is not None and wanted not in used:
        return wanted
    following = max(used, default=0) + 1
    if following > MAX_VERSION:
        raise Conflict(f"no version number is left after {max(used)}; the highest allowed is {MAX_VERSION}")
    return following


def _plain_positive(text: str) -> int | None:
    if not text.isdecimal() or not text.isascii() or text.startswith("0"):
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None
