"""Checking a request's feeds and ``out`` buffers against a model's specs, with errors that name
what is wrong.

The rules are the runtimes' own: a fixed dimension must match; a symbolic, unnamed or negative
(``-1``) one takes any size. Inputs that share a dimension name are *not* required to agree, as
ONNX Runtime does not require it (the model itself fails if they must and do not).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edgecore.errors import InvalidInputError
from edgecore.tensor import TensorSpec, as_array

__all__ = ["FeedChecker", "check_out", "fill_out", "random_feeds"]

_SIGNATURES = 256  # distinct valid input signatures remembered


class FeedChecker:
    """Validates feeds for one model; built once, called on every request (hot path)."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = tuple(specs)
        self._plan = tuple(
            (s.name, s.dtype.numpy, s.rank, tuple((i, d) for i, d in enumerate(s.shape or ()) if isinstance(d, int)))
            for s in self.specs
        )
        self._names = frozenset(s.name for s in self.specs)
        self._order = tuple(s.name for s in self.specs)
        self._strings = tuple(s.name for s in self.specs if s.dtype.numpy.kind == "O")
        self._valid: set[tuple] = set()  # (dtype, shape) signatures that passed the full check

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``feeds`` as numpy arrays, or :class:`InvalidInputError` naming the first problem."""
        if not isinstance(feeds, Mapping):
            raise InvalidInputError(
                f"feeds must be a mapping of input name to array, got {type(feeds).__name__}; "
                f"inputs: {self._expected()}"
            )
        if len(feeds) != len(self._plan) or not self._names.issuperset(feeds):
            self._names_error(feeds)
        arrays = {}
        for name in self._order:
            value = feeds[name]
            arrays[name] = value if type(value) is np.ndarray else as_array(value, name)
        if self._strings:
            arrays = self._as_objects(arrays)
        signature = tuple([(a.dtype, a.shape) for a in arrays.values()])
        if signature not in self._valid:  # the full check runs once per distinct signature
            self._check(arrays)
            if len(self._valid) >= _SIGNATURES:
                self._valid.clear()
            self._valid.add(signature)
        return arrays

    def _check(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name, dtype, rank, fixed in self._plan:
            array = arrays[name]
            if array.dtype != dtype and not (dtype.kind == "O" and array.dtype.kind in "OUS"):
                raise InvalidInputError(
                    f"input {name!r}: expected dtype {dtype}, got {array.dtype} (cast with .astype(np.{dtype}))"
                )
            shape = array.shape
            if rank is not None and len(shape) != rank:  # None: the model records no shape, any rank
                raise InvalidInputError(
                    f"input {name!r}: expected rank {rank} {self._describe(name)}, got shape {list(shape)}"
                )
            for axis, size in fixed:
                if shape[axis] != size:
                    raise InvalidInputError(
                        f"input {name!r}: dimension {axis} must be {size} {self._describe(name)}, "
                        f"got shape {list(shape)}"
                    )

    def _names_error(self, feeds: Mapping[str, Any]) -> None:
        missing = [n for n in (s.name for s in self.specs) if n not in feeds]
        extra = [n for n in feeds if n not in self._names]
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise InvalidInputError(f"{' and '.join(parts)}; the model takes {self._expected()}")

    def _describe(self, name: str) -> str:
        return next(f"({s.describe()})" for s in self.specs if s.name == name)

    def _expected(self) -> str:
        return ", ".join(f"{s.name}: {s.describe()}" for s in self.specs)

    def _as_objects(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """String inputs given as numpy ``str``/``bytes`` arrays become the ``object`` arrays of
        Python ``str`` that the runtimes take (ONNX strings are UTF-8)."""
        for name in self._strings:
            array = arrays[name]
            if array.dtype.kind == "U":
                arrays[name] = array.astype(object)
            elif array.dtype.kind == "S":
                try:
                    arrays[name] = np.char.decode(array, "utf-8").astype(object)
                except UnicodeDecodeError as exc:
                    raise InvalidInputError(f"input {name!r}: string tensors hold UTF-8 text: {exc}") from exc
        return arrays


def check_out(out: Mapping[str, Any], specs: Sequence[TensorSpec]) -> Mapping[str, np.ndarray]:
    """``out`` buffers checked against the output ``specs``: known names, numpy arrays of the
    output's dtype, writeable and C-contiguous, of its rank and fixed dimensions. Returns ``out``."""
    if not isinstance(out, Mapping):
        raise InvalidInputError(f"out must be a mapping of output name to array, got {type(out).__name__}")
    by_name = {spec.name: spec for spec in specs}
    unknown = [name for name in out if name not in by_name]
    if unknown:
        raise InvalidInputError(f"out names {unknown} are not outputs; outputs: {list(by_name)}")
    for name, buffer in out.items():
        spec = by_name[name]
        dtype = spec.dtype.numpy
        if dtype.kind == "O":
            raise InvalidInputError(f"out buffer {name!r}: string outputs cannot be written into a buffer")
        if type(buffer) is not np.ndarray or buffer.dtype != dtype:
            got = buffer.dtype if isinstance(buffer, np.ndarray) else type(buffer).__name__
            raise InvalidInputError(f"out buffer {name!r} must be a numpy array of dtype {dtype}, got {got}")
        if not buffer.flags.c_contiguous or not buffer.flags.writeable:
            raise InvalidInputError(
                f"out buffer {name!r} must be writeable and C-contiguous, got "
                f"contiguous={buffer.flags.c_contiguous}, writeable={buffer.flags.writeable}"
            )
        if spec.rank and (
            buffer.ndim != spec.rank
            or any(isinstance(d, int) and d != size for d, size in zip(spec.shape, buffer.shape))
        ):
            raise InvalidInputError(
                f"out buffer {name!r}: shape {list(buffer.shape)} does not fit output {spec.describe()}"
            )
    return out


