"""The one error tree of mdeploy.

Every error that may reach a client carries its HTTP status and its gRPC status code, so each
front end maps errors in one place (REST: ``http_status``; gRPC: ``grpc_code``). Raise the
most specific class; its message must tell the caller what to fix.
"""

from __future__ import annotations

import grpc


class MdeployError(Exception):
    """Base of every error mdeploy reports to a client."""

    http_status: int = 500
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Extra HTTP response headers (Retry-After, X-RateLimit-*, WWW-Authenticate...).
        self.headers: dict[str, str] = headers or {}


class InvalidInput(MdeployError):
    """The request is malformed or does not match the model's signature."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MdeployError):
    """The named model, version or resource does not exist."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class Conflict(MdeployError):
    """The request is valid but conflicts with the current state (e.g. deleting a live version)."""

    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class PayloadTooLarge(MdeployError):
    """A body, upload, tensor or row count is over its configured bound."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(MdeployError):
    """No valid credentials were presented."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MdeployError):
    """The credentials are valid but lack the needed scope or model access."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(MdeployError):
    """A queue or rate limit is full; retry later."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(MdeployError):
    """The request's deadline passed before it could be answered."""

    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(MdeployError):
    """The model or backend is not ready now (loading, unloading, down); retry later."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class Unsupported(MdeployError):
    """The feature or RPC exists in the protocol but mdeploy does not implement it."""

    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class PackageError(MdeployError):
    """A model package is malformed, unsafe or inconsistent."""

    http_status = 422
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class ConversionError(MdeployError):
    """A model could not be converted to ONNX, or the converted model disagrees with it."""

    http_status = 422
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class ModelLoadError(MdeployError):
    """A model version could not be loaded (bad config, bad ONNX, signature mismatch)."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Internal(MdeployError):
    """An unexpected failure inside mdeploy; the message is safe to show, details are logged."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
