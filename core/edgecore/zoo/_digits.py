"""The shipped digits CNN and its held-out test split (trained by ``tools/train_digits.py``).

A small CNN trained on scikit-learn's bundled 8x8 digits: input ``input`` ``[batch, 1, 8, 8]``
float32 (pixels / 16, in [0, 1]), output ``logits`` ``[batch, 10]``. Its test split gives optimization
passes a true top-1 accuracy to report, not only output agreement.
"""

from __future__ import annotations

import io
from importlib import resources

import numpy as np
import onnx

__all__ = ["build_digits_cnn", "digits_test_split"]

MODEL_FILE = "digits_cnn.onnx"
SPLIT_FILE = "digits_test.npz"


def _data(name: str) -> bytes:
    return resources.files("edgecore.zoo").joinpath("data", name).read_bytes()


def build_digits_cnn(*, seed: int = 0) -> onnx.ModelProto:
    """Load the trained digits CNN. Its weights are trained, so ``seed`` changes nothing."""
    del seed
    return onnx.load_model_from_string(_data(MODEL_FILE))


#: A packaged file loads as fast as a cached copy would; :func:`edgecore.zoo.build` never caches it.
build_digits_cnn.cacheable = False  # type: ignore[attr-defined]


def digits_test_split() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split: images float32 ``[N, 1, 8, 8]`` scaled as in training, labels int64 ``[N]``."""
    with np.load(io.BytesIO(_data(SPLIT_FILE))) as data:
        return data["images"].astype(np.float32, copy=False), data["labels"].astype(np.int64, copy=False)
