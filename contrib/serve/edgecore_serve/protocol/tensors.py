"""Inference requests and responses as plain records, and tensors to and from the wire.

The records (:class:`InferRequest`, :class:`InferResponse`) are what HTTP and gRPC decode into and
encode from; the functions here turn one tensor's wire form -- raw little-endian bytes, BYTES'
length-prefixed elements, JSON data, gRPC typed contents as Python lists -- into a numpy array and
back, checking the declared shape and the size limits as they go. Nothing here imports a web or
RPC framework.
"""

from __future__ import annotations

import math
import struct
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import attrs
import numpy as np

from edgecore_serve.protocol.datatypes import numpy_dtype
from edgecore_serve.protocol.errors import BadRequest

__all__ = [
    "InferRequest",
    "InferResponse",
    "InputTensor",
    "Limits",
    "OutputTensor",
    "RequestedOutput",
    "array_from_json",
    "array_from_raw",
    "array_from_values",
    "check_shape",
    "deserialize_bytes",
    "json_data",
    "raw_bytes",
    "serialize_bytes",
]

_LENGTH = struct.Struct("<I")
MiB = 1 << 20


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"Limits.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """What one request may ask: body bytes (after decompression), elements per tensor, and time.

    ``request_timeout_ms`` 0 means no limit.
    """

    max_body_bytes: int = attrs.field(default=64 * MiB, validator=_positive)
    max_tensor_elements: int = attrs.field(default=1 << 25, validator=_positive)
    request_timeout_ms: float = attrs.field(default=0.0, validator=_positive)


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True)
class InputTensor:
    """One decoded input: ``data`` has ``shape`` and the numpy dtype of ``datatype``."""

    name: str
    datatype: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    data: np.ndarray = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` None = the request's default."""

    name: str
    binary: bool | None = None


@attrs.frozen(kw_only=True)
class InferRequest:
    """A decoded inference request. ``outputs`` empty = every output of the model."""

    model_name: str
    model_version: str = ""
    id: str = ""
    inputs: tuple[InputTensor, ...] = attrs.field(converter=tuple)
    outputs: tuple[RequestedOutput, ...] = attrs.field(default=(), converter=tuple)
    binary_output: bool = False
    parameters: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_map)


@attrs.frozen(kw_only=True)
class OutputTensor:
    """One output to send; ``binary`` says whether HTTP sends it in the binary extension."""

    name: str
    datatype: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    data: np.ndarray = attrs.field(eq=False)
    binary: bool = False


