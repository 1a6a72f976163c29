"""Optimization profiles (min / opt / max shape per input) from a model's dynamic dimensions.

A fixed dimension is the same in all three. The leading dimension of an input, when it is dynamic,
is the batch: min 1, opt ``opt_batch_size`` (else ``max_batch_size``), max ``max_batch_size``. Any other dynamic dimension needs a range: ``dim_ranges={"sequence": [1, 128,
512]}`` by its name; an unnamed one cannot be guessed and is refused with the input and axis named.
Explicit ``profiles`` (one mapping per profile) replace the computed one; each is checked against
the model's fixed dimensions and ordered min <= opt <= max.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from edgecore.errors import ConfigurationError
from edgecore.tensor import TensorSpec

__all__ = ["Profile", "compute_profiles"]

#: input name -> (min, opt, max) shapes
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def _computed(
    specs: Sequence[TensorSpec], max_batch_size: int, opt_batch_size: int | None, ranges: Mapping[str, tuple[int, int, int]]
) -> Profile:
    batch = (1, min(opt_batch_size or max_batch_size, max_batch_size), max_batch_size)
    profile: Profile = {}
    missing = []
    for spec in specs:
        low, opt, high = [], [], []
        if spec.shape is None:
            missing.append(f"input {spec.name!r} (records no shape)")
            continue
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                triple = (dim, dim, dim)
            elif isinstance(dim, str) and dim in ranges:
                triple = ranges[dim]
            elif axis == 0:
                triple = batch
            else:
                missing.append(f"input {spec.name!r} axis {axis}" + (f" ({dim!r})" if dim else " (unnamed)"))
                continue
            low.append(triple[0])
            opt.append(triple[1])
            high.append(triple[2])
        profile[spec.name] = (tuple(low), tuple(opt), tuple(high))
    if missing:
        raise ConfigurationError(
            "tensorrt needs a range for every dynamic dimension besides the batch: "
            + ", ".join(missing)
            + "; give custom_options={'dim_ranges': {'<dim name>': [min, opt, max]}} or explicit 'profiles'"
        )
    return profile


def _explicit(specs: Sequence[TensorSpec], given: Mapping[str, Any], index: int) -> Profile:
    if not isinstance(given, Mapping):
        raise ConfigurationError(f"tensorrt profile {index} must map input names to {{min, opt, max}}, got {given!r}")
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(given) - set(by_name))
    missing = sorted(set(by_name) - set(given))
    if unknown or missing:
        raise ConfigurationError(
            f"tensorrt profile {index}: unknown inputs {unknown}, missing inputs {missing}; inputs: {sorted(by_name)}"
        )
    profile: Profile = {}
    for name, shapes in given.items():
        spec = by_name[name]
        try:
            low, opt, high = (tuple(int(d) for d in shapes[k]) for k in ("min", "opt", "max"))
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(f"tensorrt profile {index}, input {name!r}: expected {{min, opt, max}} shapes, got {shapes!r}") from None
        for label, shape in (("min", low), ("opt", opt), ("max", high)):
            if spec.rank is not None and len(shape) != spec.rank:
                raise ConfigurationError(f"tensorrt profile {index}, input {name!r}: {label} {list(shape)} has rank {len(shape)}, the input {spec.rank}")
        for axis, dim in enumerate(spec.shape or (None,) * len(low)):
            values = (low[axis], opt[axis], high[axis])
            if isinstance(dim, int) and values != (dim, dim, dim):
                raise ConfigurationError(f"tensorrt profile {index}, input {name!r}: axis {axis} is fixed at {dim}, got {list(values)}")
            if not 0 < values[0] <= values[1] <= values[2]:
                raise ConfigurationError(f"tensorrt profile {index}, input {name!r}: axis {axis} needs 0 < min <= opt <= max, got {list(values)}")
        profile[name] = (low, opt, high)
    return profile


def compute_profiles(
    specs: Sequence[TensorSpec],
    *,
    max_batch_size: int = 8,
    opt_batch_size: int | None = None,
    dim_ranges: Mapping[str, tuple[int, int, int]] | None = None,
    profiles: Sequence[Mapping[str, Any]] | None = None,
) -> list[Profile]:
    """The optimization profiles to build; ``[]`` when every input is static (none needed)."""
    if profiles:
        return [_explicit(specs, given, i) for i, given in enumerate(profiles)]
    if all(spec.is_static for spec in specs):
        return []
    return [_computed(specs, max_batch_size, opt_batch_size, dim_ranges or {})]


def profile_for(profiles: Sequence[Profile], shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Index of the first profile whose ranges hold ``shapes`` (-1 when none does)."""
    for index, profile in enumerate(profiles):
        if all(
            all(lo <= d <= hi for d, lo, hi in zip(shapes[name], low, high))
            for name, (low, _, high) in profile.items()
        ):
            return index
    return -1


def to_json(profiles: Sequence[Profile]) -> list[dict[str, dict[str, list[int]]]]:
    return [
        {name: {"min": list(lo), "opt": list(op), "max": list(hi)} for name, (lo, op, hi) in p.items()} for p in profiles
    ]
