"""JSON request bodies of the admin routes: bounded, parsed, validated, one clear 400."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from core.errors import InvalidInput
from gateway.rest.inference import read_body

MAX_BODY = 64 * 1024
"""Admin bodies are small settings; larger ones get 413."""

Body = TypeVar("Body", bound=BaseModel)


async def parse_body(request: Request, kind: type[Body], messages: Mapping[str, str] | None = None) -> Body:
    """The request's JSON as ``kind`` (an empty body: its defaults); 400 naming the first bad field,
    in the words of ``messages`` (field → what to send) where it has them."""
    body = await read_body(request.receive, request.headers.get("content-length"), MAX_BODY)
    try:
        return kind.model_validate(orjson.loads(body or b"{}"))
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the request body is not valid JSON: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput((messages or {}).get(where, f"{where}: {first['msg']}")) from None