def fill_out(result: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Copy ``result`` into the (checked) ``out`` buffers, for backends whose runtime cannot write
    into caller memory; returns the outputs with the buffers in place of the copied arrays."""
    if not out:
        return result
    for name, buffer in out.items():
        produced = result[name]
        if produced.shape != buffer.shape:
            raise InvalidInputError(
                f"out buffer {name!r} has shape {list(buffer.shape)}, but the output is {list(produced.shape)}"
            )
        np.copyto(buffer, produced)
    return {name: out.get(name, array) for name, array in result.items()}


def random_feeds(
    specs: Sequence[TensorSpec],
    *,
    batch: int = 1,
    seed: int = 0,
    sequence: int = 16,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs for ``specs``: the one generator the CLI, the benchmarks and the optimizer use.

    Shapes: fixed dimensions as they are; the first symbolic dimension takes ``batch``, the others
    ``sequence``. Values, by dtype and input name (case-insensitive):

    * floating point (float16/32/64, bfloat16, float8): standard normal;
    * integers: all ones for names with ``mask`` (every token attended), zeros for names with
      ``type`` or ``segment`` (token types), else uniform in [0, 100) (valid token ids for any
      vocabulary of 100 or more);
    * bool: all True for names with ``mask``, else uniform True/False.

    ``rng`` (default ``numpy.random.default_rng(seed)``) lets a caller draw several feeds from one
    stream. Raises :class:`InvalidInputError` for inputs it cannot make up (strings): pass real ones.
    """
    rng = np.random.default_rng(seed) if rng is None else rng
    feeds = {}
    for spec in specs:
        if spec.shape is None:
            raise InvalidInputError(f"input {spec.name!r} records no shape, so none can be made up; give real inputs")
        shape = [d if isinstance(d, int) else (batch if i == 0 else sequence) for i, d in enumerate(spec.shape)]
        dtype = spec.dtype.numpy
        name = spec.name.lower()
        if dtype.kind == "f" or "float" in dtype.name:
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            if "mask" in name:
                feeds[spec.name] = np.ones(shape, dtype)
            elif "type" in name or "segment" in name:
                feeds[spec.name] = np.zeros(shape, dtype)
            else:
                feeds[spec.name] = rng.integers(0, 100, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = np.ones(shape, bool) if "mask" in name else rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InvalidInputError(
                f"cannot make up random data for input {spec.name!r} of type {spec.dtype.short}; give real inputs"
            )
    return feeds
