"""numpy <-> torch without copies where the dtypes allow (bfloat16 goes through an int16 view)."""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import torch

__all__ = ["from_numpy", "to_numpy", "numpy_dtype"]

_BF16 = np.dtype(ml_dtypes.bfloat16)


def from_numpy(array: np.ndarray) -> torch.Tensor:
    """``array`` as a CPU tensor sharing its memory (a copy only for layouts torch cannot view).

    Read-only arrays are shared too: edgecore never writes into a tensor it did not create.
    """
    if array.dtype == _BF16:
        return from_numpy(array.view(np.int16)).view(torch.bfloat16)
    if array.dtype.kind in "OUS":
        raise TypeError("string tensors have no torch equivalent")
    if any(s < 0 for s in array.strides):
        array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
            return torch.from_numpy(array)
    return torch.from_numpy(array)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array sharing its memory."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_BF16)
    return tensor.numpy()


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype == torch.bfloat16:
        return _BF16
    return torch.empty((), dtype=dtype).numpy().dtype