@attrs.frozen(kw_only=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str = ""
    outputs: tuple[OutputTensor, ...] = attrs.field(converter=tuple)


# -- shapes ---------------------------------------------------------------------------------------


def check_shape(shape: Any, name: str, limits: Limits) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints whose product fits ``limits.max_tensor_elements``."""
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    shape = tuple(int(d) for d in shape)
    count = math.prod(shape)
    if count > limits.max_tensor_elements:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} holds {count} elements, more than the server's limit of "
            f"{limits.max_tensor_elements} per tensor"
        )
    return shape


# -- raw bytes ------------------------------------------------------------------------------------


def array_from_raw(buffer: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The array that ``buffer`` holds in raw form: little-endian elements, or for ``BYTES`` 4-byte
    little-endian lengths each followed by that many bytes. Shares ``buffer``'s memory when it can.
    """
    dtype = numpy_dtype(datatype)
    count = math.prod(shape)
    if datatype == "BYTES":
        return deserialize_bytes(buffer, count, name).reshape(shape)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise BadRequest(
            f"input {name!r}: {len(buffer)} bytes of data disagree with shape {list(shape)} of {datatype} "
            f"({count} elements x {dtype.itemsize} bytes = {expected} bytes)"
        )
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def deserialize_bytes(buffer: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """``count`` length-prefixed elements from ``buffer`` (exactly all of it) as an object array of bytes."""
    view = memoryview(buffer).cast("B") if not isinstance(buffer, bytes) else buffer
    out = np.empty(count, dtype=object)
    offset, end = 0, len(view)
    unpack = _LENGTH.unpack_from
    for i in range(count):
        if offset + 4 > end:
            raise BadRequest(
                f"input {name!r}: BYTES data ends after {i} of {count} elements (the shape asks for {count})"
            )
        (length,) = unpack(view, offset)
        offset += 4
        if offset + length > end:
            raise BadRequest(
                f"input {name!r}: BYTES element {i} declares {length} bytes but only {end - offset} remain"
            )
        out[i] = bytes(view[offset:offset + length])
        offset += length
    if offset != end:
        raise BadRequest(
            f"input {name!r}: {end - offset} bytes left after the {count} BYTES elements the shape asks for"
        )
    return out


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, np.bytes_):
        return bytes(item)
    return str(item).encode()


def serialize_bytes(array: np.ndarray) -> bytes:
    """An array of bytes or str (UTF-8 encoded) as length-prefixed elements, row-major."""
    parts: list[bytes] = []
    pack = _LENGTH.pack
    for item in array.reshape(-1):
        data = _as_bytes(item)
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def raw_bytes(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """``array`` in raw wire form (a memoryview of it when it is already contiguous little-endian)."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    dtype = numpy_dtype(datatype)
    if array.dtype != dtype:
        array = array.astype(dtype)
    if not array.size:
        return b""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


# -- JSON and typed values ------------------------------------------------------------------------


def _flatten(data: Any, out: list[Any]) -> None:
    for item in data:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)


_KINDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}


def array_from_values(values: Sequence[Any], datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """An array of ``shape`` from a flat sequence of Python values (JSON data, gRPC typed contents)."""
    dtype = numpy_dtype(datatype)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} holds {count} elements, the data has {len(values)}"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        for i, item in enumerate(values):
            if not isinstance(item, (str, bytes)):
                raise BadRequest(f"input {name!r}: BYTES data must be strings, element {i} is {item!r}")
            out[i] = item.encode() if isinstance(item, str) else item
        return out.reshape(shape)
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: data is not a flat list of {_KINDS[dtype.kind]}: {exc}") from None
    if dtype.kind in "iu" and array.dtype.kind not in "iub" and all(type(v) is int for v in values):
        array = _big_integers(values, dtype, datatype, name)  # past int64: numpy made floats or objects
    if count and not _fits(array.dtype.kind, dtype.kind):
        raise BadRequest(
            f"input {name!r}: {datatype} data must be {_KINDS[dtype.kind]}, got {_describe(values)}"
        )
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise BadRequest(f"input {name!r}: values {low}..{high} do not fit {datatype} ({info.min}..{info.max})")
    return array.astype(dtype, copy=False).reshape(shape)


def _big_integers(values: Sequence[int], dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    info = np.iinfo(dtype)
    low, high = min(values), max(values)
    if low < info.min or high > info.max:
        raise BadRequest(f"input {name!r}: values {low}..{high} do not fit {datatype} ({info.min}..{info.max})")
    return np.array(values, dtype=dtype)


def _fits(got: str, wanted: str) -> bool:
    if wanted == "b":
        return got == "b"
    if wanted in "iu":
        return got in "iub"
    return got in "iubf"


def _describe(values: Sequence[Any]) -> str:
    kinds = sorted({type(v).__name__ for v in values[:64]})
    return f"values of type {', '.join(kinds)}"


def array_from_json(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """An array from a JSON tensor's ``data`` (flat row-major or nested lists)."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be a list, got {type(data).__name__}")
    flat: list[Any] = []
    if any(isinstance(item, list) for item in data):
        _flatten(data, flat)
    else:
        flat = data
    return array_from_values(flat, datatype, shape, name)


def json_data(array: np.ndarray, datatype: str, name: str) -> list[Any]:
    """``array`` as a flat row-major list for a JSON response (BYTES as UTF-8 strings)."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        out = []
        for item in flat:
            if isinstance(item, bytes):
                try:
                    item = item.decode()
                except UnicodeDecodeError:
                    raise BadRequest(
                        f"output {name!r} holds bytes that are not UTF-8 text; ask for it in binary form "
                        "(parameters: binary_data = true)"
                    ) from None
            out.append(item if isinstance(item, str) else str(item))
        return out
    if datatype in ("FP16", "BF16"):
        flat = flat.astype(np.float32)
    return flat.tolist()

