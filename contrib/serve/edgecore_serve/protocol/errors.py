"""Errors of the serving layer and their HTTP and gRPC status, as Triton answers them.

Every error reaches the client as ``{"error": "<message>"}`` (HTTP) or a gRPC status with the
message as details. :func:`status_of` maps any exception -- this module's, edgecore's
(:mod:`edgecore.errors`) or an unexpected one -- to ``(http_status, grpc_code, message)``; gRPC codes
are ``grpc.StatusCode`` member names, so that this module imports no gRPC.

==============================================  ======  ====================
error                                           HTTP    gRPC
==============================================  ======  ====================
BadRequest, InvalidInputError,                  400     INVALID_ARGUMENT
ConfigurationError, ModelLoadError
Unauthorized                                    401     UNAUTHENTICATED
NotFound (unknown model, version, route)        404     NOT_FOUND
PayloadTooLarge                                 413     RESOURCE_EXHAUSTED
Unavailable, QueueFullError, EngineClosedError,  503     UNAVAILABLE
ModelNotLoadedError, MemoryBudgetExceeded
RequestTimeoutError                             504     DEADLINE_EXCEEDED
NotImplemented_, UnsupportedOperatorError       501     UNIMPLEMENTED
BackendExecutionError and anything else         500     INTERNAL
==============================================  ======  ====================
"""

from __future__ import annotations

import json

from edgecore import errors as ec

__all__ = [
    "BadRequest",
    "NotFound",
    "NotImplemented_",
    "PayloadTooLarge",
    "ServeError",
    "Unauthorized",
    "Unavailable",
    "error_body",
    "status_of",
]


class ServeError(Exception):
    """An error the server answers with ``http_status`` / ``grpc_code``."""

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadRequest(ServeError):
    """The request is malformed or does not fit the model (400)."""

    http_status, grpc_code = 400, "INVALID_ARGUMENT"


class Unauthorized(ServeError):
    """A bearer token is required and was missing or wrong (401)."""

    http_status, grpc_code = 401, "UNAUTHENTICATED"


class NotFound(ServeError):
    """Unknown model, model version or endpoint (404)."""

    http_status, grpc_code = 404, "NOT_FOUND"


class PayloadTooLarge(ServeError):
    """The request body, decompressed, is larger than the server accepts (413)."""

    http_status, grpc_code = 413, "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """The server or model cannot take the request now (503); retry later."""

    http_status, grpc_code = 503, "UNAVAILABLE"


class NotImplemented_(ServeError):
    """The request asks for a part of the protocol this server does not implement (501)."""

    http_status, grpc_code = 501, "UNIMPLEMENTED"


_EDGECORE_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (ec.InvalidInputError, 400, "INVALID_ARGUMENT"),
    (ec.ConfigurationError, 400, "INVALID_ARGUMENT"),
    (ec.ModelLoadError, 400, "INVALID_ARGUMENT"),
    (ec.QueueFullError, 503, "UNAVAILABLE"),
    (ec.EngineClosedError, 503, "UNAVAILABLE"),
    (ec.ModelNotLoadedError, 503, "UNAVAILABLE"),
    (ec.MemoryBudgetExceeded, 503, "UNAVAILABLE"),
    (ec.RequestTimeoutError, 504, "DEADLINE_EXCEEDED"),
    (ec.UnsupportedOperatorError, 501, "UNIMPLEMENTED"),
    (ec.BackendExecutionError, 500, "INTERNAL"),
)


def status_of(exc: BaseException) -> tuple[int, str, str]:
    """``(http_status, grpc_code, message)`` for ``exc``."""
    if isinstance(exc, ServeError):
        return exc.http_status, exc.grpc_code, str(exc)
    for kind, http_status, grpc_code in _EDGECORE_STATUS:
        if isinstance(exc, kind):
            return http_status, grpc_code, str(exc)
    if isinstance(exc, ec.EdgecoreError):
        return 500, "INTERNAL", str(exc)
    if isinstance(exc, TimeoutError):
        return 504, "DEADLINE_EXCEEDED", f"the request took longer than the server's timeout: {exc}".rstrip(": ")
    return 500, "INTERNAL", f"internal error: {type(exc).__name__}: {exc}"


def error_body(message: str) -> bytes:
    """The JSON body of an error response: ``{"error": message}``."""
    return json.dumps({"error": message}).encode()
