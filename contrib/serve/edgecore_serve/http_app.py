"""KServe v2 over HTTP/REST, as a Starlette (ASGI) application.

Endpoints (``{v}`` optional everywhere it appears as ``[/versions/{v}]``):

* ``GET /v2/health/live``, ``GET /v2/health/ready``; ``GET /v2`` (server metadata)
* ``GET /v2/models/{m}[/versions/{v}]`` (metadata), ``.../ready``, ``.../config``
* ``GET /v2/models/stats``, ``GET /v2/models/{m}[/versions/{v}]/stats`` (Triton's statistics)
* ``POST /v2/models/{m}[/versions/{v}]/infer``: JSON and binary tensors, gzip/deflate both ways
* ``POST /v2/repository/index``, ``POST /v2/repository/models/{m}/load|unload``
* ``GET /metrics`` (Prometheus text)

Every error is ``{"error": "..."}`` with Triton's status codes: no framework default (``{"detail":
...}``, plain-text 404) reaches a client. With a token, every endpoint but ``/v2/health/*`` needs
``Authorization: Bearer <token>`` (compared in constant time).

Concurrency: handlers run on the event loop; inference awaits the engine's future, so requests of
all connections share dynamic batches. Large bodies are decoded and encoded in worker threads.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgecore_serve.protocol.errors import BadRequest, PayloadTooLarge, error_body, status_of
from edgecore_serve.protocol.http_codec import (
    HEADER_LENGTH,
    compress,
    decode_infer_request,
    decompress,
    encode_infer_response,
    parse_header_length,
)
from edgecore_serve.service import OFFLOAD_BYTES, OFFLOAD_ELEMENTS, InferenceService, offload
from edgecore_serve.telemetry import ServerMetrics, endpoint_of, exposition

__all__ = ["build_app"]

_JSON = "application/json"
_now = time.perf_counter_ns


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status, media_type=_JSON)


def error_response(exc: BaseException) -> Response:
    status, _, message = status_of(exc)
    headers = {}
    retry = getattr(exc, "retry_after_s", None) or (1.0 if status == 503 else None)
    if retry:
        headers["Retry-After"] = str(max(1, round(retry)))  # every 503 says when to try again
    return Response(error_body(message), status_code=status, media_type=_JSON, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Answer any exception of ``handler`` as ``{"error": ...}`` with its status."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return error_response(exc)

    guarded.__name__ = handler.__name__
    return guarded


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BadRequest(f"Content-Length must be an integer, got {length!r}") from None
        if declared > limit:
            raise PayloadTooLarge(f"the request body has {declared} bytes, more than the server's limit of {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"the request body is larger than the server's limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def build_app(
    service: InferenceService,
    *,
    token: str | None = None,
    metrics: ServerMetrics | None = None,
    repository_endpoints: bool = True,
) -> Any:
    """The ASGI application: the routes above, behind the token check and request metrics.

    ``repository_endpoints=False`` leaves out ``/v2/repository/*`` (for front ends such as a Ray
    Serve replica, where loading or unloading would act on whichever replica the request reached).
    """
    metrics = metrics or ServerMetrics()
    limits = service.limits

    def params(request: Request) -> tuple[str, str]:
        p = request.path_params
        return p["model"], p.get("version", "")

    async def live(request: Request) -> Response:
        return _json({"live": True}) if service.live() else _json({"error": "server not live"}, 503)

    async def ready(request: Request) -> Response:
        return _json({"ready": True}) if service.ready() else _json({"error": "server not ready"}, 503)

    async def server_metadata(request: Request) -> Response:
        return _json(service.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return _json(await service.model_metadata(*params(request)))

    async def model_ready(request: Request) -> Response:
        name, version = params(request)
        if service.model_ready(name, version):
            return _json({"name": name, "ready": True})
        return _json({"error": f"model {name!r} is not ready"}, 400)  # Triton's answer

    async def model_config(request: Request) -> Response:
        return _json(await service.model_config(*params(request)))

    async def stats_all(request: Request) -> Response:
        return _json(service.statistics())

    async def model_stats(request: Request) -> Response:
        return _json(service.statistics(*params(request)))

    async def infer(request: Request) -> Response:
        started = _now()
        name, version = params(request)
        try:
            service.check_model(name, version)
            body = await _read_body(request, limits.max_body_bytes)
            body = decompress(body, request.headers.get("content-encoding"), limits.max_body_bytes)
            header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
            big = (len(body) if header_length is None else header_length) > OFFLOAD_BYTES
            decoded = await offload(
                big, decode_infer_request, body, header_length, model_name=name, model_version=version, limits=limits
            )
        except Exception as exc:
            service.count_failure(name, version, started)
            return error_response(exc)
        response = await service.infer(decoded, started)
        big = sum(t.data.size for t in response.outputs if not t.binary) > OFFLOAD_ELEMENTS
        out, out_header_length = await offload(big, encode_infer_response, response)
        headers = {}
        if out_header_length is not None:
            headers[HEADER_LENGTH] = str(out_header_length)
        accept = request.headers.get("accept-encoding")
        if accept:
            out, encoding = await offload(len(out) > OFFLOAD_BYTES, compress, out, accept)
            if encoding:
                headers["Content-Encoding"] = encoding
        media = "application/octet-stream" if out_header_length is not None else _JSON
        return Response(out, media_type=media, headers=headers)

    async def repository_index(request: Request) -> Response:
        body = await _read_body(request, 1 << 16)
        ready_only = False
        if body.strip():
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise BadRequest(f"malformed JSON in the repository index request: {exc}") from None
            ready_only = bool(isinstance(doc, dict) and doc.get("ready"))
        return _json(service.repository_index(ready_only))

    async def load(request: Request) -> Response:
        await _read_body(request, 1 << 20)
        await service.load(request.path_params["model"])
        return _json({})

    async def unload(request: Request) -> Response:
        await _read_body(request, 1 << 20)
        await service.unload(request.path_params["model"])
        return _json({})

    async def prometheus(request: Request) -> Response:
        return Response(exposition(metrics), media_type="text/plain; version=0.0.4; charset=utf-8")

    def both(path: str, handler: Handler, methods: list[str]) -> list[Route]:
        handler = _guarded(handler)
        return [
            Route(f"/v2/models/{{model}}{path}", handler, methods=methods),
            Route(f"/v2/models/{{model}}/versions/{{version}}{path}", handler, methods=methods),
        ]

    routes = [
        Route("/v2/health/live", _guarded(live), methods=["GET"]),
        Route("/v2/health/ready", _guarded(ready), methods=["GET"]),
        Route("/v2", _guarded(server_metadata), methods=["GET"]),
        Route("/v2/models/stats", _guarded(stats_all), methods=["GET"]),
        Route("/metrics", _guarded(prometheus), methods=["GET"]),
        *both("/infer", infer, ["POST"]),
        *both("/ready", model_ready, ["GET"]),
        *both("/config", model_config, ["GET"]),
        *both("/stats", model_stats, ["GET"]),
        *both("", model_metadata, ["GET"]),
    ]
    if repository_endpoints:
        routes += [
            Route("/v2/repository/index", _guarded(repository_index), methods=["POST"]),
            Route("/v2/repository/models/{model}/load", _guarded(load), methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", _guarded(unload), methods=["POST"]),
        ]

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            if exc.status_code == 404:
                message = f"no endpoint {request.method} {request.url.path}"
            elif exc.status_code == 405:
                message = f"method {request.method} is not allowed on {request.url.path}"
            else:
                message = str(exc.detail)
            return Response(error_body(message), status_code=exc.status_code, media_type=_JSON)
        return error_response(exc)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error})
    return _Frontdoor(app, token=token, metrics=metrics)


class _Frontdoor:
    """ASGI middleware: the bearer-token check (all but ``/v2/health/*``) and per-request metrics."""

    def __init__(self, app: Any, *, token: str | None, metrics: ServerMetrics) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        status = [500]

        async def send_recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.expected is not None and not path.startswith("/v2/health/") and not self._authorized(scope):
                await _send_unauthorized(send_recording)
            else:
                await self.app(scope, receive, send_recording)
        finally:
            self.metrics.observe("http", endpoint_of(path), status[0], time.perf_counter() - started)

    def _authorized(self, scope: dict) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization":
                return hmac.compare_digest(value, self.expected)
        return False


async def _send_unauthorized(send: Any) -> None:
    body = error_body("this server needs 'Authorization: Bearer <token>' on every endpoint but /v2/health")
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [(b"content-type", _JSON.encode()), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer")],
    })
    await send({"type": "http.response.body", "body": body})
