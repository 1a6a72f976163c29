"""What the ``cpu_simd`` backend needs to bind a model's inputs and outputs into ONNX Runtime.

* **Output shapes.** An output can be bound to a pool buffer before the run only if its shape is a
  function of the input shapes. :func:`output_rules` reads that from the graph (after ONNX shape
  inference): every dimension a fixed size, or a symbol that names a dimension of an input. Outputs
  of unknown rank or with an unnamed or fresh symbol (NonZero, TopK with ``K`` as an input, Reshape
  to a shape input, Unique, Compress, NonMaxSuppression...) are allocated by the runtime. The
  graph's declarations can be wrong; the compiled model checks the runtime's answer and falls back.
* **Element types ORT's numpy bridge lacks.** ``onnxruntime`` converts numpy arrays of the usual
  types itself; bfloat16, the float8 types and the 4-bit types (numpy holds them through
  ``ml_dtypes``) are bound by address with their ONNX type instead. ONNX Runtime packs 4-bit
  tensors two values to a byte, ``ml_dtypes`` keeps one per byte: :func:`pack_4bit` and
  :func:`unpack_4bit` convert.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecore.tensor import DataType, TensorSpec

if TYPE_CHECKING:
    from edgecore.graph import Graph

__all__ = ["output_rules", "shape_from", "is_bridged", "is_packed", "pack_4bit", "unpack_4bit", "copy_value"]

#: numpy dtypes ``onnxruntime`` converts itself (bind_input(name, array), OrtValue.numpy()).
_BRIDGED = frozenset(
    np.dtype(t)
    for t in (
        np.float16, np.float32, np.float64, np.bool_, np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.uint16, np.uint32, np.uint64,
    )
)  # fmt: skip
_PACKED = frozenset({DataType.INT4, DataType.UINT4, DataType.FLOAT4E2M1})

def is_bridged(spec: TensorSpec) -> bool:
    """Whether onnxruntime's numpy bridge takes and gives this type (else bind by address)."""
    return spec.dtype.numpy in _BRIDGED


def is_packed(spec: TensorSpec) -> bool:
    """4-bit types: two values per byte in ONNX Runtime, one in numpy."""
    return spec.dtype in _PACKED


def output_rules(graph: Graph) -> tuple[Any, ...]:
    """One rule per output of ``graph``, in order: per dimension a fixed size or the
    ``(input index, axis)`` it takes its size from; None when the runtime must allocate it."""
    where: dict[str, tuple[int, int]] = {}
    for index, spec in enumerate(graph.inputs):
        for axis, dim in enumerate(spec.shape or ()):
            if isinstance(dim, str):
                where.setdefault(dim, (index, axis))
    return tuple(None if is_packed(spec) else _rule(spec.shape, where) for spec in graph.outputs)


def _rule(shape: tuple | None, where: dict[str, tuple[int, int]]) -> Any:
    """Per dimension of an output spec's ``shape``: its fixed size, or where an input gives it; None
    when the data decides (unknown rank, an unnamed dim, a symbol no input has)."""
    if shape is None:
        return None
    dims: list[int | tuple[int, int]] = []
    for dim in shape:
        if isinstance(dim, int):
            dims.append(dim)
        elif dim is not None and dim in where:
            dims.append(where[dim])
        else:
            return None
    return tuple(dims)


def shape_from(rule: tuple, shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """The output shape ``rule`` gives for these input shapes."""
    return tuple([d if type(d) is int else shapes[d[0]][d[1]] for d in rule])


def pack_4bit(array: np.ndarray) -> np.ndarray:
    """A 4-bit ``ml_dtypes`` array as ONNX Runtime holds it: two values a byte, low nibble first."""
    codes = np.ascontiguousarray(array).reshape(-1).view(np.uint8) & 0xF
    if codes.size % 2:
        codes = np.append(codes, np.uint8(0))
    return codes[0::2] | (codes[1::2] << 4)


def unpack_4bit(packed: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """ONNX Runtime's packed 4-bit bytes as an ``ml_dtypes`` array of ``shape``."""
    count = int(np.prod(shape, dtype=np.int64))
    codes = np.empty(2 * packed.size, np.uint8)
    codes[0::2] = packed & 0xF
    codes[1::2] = packed >> 4
    return codes[:count].view(dtype).reshape(shape)


def copy_value(value: Any, spec: TensorSpec) -> np.ndarray:
    """A runtime-allocated output of a type the numpy bridge lacks, copied out of its OrtValue."""
    shape = tuple(value.shape())
    nbytes = value.tensor_size_in_bytes()
    raw = np.empty(nbytes, np.uint8)
    if nbytes:
        ctypes.memmove(raw.ctypes.data, value.data_ptr(), nbytes)
    if is_packed(spec):
        return unpack_4bit(raw, shape, spec.dtype.numpy)
    return raw.view(spec.dtype.numpy).reshape(shape)
