"""KServe v2 / Open Inference Protocol datatypes and their numpy and edgecore equivalents.

The protocol names element types ``BOOL``, ``UINT8`` .. ``UINT64``, ``INT8`` .. ``INT64``, ``FP16``,
``FP32``, ``FP64``, ``BF16`` and ``BYTES``. Fixed-size types travel as little-endian raw bytes in the
binary extension and in gRPC's ``raw_*_contents``; ``BYTES`` elements travel as a 4-byte
little-endian length followed by the bytes. On the numpy side ``BYTES`` is an ``object`` array (of
``bytes`` from the wire, of ``str`` for edgecore's string inputs).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import ml_dtypes
import numpy as np
from edgecore.tensor import DataType

from edgecore_serve.protocol.errors import BadRequest

__all__ = [
    "DATATYPES",
    "GRPC_CONTENTS_FIELD",
    "TRITON_CONFIG_TYPE",
    "datatype_of",
    "edgecore_type",
    "numpy_dtype",
    "protocol_datatype",
]

#: Protocol datatype -> numpy dtype (BYTES -> object).
DATATYPES: Mapping[str, np.dtype] = MappingProxyType({
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(object),
})

_FROM_EDGECORE: Mapping[DataType, str] = MappingProxyType({
    DataType.BOOL: "BOOL",
    DataType.UINT8: "UINT8",
    DataType.UINT16: "UINT16",
    DataType.UINT32: "UINT32",
    DataType.UINT64: "UINT64",
    DataType.INT8: "INT8",
    DataType.INT16: "INT16",
    DataType.INT32: "INT32",
    DataType.INT64: "INT64",
    DataType.FLOAT16: "FP16",
    DataType.FLOAT: "FP32",
    DataType.DOUBLE: "FP64",
    DataType.BFLOAT16: "BF16",
    DataType.STRING: "BYTES",
})
_TO_EDGECORE: Mapping[str, DataType] = MappingProxyType({v: k for k, v in _FROM_EDGECORE.items()})
_FROM_NUMPY: Mapping[np.dtype, str] = MappingProxyType({v: k for k, v in DATATYPES.items()})

#: Triton's model-configuration type names (``TYPE_FP32``...) for each protocol datatype.
TRITON_CONFIG_TYPE: Mapping[str, str] = MappingProxyType(
    {name: "TYPE_STRING" if name == "BYTES" else f"TYPE_{name}" for name in DATATYPES}
)

#: gRPC ``InferTensorContents`` field holding each datatype's typed contents (None: raw only).
GRPC_CONTENTS_FIELD: Mapping[str, str | None] = MappingProxyType({
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP16": None,
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BF16": None,
    "BYTES": "bytes_contents",
})


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of protocol ``datatype``; :class:`BadRequest` naming the known ones if unknown."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise BadRequest(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def protocol_datatype(dtype: DataType) -> str:
    """The protocol datatype of an edgecore :class:`DataType`; :class:`BadRequest` if it has none."""
    try:
        return _FROM_EDGECORE[dtype]
    except KeyError:
        raise BadRequest(
            f"edgecore type {dtype.short} has no KServe v2 datatype; served types: "
            f"{', '.join(d.short for d in _FROM_EDGECORE)}"
        ) from None


def edgecore_type(datatype: str) -> DataType:
    """The edgecore :class:`DataType` of protocol ``datatype``."""
    numpy_dtype(datatype)
    return _TO_EDGECORE[datatype]


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (object, str and bytes arrays are ``BYTES``)."""
    dtype = array.dtype
    if dtype.kind in "OUS":
        return "BYTES"
    try:
        return _FROM_NUMPY[dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype]
    except KeyError:
        raise BadRequest(f"numpy dtype {dtype} has no KServe v2 datatype") from None
