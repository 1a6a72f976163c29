"""Checking a request's feeds against a model's input specs, with errors that name what is wrong."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edgecore.errors import InvalidInputError
from edgecore.tensor import TensorSpec, as_array

__all__ = ["FeedChecker"]

_SIGNATURES = 256  # distinct valid input signatures remembered


class FeedChecker:
    """Validates feeds for one model; built once, called on every request (hot path)."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = tuple(specs)
        self._plan = tuple(
            (s.name, s.dtype.numpy, len(s.shape), tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int)))
            for s in self.specs
        )
        self._symbols = tuple(
            (s.name, i, d) for s in self.specs for i, d in enumerate(s.shape) if isinstance(d, str)
        )
        self._names = frozenset(s.name for s in self.specs)
        self._order = tuple(s.name for s in self.specs)
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
            if array.dtype != dtype:
                raise InvalidInputError(
                    f"input {name!r}: expected dtype {dtype}, got {array.dtype} (cast with .astype(np.{dtype}))"
                )
            shape = array.shape
            if len(shape) != rank:
                raise InvalidInputError(
                    f"input {name!r}: expected rank {rank} {self._describe(name)}, got shape {list(shape)}"
                )
            for axis, size in fixed:
                if shape[axis] != size:
                    raise InvalidInputError(
                        f"input {name!r}: dimension {axis} must be {size} {self._describe(name)}, "
                        f"got shape {list(shape)}"
                    )
        if self._symbols:
            self._check_symbols(arrays)

    def _check_symbols(self, arrays: Mapping[str, np.ndarray]) -> None:
        seen: dict[str, tuple[str, int]] = {}
        for name, axis, symbol in self._symbols:
            size = arrays[name].shape[axis]
            if symbol in seen and seen[symbol][1] != size:
                other, other_size = seen[symbol]
                raise InvalidInputError(
                    f"input {name!r}: dimension {axis} ({symbol!r}) is {size}, but {other!r} has "
                    f"{symbol!r} = {other_size}; inputs sharing a dimension name must agree"
                )
            seen.setdefault(symbol, (name, size))

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
