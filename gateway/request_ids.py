"""Request ids, for every front end: the client's own when it is a sane token, else a new one.

An id names a request in logs, in the answer (``X-Request-Id``, or gRPC metadata) and in
feedback for the version that answered it.
"""

from __future__ import annotations

import os
import re

_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_VALID_BYTES = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class _RandomIds:
    """New ids, 128 random bits as 32 hex digits each (like uuid4().hex), drawn from the OS 256
    at a time: one getrandom call per 256 requests instead of one each."""

    _BATCH = 256

    def __init__(self) -> None:
        self._pool = ""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(16 * self._BATCH).hex(), 0
        start, self._at = self._at, self._at + 32
        return self._pool[start : self._at]


new_request_id = _RandomIds().next


def request_id_from(supplied: bytes | str | None) -> str:
    """``supplied`` if it is 1-128 characters of ``A-Za-z0-9._:-``, else a new id."""
    if isinstance(supplied, bytes):
        return supplied.decode() if _VALID_BYTES.match(supplied) else new_request_id()
    return supplied if supplied and _VALID.match(supplied) else new_request_id()
