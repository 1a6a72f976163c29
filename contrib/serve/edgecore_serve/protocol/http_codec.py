"""The HTTP/REST form of KServe v2 inference: JSON tensors, the binary tensor extension, compression.

A request body is a JSON header, optionally followed by binary tensor data; the header's length is
given by the ``Inference-Header-Content-Length`` HTTP header. Inputs with
``parameters.binary_data_size`` take that many bytes of the binary part, in the order the inputs are
listed, and the sizes must add up to the binary part exactly. Outputs are sent in binary when the
request says so per output (``outputs[].parameters.binary_data``) or for all
(``parameters.binary_data_output``); the response then carries ``Inference-Header-Content-Length``
too. Bodies may be gzip- or deflate-compressed both ways (``Content-Encoding`` /
``Accept-Encoding``); lengths refer to the uncompressed body.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Mapping

from edgecore_serve.protocol.datatypes import numpy_dtype
from edgecore_serve.protocol.errors import BadRequest, NotImplemented_, PayloadTooLarge
from edgecore_serve.protocol.tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    Limits,
    RequestedOutput,
    array_from_json,
    array_from_raw,
    check_shape,
    json_data,
    raw_bytes,
)

__all__ = [
    "HEADER_LENGTH",
    "compress",
    "decode_infer_request",
    "decompress",
    "encode_infer_response",
    "parse_header_length",
]

#: The HTTP header giving the JSON part's length in a binary request or response.
HEADER_LENGTH = "Inference-Header-Content-Length"

_ENCODINGS = ("gzip", "deflate")


# -- compression ----------------------------------------------------------------------------------


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decoded from ``Content-Encoding`` (gzip, deflate or identity), at most ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _ENCODINGS:
        raise NotImplemented_(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or identity")
    # gzip: header auto-detected (wbits 32+15); deflate: zlib-wrapped as HTTP says, or raw as some send it
    attempts = (47,) if encoding == "gzip" else (15, -15)
    for position, wbits in enumerate(attempts):
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(body, limit + 1)
        except zlib.error as exc:
            if position + 1 < len(attempts):
                continue
            raise BadRequest(f"the {encoding} request body cannot be decompressed: {exc}") from None
        if len(out) > limit:
            raise PayloadTooLarge(f"the request body decompresses to more than the server's limit of {limit} bytes")
        if not decoder.eof:
            raise BadRequest(f"the {encoding} request body is truncated")
        return out
    raise AssertionError("unreachable")  # pragma: no cover


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """``body`` compressed with the first of gzip/deflate the client accepts, and the encoding used."""
    if not accept_encoding:
        return body, None
    accepted = []
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        if params.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            continue
        accepted.append(token.strip().lower())
    for encoding in accepted:
        if encoding == "gzip":
            encoder = zlib.compressobj(6, zlib.DEFLATED, 31)
            return encoder.compress(body) + encoder.flush(), "gzip"
        if encoding == "deflate":
            return zlib.compress(body, 6), "deflate"
    return body, None


# -- requests -------------------------------------------------------------------------------------


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The ``Inference-Header-Content-Length`` value, checked against the body's length."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None
    if length < 0 or length > body_length:
        raise BadRequest(f"{HEADER_LENGTH} is {length} but the request body has {body_length} bytes")
    return length


def _json_object(data: bytes | memoryview, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON in the {what}: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"the {what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _parameters(item: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object, got {type(params).__name__}")
    return params


def decode_infer_request(
    body: bytes, header_length: int | None, *, model_name: str, model_version: str = "", limits: Limits = Limits()
) -> InferRequest:
    """Decode an inference request body (already decompressed). Raises :class:`BadRequest` naming
    what was wrong."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view):]
    else:
        header, binary = view[:header_length], view[header_length:]
    doc = _json_object(header, "inference request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the inference request must have a non-empty 'inputs' list")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise BadRequest(f"the request 'id' must be a string, got {type(request_id).__name__}")
    params = _parameters(doc, "the request")
    inputs = []
    offset = 0
    for position, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{position}] must be an object, got {type(item).__name__}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{position}] needs a 'name' string")
        datatype = item.get("datatype")
        numpy_dtype(datatype)
        shape = check_shape(item.get("shape"), name, limits)
        input_params = _parameters(item, f"input {name!r}")
        if "shared_memory_region" in input_params:
            raise NotImplemented_(f"input {name!r}: the shared-memory extension is not supported by this server")
        size = input_params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} goes past the binary data "
                    f"({len(binary) - offset} bytes left of {len(binary)})"
                )
            data = array_from_raw(binary[offset:offset + size], datatype, shape, name)
            offset += size
        elif "data" in item:
            data = array_from_json(item["data"], datatype, shape, name)
        else:
            raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        inputs.append(InputTensor(name=name, datatype=datatype, shape=shape, data=data))
    if offset != len(binary):
        raise BadRequest(
            f"the request has {len(binary)} bytes of binary data but its inputs' binary_data_size add up to {offset}"
        )
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequest(f"parameters.binary_data_output must be true or false, got {binary_output!r}")
    outputs = []
    raw_outputs = doc.get("outputs") or []
    if not isinstance(raw_outputs, list):
        raise BadRequest(f"'outputs' must be a list, got {type(raw_outputs).__name__}")
    for position, item in enumerate(raw_outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"outputs[{position}] must be an object with a 'name' string")
        out_params = _parameters(item, f"output {item['name']!r}")
        if out_params.get("classification"):
            raise NotImplemented_(f"output {item['name']!r}: the classification extension is not supported")
        if "shared_memory_region" in out_params:
            raise NotImplemented_(f"output {item['name']!r}: the shared-memory extension is not supported")
        binary = out_params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadRequest(f"output {item['name']!r}: binary_data must be true or false, got {binary!r}")
        outputs.append(RequestedOutput(name=item["name"], binary=binary))
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        inputs=inputs,
        outputs=outputs,
        binary_output=binary_output,
        parameters={k: v for k, v in params.items() if k != "binary_data_output"},
    )


# -- responses ------------------------------------------------------------------------------------


def encode_infer_response(response: InferResponse) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length."""
    outputs = []
    blobs: list[bytes | memoryview] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if tensor.binary:
            blob = raw_bytes(tensor.data, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = json_data(tensor.data, tensor.datatype, tensor.name)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    doc["outputs"] = outputs
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)
