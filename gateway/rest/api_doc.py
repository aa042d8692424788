"""What each endpoint declares about itself for the OpenAPI document: its answer and body models.

``@documented(Operation(...))`` puts the declaration on the endpoint; ``gateway.rest.openapi``
walks the app's route table and builds ``/openapi.json`` from these declarations, the routes'
paths and the scopes ``requires`` put on them. The answer and body models are the ones the
endpoints build and parse, so the document cannot drift from what the gateway does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

OPERATION_ATTRIBUTE = "__mdeploy_operation__"

Endpoint = TypeVar("Endpoint")


@dataclass(frozen=True)
class Param:
    """A query or header parameter."""

    name: str
    schema: Mapping[str, Any]
    where: Literal["query", "header"] = "query"
    description: str = ""
    unversioned_only: bool = False
    """Only on the route without ``{version}`` (the routing key picks a version)."""


@dataclass(frozen=True)
class Operation:
    """One endpoint's contract: summary, success answer, errors besides auth's, body, parameters."""

    summary: str
    answer: type[BaseModel] | None = None
    """The success answer's JSON model; None with ``answer_media`` (or no body)."""
    status: int = 200
    errors: tuple[int, ...] = ()
    """Statuses besides 401, 403 and 429, which every guarded route may answer."""
    body: type[BaseModel] | None = None
    """The JSON request body's model."""
    body_media: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Other request bodies: media type → schema."""
    answer_media: str | None = None
    """A success answer that is not JSON (a download, Prometheus text)."""
    also: Mapping[int, type[BaseModel]] = field(default_factory=dict)
    """Other success statuses and their models (200 for an unchanged push)."""
    params: tuple[Param, ...] = ()


def documented(operation: Operation) -> Callable[[Endpoint], Endpoint]:
    def declare(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, OPERATION_ATTRIBUTE, operation)
        return endpoint

    return declare


def operation_of(endpoint: object) -> Operation | None:
    operation = getattr(endpoint, OPERATION_ATTRIBUTE, None)
    return operation if isinstance(operation, Operation) else None
