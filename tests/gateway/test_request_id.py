"""Request ids: a sane client id is kept, anything else gets a fresh random one."""

from __future__ import annotations

import re

from gateway.rest.request_id import assign_request_id, request_id_of


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def test_new_ids_are_32_hex_digits_and_never_repeat_across_batches() -> None:
    ids = [assign_request_id(_scope()).decode() for _ in range(2000)]  # several draws of 256
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert len(set(ids)) == len(ids)


def test_a_sane_client_id_is_kept_and_stored_in_the_scope() -> None:
    scope = _scope((b"x-request-id", b"order-42:retry.1"))
    assert assign_request_id(scope) == b"order-42:retry.1"
    assert request_id_of(scope) == "order-42:retry.1"


def test_an_unsafe_client_id_is_replaced() -> None:
    for bad in (b"", b"has space", b"x" * 129, b"semi;colon", "é".encode()):
        assigned = assign_request_id(_scope((b"x-request-id", bad)))
        assert assigned != bad
        assert re.fullmatch(rb"[0-9a-f]{32}", assigned)
