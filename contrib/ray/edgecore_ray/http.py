"""KServe v2 over HTTP on Ray Serve's ingress, for one model: what a replica answers to the requests
Ray's HTTP proxy routes to it. Parsing, encoding, compression, documents and error statuses all come
from :mod:`edgecore_serve.protocol` (the same code as ``edgecore serve``); this module only maps
paths to them.

Endpoints: ``GET /v2/health/live|ready``, ``GET /v2`` (server metadata),
``GET /v2/models/{m}[/versions/{v}]`` (metadata), ``.../ready``, ``.../config``, and
``POST .../infer`` (JSON and binary tensors, gzip/deflate both ways). Every error is
``{"error": ...}`` with Triton's status; a 503 says ``Retry-After``.

Concurrency: :func:`handle` is a coroutine on the replica's event loop; inference awaits the
replica's engine, so concurrent HTTP requests share the engine's dynamic batches.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from edgecore_serve.protocol.documents import model_config, model_metadata, server_metadata
from edgecore_serve.protocol.errors import BadRequest, NotFound, PayloadTooLarge, error_body, status_of
from edgecore_serve.protocol.http_codec import (
    HEADER_LENGTH,
    compress,
    decode_infer_request,
    decompress,
    encode_infer_response,
    parse_header_length,
)

if TYPE_CHECKING:
    from edgecore_ray.replica import ServedModel

__all__ = ["PLATFORM", "handle"]

PLATFORM = "edgecore_onnx"
_JSON = "application/json"
_MODEL_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/[a-z]+)?$")


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status, media_type=_JSON)


def error_response(exc: BaseException) -> Response:
    status, _, message = status_of(exc)
    headers = {"Retry-After": "1"} if status == 503 else {}
    return Response(error_body(message), status_code=status, media_type=_JSON, headers=headers)


async def _body(request: Request, limit: int) -> bytes:
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"the request body is larger than the server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def handle(request: Request, served: ServedModel) -> Response:
    """Answer one KServe v2 HTTP request for ``served``."""
    try:
        return await _dispatch(request, served)
    except Exception as exc:
        return error_response(exc)


async def _dispatch(request: Request, served: ServedModel) -> Response:
    path, method = request.url.path.rstrip("/") or "/", request.method
    if path in ("/v2/health/live", "/v2/health/ready") and method == "GET":
        return _json({path.rsplit("/", 1)[1]: True})
    if path == "/v2" and method == "GET":
        from edgecore import __version__

        return _json(server_metadata(__version__))
    match = _MODEL_PATH.match(path)
    if match is None:
        raise NotFound(f"no endpoint {method} {path}")
    name, version, rest = match["model"], match["version"] or "", match["rest"] or ""
    if name != served.name or version not in ("", served.version):
        raise NotFound(
            f"unknown model {name!r}" + (f" version {version!r}" if version else "")
            + f"; this deployment serves {served.name!r} version {served.version!r}"
        )
    expected = "POST" if rest == "/infer" else "GET"
    if method != expected or rest not in ("", "/ready", "/config", "/infer"):
        raise NotFound(f"no endpoint {method} {path}")
    engine = served.engine
    if rest == "":
        return _json(model_metadata(name, [served.version], engine.inputs, engine.outputs, PLATFORM))
    if rest == "/ready":
        return _json({"name": name, "ready": True})
    if rest == "/config":
        return _json(model_config(name, engine.inputs, engine.outputs, config=engine.config,
                                  platform=PLATFORM, backend=engine.backend))
    limit = served.limits.max_body_bytes
    body = decompress(await _body(request, limit), request.headers.get("content-encoding"), limit)
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
    decoded = decode_infer_request(body, header_length, model_name=name, model_version=version,
                                   limits=served.limits)
    response = await served.infer_request(decoded)
    out, out_header_length = encode_infer_response(response)
    headers = {"edgecore-replica": served.replica}
    if out_header_length is not None:
        headers[HEADER_LENGTH] = str(out_header_length)
    out, encoding = compress(out, request.headers.get("accept-encoding"))
    if encoding:
        headers["Content-Encoding"] = encoding
    media = "application/octet-stream" if out_header_length is not None else _JSON
    return Response(out, media_type=media, headers=headers)


def check_feeds(served: ServedModel, request: Any) -> dict[str, Any]:
    """The decoded request's inputs as engine feeds; :class:`BadRequest` for an unknown, repeated or
    missing input or a datatype the model does not take."""
    from edgecore_serve.protocol.datatypes import protocol_datatype

    specs = {s.name: s for s in served.engine.inputs}
    feeds: dict[str, Any] = {}
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise BadRequest(f"model {served.name!r} has no input {tensor.name!r}; its inputs: {', '.join(specs)}")
        if tensor.name in feeds:
            raise BadRequest(f"input {tensor.name!r} is given twice")
        expected = protocol_datatype(spec.dtype)
        if tensor.datatype != expected:
            raise BadRequest(
                f"input {tensor.name!r} of model {served.name!r}: expected datatype {expected}, got {tensor.datatype}"
            )
        data = tensor.data
        if tensor.datatype == "BYTES":
            data = _as_text(data, tensor.name)
        feeds[tensor.name] = data
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise BadRequest(f"model {served.name!r} needs input(s) {', '.join(missing)}; the request gave "
                         f"{', '.join(feeds) or 'none'}")
    return feeds


def _as_text(array: Any, name: str) -> Any:
    """BYTES from the wire (bytes objects) as the ``str`` objects edgecore's string inputs take."""
    import numpy as np

    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        try:
            out[i] = item.decode() if isinstance(item, bytes) else item
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: element {i} is not UTF-8 text, as string inputs must be") from None
    return out.reshape(array.shape)
