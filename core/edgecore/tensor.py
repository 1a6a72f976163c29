"""Data types, tensor specs, and turning what callers pass into arrays without copying.

Inputs come as numpy arrays or any object with ``__dlpack__`` (torch, cupy, jax, ...): host tensors
are wrapped without a copy through DLPack. Device-resident tensors are left to plugins that can use
them; core refuses them with a clear error instead of copying behind the caller's back.
"""

from __future__ import annotations

import enum
from typing import Any, Union

import attrs
import ml_dtypes
import numpy as np

from edgecore.errors import InvalidInputError

__all__ = ["DataType", "Dim", "TensorSpec", "as_array"]

#: A dimension: a fixed size, a symbolic name ("batch"), or None when unknown.
Dim = Union[int, str, None]


class DataType(enum.IntEnum):
    """ONNX tensor element types that numpy (with ml_dtypes) can hold; values are ONNX's."""

    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype holding this type."""
        return _TO_NUMPY[self]

    @classmethod
    def from_numpy(cls, dtype: Any) -> DataType:
        dtype = np.dtype(dtype)
        try:
            return _FROM_NUMPY[dtype]
        except KeyError:
            if dtype.kind in "OUS":
                return cls.STRING
            raise InvalidInputError(f"numpy dtype {dtype} has no ONNX equivalent") from None

    @classmethod
    def from_onnx(cls, elem_type: int) -> DataType:
        try:
            return cls(int(elem_type))
        except ValueError:
            raise InvalidInputError(f"ONNX element type {elem_type} is not supported by edgecore") from None

    @property
    def short(self) -> str:
        return self.name.lower()


_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.FLOAT: np.dtype(np.float32),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.INT8: np.dtype(np.int8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.STRING: np.dtype(object),
    DataType.BOOL: np.dtype(np.bool_),
    DataType.FLOAT16: np.dtype(np.float16),
    DataType.DOUBLE: np.dtype(np.float64),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.COMPLEX64: np.dtype(np.complex64),
    DataType.COMPLEX128: np.dtype(np.complex128),
    DataType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DataType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DataType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    DataType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DataType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    DataType.UINT4: np.dtype(ml_dtypes.uint4),
    DataType.INT4: np.dtype(ml_dtypes.int4),
    DataType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
}
_FROM_NUMPY: dict[np.dtype, DataType] = {v: k for k, v in _TO_NUMPY.items()}


def _dim(d: Any) -> Dim:
    if d is None or isinstance(d, str):
        return d or None
    d = int(d)
    return d if d >= 0 else None  # exporters write an unknown size as -1: any size, as the runtimes read it


def _shape(value: Any) -> tuple[Dim, ...] | None:
    return None if value is None else tuple(_dim(d) for d in value)  # None: no shape recorded, any rank


@attrs.frozen(kw_only=True)
class TensorSpec:
    """Name, element type and shape of a model input or output.

    ``shape`` holds ints for fixed dimensions, strings for symbolic ones ("batch") and None for
    unnamed unknown ones. A negative size (exporters write ``dim_value: -1``) and an empty name are
    read as None: any size, as ONNX Runtime and OpenVINO read them. ``shape`` itself is None when the
    model records no shape for the value: any rank.
    """

    name: str
    dtype: DataType = attrs.field(converter=DataType)
    shape: tuple[Dim, ...] | None = attrs.field(converter=_shape)

    @property
    def rank(self) -> int | None:
        """Number of dimensions; None when the model records no shape (any rank)."""
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.dtype.short}[any rank]"
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.short}[{dims}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.short, "shape": None if self.shape is None else list(self.shape)}


def as_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a numpy array, sharing memory when it can (numpy, DLPack host tensors)."""
    if type(value) is np.ndarray:
        return value
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError) as exc:
            device = getattr(value, "device", "unknown device")
            raise InvalidInputError(
                f"input {name!r}: cannot read a {type(value).__name__} on {device} as a host array "
                f"({exc}); move it to the CPU or use a backend that accepts device tensors"
            ) from exc
    try:
        return np.asarray(value)
    except Exception as exc:
        raise InvalidInputError(f"input {name!r}: cannot convert {type(value).__name__} to an array: {exc}") from exc
