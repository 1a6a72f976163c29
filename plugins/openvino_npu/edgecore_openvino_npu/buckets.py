"""Static-shape buckets: how a dynamic model runs on a device that takes static shapes only (NPU).

Each dynamic dimension of the inputs (by its symbolic name: ``batch``, ``sequence``; an unnamed one
is named ``<input>:<axis>``) gets a short ascending list of sizes. A request is padded with zeros up
to the smallest bucket that holds it in every dimension, run on the static model compiled for that
bucket, and its outputs are sliced back along every axis whose symbolic name is a bucketed one. An
unnamed dynamic output axis (``dim_param`` absent, or ``dim_value: -1`` as paddle2onnx and other
exporters write it) is matched to a bucketed dimension by shape inference when the caller gives
``infer_shapes`` (the axis follows that dimension when it changes), else axis 0 is taken as the batch.

Zero padding is exact for a batch dimension (samples do not see each other) and for a sequence
dimension whose padding an attention mask hides (a zero ``attention_mask`` masks the pad tokens). It
is *not* exact for, say, the spatial dimensions of a convolutional net: bucket only dimensions that
padding cannot change.

Pure bookkeeping; no OpenVINO here. Thread-safe (immutable after construction).
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np

from edgecore.errors import ConfigurationError, InvalidInputError
from edgecore.memory import MemoryPool
from edgecore.tensor import TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["BucketPlan", "DEFAULT_BATCH_BUCKETS", "DEFAULT_OTHER_BUCKETS"]

DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
DEFAULT_OTHER_BUCKETS = (16, 32, 64, 128, 256, 512)

Key = tuple[int, ...]
#: ``infer_shapes(static input shapes) -> output shapes`` (None for a dimension it cannot size).
ShapeInference = Callable[[list[tuple[int, ...]]], Sequence[Sequence["int | None"]]]


class BucketPlan:
    """Buckets for the dynamic dimensions of ``inputs``, and the padding/slicing they imply."""

    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        sizes: Mapping[str, Sequence[int]] | None = None,
        infer_shapes: ShapeInference | None = None,
    ) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._in_axes: list[tuple[tuple[int, int], ...]] = []  # per input: (axis, dim index)
        names: list[str] = []
        for spec in self.inputs:
            if spec.shape is None:
                raise ConfigurationError(
                    f"openvino static_buckets needs the rank of every input; input {spec.name!r} records no shape"
                )
            axes = []
            for axis, dim in enumerate(spec.shape):
                if isinstance(dim, int):
                    continue
                name = dim if isinstance(dim, str) and dim else f"{spec.name}:{axis}"
                if name not in names:
                    names.append(name)
                axes.append((axis, names.index(name)))
            self._in_axes.append(tuple(axes))
        self.dims: tuple[str, ...] = tuple(names)
        given = dict(sizes or {})
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ConfigurationError(
                f"openvino static_buckets names {unknown}, which are not dynamic dimensions of the model's "
                f"inputs; its dynamic dimensions: {list(names) or 'none (the model is static)'}"
            )
        self.sizes: tuple[tuple[int, ...], ...] = tuple(
            tuple(given[n]) if n in given else self._default(n) for n in names
        )
        traced = self._traced_axes(infer_shapes) if infer_shapes is not None else None
        self._out_axes = tuple(
            self._output_axes(spec, traced[n] if traced is not None else None) for n, spec in enumerate(self.outputs)
        )

    def _default(self, name: str) -> tuple[int, ...]:
        first_axes = {axis for axes in self._in_axes for axis, i in axes if self.dims[i] == name}
        return DEFAULT_BATCH_BUCKETS if first_axes == {0} else DEFAULT_OTHER_BUCKETS

    def _output_axes(self, spec: TensorSpec, traced: dict[int, int] | None) -> tuple[tuple[int, int], ...]:
        """``(axis, dim index)`` of the output axes to slice back (``traced``: unnamed axis -> dim index
        found by shape inference; None: no shape inference, axis 0 is the batch)."""
        found = []
        unsliced = []
        if spec.shape is None:
            unsliced.append("every axis (the output records no shape)")
        for axis, dim in enumerate(spec.shape or ()):
            if isinstance(dim, str) and dim in self.dims:
                found.append((axis, self.dims.index(dim)))
            elif dim is None and traced is not None:
                if axis in traced:
                    found.append((axis, traced[axis]))
                else:
                    unsliced.append(f"axis {axis}")
            elif dim is None and axis == 0 and self._batch_dim() is not None:
                found.append((0, self._batch_dim()))
            elif isinstance(dim, str):
                unsliced.append(dim)
        if unsliced:
            logger.warning(
                "openvino buckets: output %r has dynamic dimensions %s that follow no bucketed input dimension; "
                "they are not unpadded", spec.name, unsliced,
            )
        return tuple(found)

    def _traced_axes(self, infer_shapes: ShapeInference) -> list[dict[int, int]] | None:
        """Per output, ``{axis: dim index}`` for the unnamed axes that follow a bucketed dimension:
        the axis has that dimension's size in the smallest bucket and still has it when only that
        dimension grows to its next size. None when shape inference fails."""
        unnamed = [[a for a, d in enumerate(spec.shape or ()) if d is None] for spec in self.outputs]
        if not any(unnamed) or not self.dims:
            return [{} for _ in self.outputs]
        base = tuple(sizes[0] for sizes in self.sizes)
        try:
            base_shapes = infer_shapes(self.input_shapes(base))
            traced: list[dict[int, int]] = [{} for _ in self.outputs]
            for i, sizes in enumerate(self.sizes):
                if len(sizes) < 2:
                    continue
                grown = base[:i] + (sizes[1],) + base[i + 1 :]
                grown_shapes = infer_shapes(self.input_shapes(grown))
                for n, axes in enumerate(unnamed):
                    for axis in axes:
                        if axis in traced[n] or axis >= len(base_shapes[n]) or axis >= len(grown_shapes[n]):
                            continue
                        if base_shapes[n][axis] == base[i] and grown_shapes[n][axis] == grown[i]:
                            traced[n][axis] = i
        except Exception as exc:  # a model that does not take the bucket shapes: fall back to axis 0
            logger.warning("openvino buckets: shape inference over the buckets failed (%r); unnamed output "
                           "axis 0 is taken as the batch", exc)
            return None
        return traced

    def _batch_dim(self) -> int | None:
        for axes in self._in_axes:
            for axis, i in axes:
                if axis == 0:
                    return i
        return None

    @property
    def is_dynamic(self) -> bool:
        return bool(self.dims)

    def all_keys(self) -> list[Key]:
        """Every bucket combination (for compiling ahead of time)."""
        keys: list[Key] = [()]
        for sizes in self.sizes:
            keys = [k + (s,) for k in keys for s in sizes]
        return keys

    def key(self, arrays: Sequence[np.ndarray]) -> tuple[Key, Key]:
        """``(bucket key, actual sizes)`` for one request's inputs (in ``inputs`` order)."""
        actual = [0] * len(self.dims)
        for array, axes in zip(arrays, self._in_axes):
            for axis, i in axes:
                actual[i] = max(actual[i], array.shape[axis])
        bucket = []
        for i, size in enumerate(actual):
            sizes = self.sizes[i]
            for candidate in sizes:
                if candidate >= size:
                    bucket.append(candidate)
                    break
            else:
                raise InvalidInputError(
                    f"dimension {self.dims[i]!r} is {size}, above the largest static bucket {sizes[-1]} "
                    f"(buckets: {list(sizes)}); raise it with custom_options static_buckets={{{self.dims[i]!r}: [...]}}"
                )
        return tuple(bucket), tuple(actual)

    def input_shapes(self, key: Key) -> list[tuple[int, ...]]:
        """The static input shapes of bucket ``key``."""
        shapes = []
        for spec, axes in zip(self.inputs, self._in_axes):
            shape = list(spec.shape)
            for axis, i in axes:
                shape[axis] = key[i]
            shapes.append(tuple(int(d) for d in shape))
        return shapes

    def pad(self, arrays: Sequence[np.ndarray], key: Key, pool: MemoryPool | None) -> list[np.ndarray]:
        """Inputs zero-padded to bucket ``key`` (arrays already that shape are passed through)."""
        padded = []
        for array, shape in zip(arrays, self.input_shapes(key)):
            if array.shape == shape:
                padded.append(array)
                continue
            buffer = pool.acquire(shape, array.dtype) if pool is not None else np.empty(shape, array.dtype)
            buffer.fill(0)
            buffer[tuple(slice(0, n) for n in array.shape)] = array
            padded.append(buffer)
        return padded

    def unpad(
        self, outputs: Sequence[np.ndarray], actual: Key, key: Key, pool: MemoryPool | None = None
    ) -> list[np.ndarray]:
        """Outputs sliced back to the request's sizes, each copied into an array of its own.

        A copy, not a view: callers get contiguous arrays of exactly their size, and the padded
        buffer goes back to the pool at once instead of living as long as the caller's result.
        """
        if actual == key:
            return list(outputs)
        result = []
        for array, axes in zip(outputs, self._out_axes):
            index = [slice(None)] * array.ndim
            for axis, i in axes:
                if array.shape[axis] == key[i]:
                    index[axis] = slice(0, actual[i])
            view = array[tuple(index)]
            if view.shape == array.shape:
                result.append(array)
                continue
            copy = pool.acquire(view.shape, view.dtype) if pool is not None else np.empty(view.shape, view.dtype)
            np.copyto(copy, view)
            result.append(copy)
        return result
