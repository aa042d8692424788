"""Admin API for packages and model versions (scope ``admin``): push, list, inspect, download,
delete, and the audit log.

A push is the raw package as the body (``Content-Type: application/octet-stream``), streamed
to a file in the registry's work folder, never held in memory; past ``max_upload_bytes`` it
is refused with 413 at once and the partial file removed. The answer is 201 when a version
was created or restored, 200 when the package was live already.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from core.errors import InvalidInput, NotFound, PayloadTooLarge
from gateway.auth import KeyScope, requires
from gateway.registry.audit import AuditEntry
from gateway.registry.records import ModelInfo, PushStatus, VersionInfo
from gateway.registry.service import Registry
from gateway.releases import PushReport, VersionReport
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.query import flag
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state

log = logging.getLogger(__name__)

MAX_REASON = 1000
_MAX_VERSION = 2**63 - 1


class ModelList(BaseModel):
    """``GET /v1/admin/models``: every model with its versions."""

    models: list[ModelInfo]


class AuditPage(BaseModel):
    """``GET /v1/admin/audit``: changes, newest first; page on with ``before`` = the last id."""

    events: list[AuditEntry]


FLAG = {"type": "boolean"}
PUSH = Operation(
    "Upload a package (raw body): verify, store, load; the model's first version goes live, later "
    "ones are staged unless promote=true (201: created or restored)",
    answer=PushReport,
    status=201,
    also={200: PushReport},
    errors=(400, 409, 413, 422, 503),
    body_media={"application/octet-stream": {"type": "string", "format": "binary"}},
    params=(Param("promote", FLAG),),
)
DELETE_VERSION = Operation(
    "Retire a version (409 for one that serves unless forced: its traffic then moves first)",
    answer=VersionInfo,
    errors=(400, 404, 409),
    params=(Param("force", FLAG), Param("reason", {"type": "string", "maxLength": MAX_REASON})),
)
AUDIT = Operation(
    "The audit log, newest first",
    answer=AuditPage,
    errors=(400,),
    params=(
        Param("model", {"type": "string"}),
        Param("actor", {"type": "string"}),
        Param("action", {"type": "string"}),
        Param("limit", {"type": "integer", "minimum": 1}),
        Param("before", {"type": "integer", "minimum": 0}),
    ),
)


def routes() -> list[Route]:
    return [
        Route("/v1/admin/packages", push_package, methods=["POST"]),
        Route("/v1/admin/models", list_models, methods=["GET"]),
        Route("/v1/admin/models/{model}", get_model, methods=["GET"]),
        Route("/v1/admin/models/{model}/versions/{version}", get_version, methods=["GET"]),
        Route("/v1/admin/models/{model}/versions/{version}", delete_version, methods=["DELETE"]),
        Route("/v1/admin/models/{model}/versions/{version}/package", download_package, methods=["GET"]),
        Route("/v1/admin/audit", audit_log, methods=["GET"]),
    ]


@documented(PUSH)
@requires(KeyScope.ADMIN)
async def push_package(request: Request) -> Response:
    state = gateway_state(request)
    promote = flag(request, "promote")
    limit = state.settings.max_upload_bytes
    _check_upload_headers(request, limit)
    path = state.registry.new_upload_path()
    try:
        await _receive(request, path, limit)
    except BaseException:
        _discard(path)
        raise
    status, outcome = await state.releases.push(path, _actor(request), promote=promote)
    return ModelResponse(outcome, status_code=200 if status is PushStatus.UNCHANGED else 201)


@documented(
    Operation("Models, versions and manifests", answer=ModelList, errors=(400,), params=(Param("all", FLAG),))
)
@requires(KeyScope.ADMIN)
async def list_models(request: Request) -> Response:
    models = await gateway_state(request).releases.models(include_retired=flag(request, "all"))
    return ModelResponse(ModelList(models=models))


@documented(Operation("One model, every version (deleted too)", answer=ModelInfo, errors=(404,)))
@requires(KeyScope.ADMIN)
async def get_model(request: Request) -> Response:
    return ModelResponse(await gateway_state(request).releases.model_info(request.path_params["model"]))


@documented(Operation("One version with its manifest and evaluations", answer=VersionReport, errors=(404,)))
@requires(KeyScope.ADMIN)
async def get_version(request: Request) -> Response:
    releases = gateway_state(request).releases
    return ModelResponse(await releases.version_report(request.path_params["model"], _version(request)))


@documented(Operation("Download the package", answer_media="application/octet-stream", errors=(404,)))
@requires(KeyScope.ADMIN)
async def download_package(request: Request) -> Response:
    registry = _registry(request)
    name, version = request.path_params["model"], _version(request)
    record = await registry.version_record(name, version)
    return FileResponse(
        await registry.package_path(name, version),
        media_type="application/octet-stream",
        filename=f"{name}-{version}.pkg",
        headers={"X-Package-Digest": record.digest, "ETag": f'"{record.digest}"'},
    )


@documented(DELETE_VERSION)
@requires(KeyScope.ADMIN)
async def delete_version(request: Request) -> Response:
    reason = request.query_params.get("reason", "")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise InvalidInput(f"reason must be printable text of at most {MAX_REASON} characters")
    model, version = request.path_params["model"], _version(request)
    record = await gateway_state(request).releases.delete_version(
        model, version, _actor(request), force=flag(request, "force"), reason=reason
    )
    return ModelResponse(record.info())


@documented(AUDIT)
@requires(KeyScope.ADMIN)
async def audit_log(request: Request) -> Response:
    query = request.query_params
    events = await _registry(request).audit_events(
        model=query.get("model") or None,
        actor=query.get("actor") or None,
        action=query.get("action") or None,
        limit=_integer(request, "limit") or 100,
        before=_integer(request, "before"),
    )
    return ModelResponse(AuditPage(events=[event.entry() for event in events]))


# ---- the upload ----


def _check_upload_headers(request: Request, limit: int) -> None:
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise InvalidInput(
            "send the package itself as the body with Content-Type: application/octet-stream "
            "(curl --data-binary @model.pkg), not as a form upload"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if declared == "0":
        raise InvalidInput("the body is empty; send the package file as the body")


async def _receive(request: Request, path: Path, limit: int) -> None:
    """Stream the body to ``path``, refusing it the moment it passes ``limit`` bytes."""
    received = 0
    with _open_upload(path) as file:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            # Page-cache writes of one chunk take microseconds; a thread hop per chunk costs more.
            file.write(chunk)
    if received == 0:
        raise InvalidInput("the body is empty; send the package file as the body")


def _open_upload(path: Path) -> BinaryIO:
    return path.open("xb")


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the package is over the upload limit of {limit} bytes (gateway setting MDEPLOY_MAX_UPLOAD_BYTES)"
    )


# ---- parameters ----


def _registry(request: Request) -> Registry:
    return gateway_state(request).registry


def _actor(request: Request) -> str:
    return f"key:{request.state.api_key.id}"


def _version(request: Request) -> int:
    text: str = request.path_params["version"]
    # Past SQLite's largest INTEGER no version can exist (and the lookup would overflow).
    if not (text.isdecimal() and text.isascii()) or int(text) > _MAX_VERSION:
        raise NotFound(
            f"version '{text}' of model '{request.path_params['model']}' does not exist; "
            "versions are numbers (see GET /v1/admin/models)"
        )
    return int(text)


def _integer(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdecimal():
        raise InvalidInput(f"query parameter '{name}' must be a positive whole number, not {value!r}")
    return int(value)
